"""Fixtures of the remote-inference tests: the committed reference bundle served in-process (a
thread running the websockets server) or as `legato serve` in a subprocess, both on 127.0.0.1
with a port the kernel picks."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "models" / "legato-x86-cpu"
LEGATO = [sys.executable, "-m", "legato.cli"]


def make_service(**kw: Any) -> Any:
    from edge.remote.service import PolicyService
    from edge.runtime import load

    man, prof, den = load(str(BUNDLE), "x86-cpu")
    return PolicyService(man, prof, den, **kw)


class ServerThread:
    """edge.remote.server.serve in a thread of this process (port 0: the kernel's choice)."""

    def __init__(self, service: Any, max_sessions: int = 64) -> None:
        from edge.remote.server import serve

        self.service = service
        self.port = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()

        def ready(host: str, port: int) -> None:
            self.port = port
            self._ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve(service, "127.0.0.1", 0, self._stop, ready, max_sessions))

        self.thread = threading.Thread(target=run, name="test-server", daemon=True)
        self.thread.start()
        assert self._ready.wait(10), "server did not start"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)
        self.service.close()


@pytest.fixture
def server():
    s = ServerThread(make_service())
    yield s
    s.stop()


def start_serve(
    *args: str, port: int = 0, env: dict[str, str] | None = None, timeout_s: float = 60.0
) -> tuple[subprocess.Popen, int]:
    """`legato serve --bundle BUNDLE ARGS --port PORT` in its own process group; returns it and the
    port it listens on (read from its ready line)."""
    cmd = [*LEGATO, "serve", "--bundle", str(BUNDLE), "--port", str(port), *args]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    assert proc.stderr is not None
    t_end = time.monotonic() + timeout_s
    lines = []
    while time.monotonic() < t_end:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r" on ws://[^:]+:(\d+) ", line)
        if m:
            threading.Thread(target=_drain, args=(proc.stderr,), daemon=True).start()
            return proc, int(m.group(1))
    proc.kill()
    raise AssertionError("legato serve did not start:\n" + "".join(lines))


def _drain(f: Any) -> None:
    for _ in f:
        pass


def stop(proc: subprocess.Popen, sig: int | None = None) -> None:
    """End a server started by start_serve (SIGINT unless told), by its pid."""
    import signal

    if proc.poll() is None:
        proc.send_signal(sig if sig is not None else signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

"""Helpers of the remote-inference tests (imported by name: every test folder has a conftest): the
committed reference bundle served in-process (a thread running the websockets server) or as
`legato serve` in a subprocess, both on 127.0.0.1 with a port the kernel picks; a recorded
`legato run --sim --remote`."""

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

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
# the committed reference bundle; $LEGATO_TEST_BUNDLE where the tests run from a copy (CI's robot install)
BUNDLE = Path(os.environ.get("LEGATO_TEST_BUNDLE") or ROOT / "models" / "legato-x86-cpu")
LEGATO = [sys.executable, "-m", "legato.cli"]


def make_service(**kw: Any) -> Any:
    from edge.assembly import load
    from edge.remote.service import PolicyService

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


def start_serve(
    *args: str,
    port: int = 0,
    env: dict[str, str] | None = None,
    timeout_s: float = 60.0,
    prefix: tuple[str, ...] = (),
    bundle: Path = BUNDLE,
) -> tuple[subprocess.Popen, int]:
    """`legato serve --bundle BUNDLE ARGS --port PORT` in its own process group (behind ``prefix``,
    e.g. ``ip netns exec NS``); returns it and the port it listens on (read from its ready line)."""
    cmd = [*prefix, *LEGATO, "serve", "--bundle", str(bundle), "--port", str(port), *args]
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


class RemoteRun:
    """`legato run --sim --remote URL ARGS` assembled by the CLI's own code (edge.cli._session), in a
    thread, with every setpoint sent to the bus recorded (tick order) so a test can look for jumps."""

    def __init__(self, url: str, *args: str, episodes: int = 2) -> None:
        from edge.cli import _session
        from legato.cli import build_parser

        self.args = build_parser().parse_args(["run", "--remote", url, "--sim", "--quiet", *args])
        self.session = _session(self.args, episodes)
        self.rig = self.session.rig
        self.episodes = episodes
        self.setpoints: list[Any] = []
        plant = self.session.plant
        self.episode_of: list[int] = []
        # the setpoints the clock sent, in tick order: the tick ring carries each one after
        # TICK_COLS (the clock and the bus run in the clock process, edge/clockproc.py); a drain
        # runs every 50 ms inside an episode and once after it, so the plant's episode is theirs
        from edge.loop import TICK_COLS

        records = self.session.records
        drain = records.drain

        def recording(loop: Any) -> Any:
            rows = drain(loop)
            index = plant.result.index
            for sp in rows[:, len(TICK_COLS) :]:
                self.setpoints.append(sp.astype(np.float32))
                self.episode_of.append(index)
            return rows

        records.drain = recording
        self.summary: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from edge.cli import _finish

        try:
            self.session.run_sim(self.episodes, None)
        except BaseException as e:  # reported by join()
            self.error = e
        finally:
            self.rig.close()
            self.session.den.close()
        self.summary = _finish(self.session)

    def start(self) -> RemoteRun:
        self.thread.start()
        return self

    def join(self, timeout_s: float = 120.0) -> dict[str, Any]:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the run did not finish"
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary

    def args_max_step(self) -> float:
        """The loop's per-tick step limit (rad) this run was configured with."""
        # as the tick applies it: float32 setpoints, clamped to last +- max_step in float32 (the
        # difference of two such values may exceed float32(max_step) by rounding)
        return float(np.float32(max(self.session.cfg.max_step))) * (1 + 1e-6)

    def max_step(self) -> float:
        """Largest change of any joint's setpoint between two consecutive sends of one episode (rad;
        the start posture each episode begins with is a reset, not a step)."""
        import numpy as np

        sp, ep = np.asarray(self.setpoints), np.asarray(self.episode_of)
        if len(sp) < 2:
            return 0.0
        same = ep[1:] == ep[:-1]
        return float(np.abs(np.diff(sp, axis=0))[same].max())

"""Fixtures for the firmware bridge tests: an emulated controller on a real pty, a bridge that
talks to it through pyserial, a frame recorder, and a check that no thread or fd outlives a test."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from fw_helpers import WAIT_S, Host, make_host, wait_for  # noqa: F401 (re-exported for fixtures)

from firmware_bridge.emulator import EmulatedController, EmulatorConfig


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fail if a test leaves a thread running or a file descriptor open."""
    threads = set(threading.enumerate())
    fds = _fds()
    yield
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:  # a joined thread may take a moment to leave enumerate()
        extra = [t for t in threading.enumerate() if t not in threads and t.is_alive()]
        if not extra:
            break
        extra[0].join(0.1)
    assert not extra, f"threads left running: {extra}"
    leaked = _fds() - fds
    # an fd number may be reused by the interpreter (e.g. a cache file); only /dev ones matter here
    leaked_dev = {fd for fd in leaked if os.path.realpath(f"/proc/self/fd/{fd}").startswith("/dev/")}
    assert not leaked_dev, f"file descriptors left open: {leaked_dev}"


@pytest.fixture
def emulator(no_leaks: None) -> Iterator[Callable[..., EmulatedController]]:
    """Factory: started emulated controllers, all closed (and joined) after the test."""
    made: list[EmulatedController] = []

    def make(n: int = 3, *, link_path: str | None = None, wrap=None, **kw: object) -> EmulatedController:
        cfg = EmulatorConfig(n, record_applied=True, **kw)  # type: ignore[arg-type]
        ctrl = EmulatedController(cfg, link_path=link_path, wrap=wrap)
        made.append(ctrl)
        return ctrl.start()

    try:
        yield make
    finally:
        for c in made:
            c.close()


@pytest.fixture
def host(emulator: Callable[..., EmulatedController]) -> Iterator[Callable[..., Host]]:
    """Factory: bridges, all closed after the test (before the emulators)."""
    made: list[Host] = []

    def make(port: str, n: int, start: bool = True, **kw: object) -> Host:
        h = make_host(port, n, **kw)  # type: ignore[arg-type]
        made.append(h)
        if start:
            h.bridge.start(timeout_s=WAIT_S)
        return h

    try:
        yield make
    finally:
        for h in made:
            h.bridge.close()

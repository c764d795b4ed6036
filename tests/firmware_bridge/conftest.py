"""Fixtures for the firmware bridge tests: an emulated controller on a real pty, a bridge that
talks to it through pyserial, a frame recorder, and a check that no thread or fd outlives a test."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from firmware_bridge.bridge import FirmwareBridge
from firmware_bridge.config import BridgeConfig, JointLimits, LinkConfig
from firmware_bridge.emulator import EmulatedController, EmulatorConfig
from firmware_bridge.errors import ProtocolError
from firmware_bridge.faults import FaultPlan, FaultyTransport
from firmware_bridge.messages import Setpoint, decode
from firmware_bridge.transport import SerialTransport, Transport

# generous: another process trains a network on the same two cores
WAIT_S = 10.0


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


class Recorder:
    """Transport layer between the link and the wire that remembers every setpoint it writes
    (before any fault is injected below it): seq -> positions."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.frames_written = 0
        self.setpoints: dict[int, tuple[float, ...]] = {}

    def write(self, data: bytes) -> None:
        try:
            frame = decode(data[:-1])
        except ProtocolError as exc:  # the link must only ever write valid frames
            raise AssertionError(f"link wrote an invalid frame: {exc}") from exc
        if isinstance(frame.msg, Setpoint):
            self.setpoints[frame.seq] = frame.msg.positions
        self.frames_written += 1
        self.inner.write(data)

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        return self.inner.read(max_bytes, timeout_s)

    def cancel_read(self) -> None:
        self.inner.cancel_read()

    def close(self) -> None:
        self.inner.close()


class Host:
    """What a test holds on the host side: the bridge, and the fault/recording layers under it."""

    def __init__(self, bridge: FirmwareBridge) -> None:
        self.bridge = bridge
        self.faulty: FaultyTransport | None = None
        self.recorder: Recorder | None = None


def make_host(
    port: str,
    n: int,
    *,
    plan: FaultPlan | None = None,
    seed: int = 1,
    **bridge_kw: object,
) -> Host:
    """A bridge on ``port`` whose transport is pyserial -> FaultyTransport -> Recorder -> link."""
    cfg = BridgeConfig(JointLimits.uniform(n), **bridge_kw)  # type: ignore[arg-type]
    link = LinkConfig(port, ack_timeout_s=0.2, reconnect_min_s=0.01, reconnect_max_s=0.1)
    holder: list[Host] = []

    def open_transport() -> Transport:
        faulty = FaultyTransport(SerialTransport(port, write_timeout_s=1.0), plan, seed=seed)
        rec = Recorder(faulty)
        if holder:
            holder[0].faulty, holder[0].recorder = faulty, rec
        return rec

    host = Host(FirmwareBridge(cfg, link, open_transport=open_transport))
    holder.append(host)
    return host


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


def wait_for(predicate: Callable[[], bool], timeout_s: float = WAIT_S, poll_s: float = 0.005) -> bool:
    """Poll a host-side predicate (the bridge has no condition to wait on for every counter)."""
    deadline = time.monotonic() + timeout_s
    ev = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            return False
        ev.wait(poll_s)
    return True


def targets(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """(k, n) random in-limit targets."""
    return rng.uniform(-1.0, 1.0, size=(k, n)).astype(np.float32)

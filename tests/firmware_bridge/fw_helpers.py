"""Helpers shared by the firmware-bridge tests (not fixtures: those stay in conftest.py).

A module with its own name: every test folder has a conftest.py, and `from conftest import ...`
resolves to whichever one Python imported first."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from firmware_bridge.bridge import FirmwareBridge
from firmware_bridge.config import BridgeConfig, JointLimits, LinkConfig
from firmware_bridge.errors import ProtocolError
from firmware_bridge.faults import FaultPlan, FaultyTransport
from firmware_bridge.messages import Setpoint, decode
from firmware_bridge.transport import SerialTransport, Transport

# generous: another process trains a network on the same two cores
WAIT_S = 10.0


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

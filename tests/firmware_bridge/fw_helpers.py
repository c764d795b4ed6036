"""Helpers shared by the firmware-bridge tests (not fixtures: those stay in conftest.py).

A module with its own name: every test folder has a conftest.py, and `from conftest import ...`
resolves to whichever one Python imported first."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from firmware_bridge.bridge import FirmwareBridge
from firmware_bridge.config import BridgeConfig, JointLimits, LinkConfig
from firmware_bridge.errors import ProtocolError
from firmware_bridge.faults import FaultPlan, FaultyTransport
from firmware_bridge.messages import Setpoint, Torque, decode
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
        self.torque: list[bool] = []  # every TORQUE frame written, in order: its enable flag

    def write(self, data: bytes) -> None:
        try:
            frame = decode(data[:-1])
        except ProtocolError as exc:  # the link must only ever write valid frames
            raise AssertionError(f"link wrote an invalid frame: {exc}") from exc
        if isinstance(frame.msg, Setpoint):
            self.setpoints[frame.seq] = frame.msg.positions
        elif isinstance(frame.msg, Torque):
            self.torque.append(frame.msg.enable)
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


CORES = ("fwcore", "micropython")  # the two reference firmware cores every rule test runs on


class CoreRig:
    """One reference firmware core (``kind`` in CORES) at 1 kHz on a settable clock, fed frames
    as the UART would (micropython: encoded bytes through its own parser; fwcore: through the
    emulator's decoder), replies and tick output decoded. The same controls and views for both
    cores, so every rule test runs on both."""

    TICK_US = 1000

    def __init__(self, kind: str, n: int = 2, watchdog_ms: int = 50, telemetry_hz: int = 100) -> None:
        from firmware_bridge.fwcore import FirmwareCore
        from firmware_bridge.micropython import legato_fw as fw

        self.kind, self.n, self.now, self.seq = kind, n, 0, 0
        self.hold_at: int | None = None  # controller time of the first tick that held (WATCHDOG)
        self.fed_at: int | None = None  # controller time of the last SETPOINT/HEARTBEAT sent
        if kind == "fwcore":
            self.core: Any = FirmwareCore(n, 1000, lambda: self.now, watchdog_ms=watchdog_ms,
                                          telemetry_hz=telemetry_hz)  # fmt: skip
        elif kind == "micropython":
            self.core = fw.Controller(n, 1000, lambda: self.now, fw.SimMotor(n), watchdog_ms=watchdog_ms,
                                      telemetry_hz=telemetry_hz)  # fmt: skip
        else:
            raise ValueError(f"unknown core {kind!r}; allowed: {CORES}")

    # ---- feeding ---------------------------------------------------------------------------
    def raw(self, data: bytes) -> list:
        """Feed wire bytes (whole frames) as the UART would; returns the decoded replies."""
        if self.kind == "fwcore":
            from firmware_bridge.errors import ProtocolError

            out: list = []
            for packet in data.split(b"\x00")[:-1]:
                if not packet:
                    continue
                try:
                    f = decode(packet)
                except ProtocolError as exc:
                    out += self.core.undecodable(exc, self.now)
                    continue
                out += self.core.handle(f, self.now)
            return out
        return [decode(p[:-1]).msg for p in self.core.feed(data, self.now)]

    def send(self, msg: Any, seq: int | None = None) -> list:
        from firmware_bridge.messages import Heartbeat, encode

        if seq is None:
            seq, self.seq = self.seq, (self.seq + 1) & 0xFFFF
        if isinstance(msg, (Setpoint, Heartbeat)):
            self.fed_at = self.now
        return self.raw(encode(msg, seq, self.now))

    def ticks(self, k: int) -> list:
        from firmware_bridge.messages import Fault

        out: list = []
        for _ in range(k):
            self.now += self.TICK_US
            got = self.core.tick(self.now)
            out += got if self.kind == "fwcore" else [decode(p[:-1]).msg for p in got]
            if self.hold_at is None and self.faults & Fault.WATCHDOG:
                self.hold_at = self.now
        return out

    def ready(self) -> None:
        """HELLO, limits +-1 rad, 10 rad/s, 0.5 rad per tick, torque on."""
        from firmware_bridge.messages import Ack, ConfigureLimits, Hello

        n = self.n
        self.send(Hello())
        limits = ConfigureLimits((-1.0,) * n, (1.0,) * n, (10.0,) * n, (0.5,) * n)
        assert isinstance(self.send(limits)[0], Ack)
        assert isinstance(self.send(Torque(True))[0], Ack)

    # ---- views (the same names on both cores) ----------------------------------------------
    def telemetry(self) -> Any:
        if self.kind == "fwcore":
            return self.core.telemetry()
        from firmware_bridge.micropython import legato_fw as fw

        return decode(self.core.frame(fw.TELEMETRY, self.core.telemetry())[:-1]).msg

    @property
    def faults(self) -> int:
        return int(self.core.faults)

    @property
    def holding(self) -> bool:
        from firmware_bridge.messages import State

        return bool(self.telemetry().state & State.HOLDING)

    @property
    def last_applied_seq(self) -> int:
        return int(self.telemetry().last_applied_seq)

    @property
    def q(self) -> np.ndarray:
        return np.array(self.core.motor.q, dtype=float)

    def set_q(self, values: Any) -> None:
        for j, v in enumerate(values):
            self.core.motor.q[j] = v

    @property
    def target(self) -> np.ndarray:
        return np.array(self.core.target, dtype=float)

    @property
    def commanded(self) -> np.ndarray:
        return np.array(self.core.commanded, dtype=float)

    @property
    def hold_pos(self) -> np.ndarray:
        return np.array(self.core.hold_pos if self.kind == "fwcore" else self.core.hold, dtype=float)


def patient_port(sdk: Any, path: str, timeout_ms: float = 2000.0) -> Any:
    """A vendor SDK's PortHandler (scservo_sdk or dynamixel_sdk) on ``path`` that waits up to
    ``timeout_ms`` for a reply instead of its fixed LATENCY_TIMER-based ~34 ms, which an emulator
    on a starved machine misses: these tests pin that the SDK and our emulated servos understand
    each other, not how fast the emulator answers (that is bench/bench_servo_bus.py's)."""

    class Patient(sdk.PortHandler):  # type: ignore[misc, name-defined]
        def setPacketTimeout(self, packet_length: int) -> None:  # noqa: N802 (the SDK's name)
            super().setPacketTimeout(packet_length)
            self.packet_timeout = max(self.packet_timeout, timeout_ms)

        def setPacketTimeoutMillis(self, msec: float) -> None:  # noqa: N802
            super().setPacketTimeoutMillis(max(msec, timeout_ms))

    return Patient(path)


def sdk_retry(call: Callable[[], Any], success: int, attempts: int = 20) -> Any:
    """A vendor SDK call, repeated while it reports a failure. The SDKs wait a fixed few
    milliseconds for a reply, which an emulator on a loaded machine can miss; what the tests pin
    is that our emulated servos answer them correctly, not how fast. Returns the last result."""
    out: Any = None
    for _ in range(attempts):
        out = call()
        code = out if isinstance(out, int) else (out[1] if len(out) == 3 else out[0])
        if code == success:
            return out
    return out


# The servo buses' setup_timeout_s in tests against emulators: the reply wait of each request
# while starting (ping, calibration, torque). Generous: an emulator starved by other processes on
# the same cores answers late, and what these tests pin is the behaviour, not how fast it answers
# (a missing servo's wait is pinned on a fake clock in test_servo_bus.py).
SETUP_S = 2.0


class Clock:
    """A settable monotonic clock (seconds)."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class EmuPort:
    """A Feetech servo bus port that answers through an (unstarted) emulator's handlers, at once;
    ``plugged[0] = False`` makes the next call fail as a pulled adapter does. With ``clock``, a
    read that finds nothing waits (moves the clock) to its deadline, as a real port's does."""

    def __init__(self, emu: Any, plugged: list[bool], clock: Clock | None = None) -> None:
        from firmware_bridge import feetech as ft

        self.emu, self.plugged, self.pending, self.clock = emu, plugged, b"", clock
        self.parser = ft.Parser()
        self.writes: list[tuple[float, bytes]] = []  # (clock time, bytes) of every write

    def _check(self) -> None:
        from firmware_bridge.errors import TransportError

        if not self.plugged[0]:
            raise TransportError("read failed: [Errno 5] Input/output error")

    def write(self, data: bytes, deadline: float) -> None:
        self._check()
        if self.clock is not None:
            self.writes.append((self.clock.t, data))
        for p in self.parser.feed(data):
            self.pending += b"".join(self.emu._handle(p, 0.0))

    def read(self, deadline: float) -> bytes:
        self._check()
        d, self.pending = self.pending, b""
        if not d and self.clock is not None:
            self.clock.t = max(self.clock.t, deadline)
        return d

    def discard_input(self) -> int:
        self._check()
        self.pending = b""
        return 0

    def close(self) -> None:
        pass

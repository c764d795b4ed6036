"""The points where an independent firmware, written from docs/protocol.md alone, disagreed with the
emulator and the spec (issue 12, part 5). Each decision is pinned here against BOTH reference
cores, fwcore.py (numpy, run by the emulator) and micropython/legato_fw.py, fed the same frames."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from firmware_bridge.framing import frame
from firmware_bridge.fwcore import FirmwareCore
from firmware_bridge.messages import (
    Ack,
    Capabilities,
    ClearFaults,
    ConfigureLimits,
    Fault,
    Frame,
    Hello,
    Nack,
    NackReason,
    Setpoint,
    TelemetryMsg,
    Torque,
    decode,
    encode,
)
from firmware_bridge.micropython import legato_fw as fw

TICK_US = 1000


class Rig:
    """One core at 1 kHz with a settable clock, driven by frames; replies come back decoded."""

    def __init__(self, kind: str, n: int = 2) -> None:
        self.kind, self.n, self.now, self.seq = kind, n, 0, 0
        if kind == "fwcore":
            self.core = FirmwareCore(n, 1000, lambda: self.now, watchdog_ms=50)
        else:
            self.core = fw.Controller(n, 1000, lambda: self.now, fw.SimMotor(n), watchdog_ms=50)

    def raw(self, data: bytes) -> list:
        """Feed wire bytes (framed) as the UART would; fwcore goes through the emulator's decoder."""
        if self.kind == "fwcore":
            from firmware_bridge.errors import ProtocolError

            try:
                f = decode(data[:-1])
            except ProtocolError:
                self.core.count_bad()
                return []
            return self.core.handle(f, self.now)
        return [decode(p[:-1]).msg for p in self.core.feed(data, self.now)]

    def send(self, msg, seq: int | None = None) -> list:
        if seq is None:
            seq, self.seq = self.seq, (self.seq + 1) & 0xFFFF
        if self.kind == "fwcore":
            return self.core.handle(Frame(seq, self.now, msg), self.now)
        return self.raw(encode(msg, seq, self.now))

    def ticks(self, k: int) -> list:
        out = []
        for _ in range(k):
            self.now += TICK_US
            got = self.core.tick(self.now)
            out += got if self.kind == "fwcore" else [decode(p[:-1]).msg for p in got]
        return out

    @property
    def q(self) -> np.ndarray:
        return np.array(self.core.motor.q, dtype=float)

    def set_q(self, values) -> None:
        for j, v in enumerate(values):
            self.core.motor.q[j] = v

    @property
    def target(self) -> np.ndarray:
        return np.array(self.core.target, dtype=float)

    def ready(self) -> None:
        n = self.n
        self.send(Hello())
        assert isinstance(
            self.send(ConfigureLimits((-1.0,) * n, (1.0,) * n, (10.0,) * n, (0.5,) * n))[0], Ack
        )
        assert isinstance(self.send(Torque(True))[0], Ack)

    def telemetry(self) -> TelemetryMsg:
        if self.kind == "fwcore":
            return self.core.telemetry()
        return decode(self.core.frame(fw.TELEMETRY, self.core.telemetry())[:-1]).msg


BOTH = pytest.mark.parametrize("kind", ["fwcore", "micropython"])


@BOTH
def test_hello_starts_a_fresh_reference_at_the_measured_position(kind) -> None:
    r = Rig(kind)
    r.ready()
    r.send(Setpoint((0.8, -0.8)))
    r.ticks(30)
    r.send(Hello())  # a new host session: the motor must stop where it is, not go on to 0.8
    q = r.q
    assert np.allclose(r.target, q)
    r.send(Torque(True))
    r.ticks(40)  # within the watchdog: the target stays where HELLO found the motor
    assert np.allclose(r.target, q) and np.all(np.abs(r.q - q) < np.abs(0.8 - q) / 2)


@BOTH
def test_every_torque_on_starts_a_fresh_reference(kind) -> None:
    r = Rig(kind)
    r.ready()
    r.send(Setpoint((0.5, 0.5)), seq=1000)
    r.ticks(20)
    assert isinstance(r.send(Torque(True))[0], Ack)  # already on: still a fresh reference
    assert np.allclose(r.target, r.q)
    r.send(Setpoint((0.1, 0.1)), seq=5)  # older than 1000, accepted after the fresh reference
    applied = r.core.last_applied_seq if kind == "fwcore" else r.core.last_applied
    assert applied == 5


@BOTH
def test_only_a_fault_clearing_clear_faults_resets_the_reference(kind) -> None:
    r = Rig(kind)
    r.ready()
    r.send(Setpoint((0.3, 0.3)), seq=2000)
    r.send(ClearFaults(0))  # mask 0, nothing latched: not fault-clearing
    r.send(ClearFaults(Fault.WATCHDOG))  # nothing latched: not fault-clearing either
    r.send(Setpoint((0.9, 0.9)), seq=1999)  # older: still refused
    assert r.core.rx_stale == 1


@BOTH
def test_wrong_joint_count_is_rx_bad_only(kind) -> None:
    r = Rig(kind, n=2)
    r.ready()
    good, bad = r.core.rx_good, r.core.rx_bad
    r.send(Setpoint((0.1, 0.1, 0.1)))
    assert (r.core.rx_good, r.core.rx_bad) == (good, bad + 1)


@BOTH
def test_torque_enable_2_is_dropped_and_counted_bad(kind) -> None:
    r = Rig(kind)
    r.ready()
    body = struct.pack("<BBHI", 1, Torque.TYPE, 77, 0) + b"\x02"
    bad = r.core.rx_bad
    assert r.raw(frame(body)) == [] and r.core.rx_bad == bad + 1  # CRC-valid: only the payload is wrong


@BOTH
@pytest.mark.parametrize(("lo", "hi", "vmax", "step"), [(0.5, 0.5, 1.0, 0.1), (0.0, 1.0, 0.0, 0.1),
                                                        (0.0, 1.0, 1.0, -0.1)])  # fmt: skip
def test_configure_limits_bad_value(kind, lo, hi, vmax, step) -> None:
    r = Rig(kind, n=2)
    nack = r.send(ConfigureLimits((-1.0, lo), (1.0, hi), (1.0, vmax), (0.1, step)))[0]
    assert isinstance(nack, Nack) and nack.reason == NackReason.BAD_VALUE


@BOTH
def test_a_controller_to_host_type_is_dropped_as_bad_not_nacked(kind) -> None:
    r = Rig(kind)
    r.ready()
    bad = r.core.rx_bad
    assert r.send(Ack(3, Torque.TYPE)) == [] and r.core.rx_bad == bad + 1


@BOTH
def test_boot_defaults_before_configure_watchdog(kind) -> None:
    r = Rig(kind)
    if kind == "fwcore":
        r.core = FirmwareCore(2, 1000, lambda: r.now)
    else:
        r.core = fw.Controller(2, 1000, lambda: r.now, fw.SimMotor(2))
    caps = r.send(Hello())[0]
    assert isinstance(caps, Capabilities) and (caps.watchdog_ms, caps.telemetry_hz) == (100, 50)


@BOTH
def test_applied_age_is_saturated_before_the_first_setpoint(kind) -> None:
    r = Rig(kind)
    r.ready()
    r.ticks(3)
    assert r.telemetry().applied_age_ticks == 0xFFFF
    r.send(Setpoint((0.1, 0.1)))
    r.ticks(3)
    assert r.telemetry().applied_age_ticks == 3


@BOTH
def test_position_limit_fault_recovers_after_clearing(kind) -> None:
    r = Rig(kind)
    r.ready()
    r.set_q([1.3, 0.0])  # pushed beyond the limit (1.0) by more than the margin
    r.ticks(1)
    assert r.core.faults & Fault.POSITION_LIMIT
    r.ticks(500)  # the hold target is inside the limits: the joint comes back
    assert r.q[0] <= 1.0 + 0.1
    r.send(ClearFaults(Fault.POSITION_LIMIT))
    r.ticks(50)
    assert r.core.faults == 0


def test_an_over_long_packet_counts_in_rx_bad_on_the_emulator(emulator) -> None:
    import serial

    ctrl = emulator(2)
    with serial.Serial(ctrl.port, exclusive=True) as s:
        s.write(b"\x01" * 1100 + b"\x00")
        assert ctrl.wait_until(lambda c: c.rx_bad == 1, 10.0)
    mpy = fw.Controller(2, 100, lambda: 0, fw.SimMotor(2))
    mpy.feed(b"\x01" * 1100 + b"\x00", 0)
    assert mpy.rx_bad == 1

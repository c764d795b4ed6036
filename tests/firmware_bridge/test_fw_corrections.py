"""The points where an independent firmware, written from docs/protocol.md alone, disagreed with the
emulator and the spec (issue 12, part 5; issue 19, part 7). Each decision is pinned here against
BOTH reference cores, fwcore.py (numpy, run by the emulator) and micropython/legato_fw.py, fed the
same frames."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from fw_helpers import CORES, CoreRig

from firmware_bridge.framing import frame
from firmware_bridge.fwcore import FirmwareCore
from firmware_bridge.messages import (
    Ack,
    Capabilities,
    ClearFaults,
    ConfigureLimits,
    Fault,
    Heartbeat,
    Hello,
    Nack,
    NackReason,
    Setpoint,
    Torque,
    decode,
)
from firmware_bridge.micropython import legato_fw as fw

BOTH = pytest.mark.parametrize("kind", CORES)
Rig = CoreRig


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
    assert r.last_applied_seq == 5


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
        r.core = fw.Controller(2, 1000, lambda: r.now, fw.SimMotor(2))  # the constructor's defaults
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
    assert r.faults & Fault.POSITION_LIMIT
    r.ticks(500)  # the hold target is inside the limits: the joint comes back
    assert r.q[0] <= 1.0 + 0.1
    r.send(ClearFaults(Fault.POSITION_LIMIT))
    r.ticks(50)
    assert r.faults == 0


def test_an_over_long_packet_counts_in_rx_bad_on_the_emulator(emulator) -> None:
    import serial

    ctrl = emulator(2)
    with serial.Serial(ctrl.port, exclusive=True) as s:
        s.write(b"\x01" * 1100 + b"\x00")
        assert ctrl.wait_until(lambda c: c.rx_bad == 1, 10.0)
    mpy = fw.Controller(2, 100, lambda: 0, fw.SimMotor(2))
    mpy.feed(b"\x01" * 1100 + b"\x00", 0)
    assert mpy.rx_bad == 1


# ---- issue 19, part 7: the two sentences that allowed two readings ------------------------------
@BOTH
@pytest.mark.parametrize("mtype", [0x14, 0x1F])
def test_an_unimplemented_acknowledged_command_type_gets_nack_unsupported(kind, mtype) -> None:
    """Section 4: a CRC-valid frame of type 0x14..0x1F (no command defined there) is a valid frame
    of a command this firmware lacks: NACK UNSUPPORTED with its seq, counted in rx_good, its seq
    tracked (no gap), whatever its payload; the host learns it at once instead of retrying."""
    r = Rig(kind)
    r.ready()
    good, bad, gap = r.core.rx_good, r.core.rx_bad, r.core.rx_gap
    body = struct.pack("<BBHI", 1, mtype, r.seq, 0) + b"\x07\x08\x09"
    r.seq += 1
    (nack,) = r.raw(frame(body))
    assert isinstance(nack, Nack) and nack.reason == NackReason.UNSUPPORTED
    assert (nack.acked_seq, nack.acked_type) == (r.seq - 1, mtype)
    assert (r.core.rx_good, r.core.rx_bad) == (good + 1, bad)
    r.send(Heartbeat())
    assert r.core.rx_gap == gap


@BOTH
@pytest.mark.parametrize("mtype", [0x05, 0x22, 0x50, 0x7D])
def test_an_unknown_type_outside_the_command_range_is_dropped_as_bad(kind, mtype) -> None:
    r = Rig(kind)
    r.ready()
    good, bad = r.core.rx_good, r.core.rx_bad
    assert r.raw(frame(struct.pack("<BBHI", 1, mtype, 9, 0))) == []
    assert (r.core.rx_good, r.core.rx_bad) == (good, bad + 1)


@BOTH
def test_clear_faults_that_clears_nothing_does_not_feed_the_watchdog(kind) -> None:
    """Section 6.1 / 6.4: only SETPOINT and HEARTBEAT feed a running watchdog; CLEAR_FAULTS(0), or
    one naming bits that are not latched, changes nothing: the watchdog trips 50 ms after the last
    setpoint as if they had never come."""
    r = Rig(kind)  # watchdog 50 ms
    r.ready()
    r.send(Setpoint((0.2, 0.2)))
    fed = r.now
    r.ticks(30)
    assert isinstance(r.send(ClearFaults(0))[0], Ack)
    r.ticks(10)
    assert isinstance(r.send(ClearFaults(Fault.WATCHDOG | Fault.EXTERNAL))[0], Ack)
    r.ticks(11)
    assert r.faults == Fault.WATCHDOG and r.hold_at == fed + 51 * CoreRig.TICK_US


@BOTH
def test_a_fault_clearing_clear_faults_restarts_the_watchdog_from_now(kind) -> None:
    """The fault-clearing CLEAR_FAULTS (clears a latched bit, leaves none, torque on) starts a
    fresh reference, last_feed included: clearing after a long hold must not latch WATCHDOG again
    at the next tick."""
    r = Rig(kind)
    r.ready()
    r.send(Setpoint((0.2, 0.2)))
    r.core.latch(Fault.EXTERNAL)
    r.ticks(200)  # held far longer than the watchdog: no feed while holding
    assert r.faults == Fault.EXTERNAL
    assert isinstance(r.send(ClearFaults(Fault.EXTERNAL))[0], Ack)
    cleared = r.now
    r.ticks(50)
    assert r.faults == 0  # 50 ms after the clear: not yet
    r.ticks(1)
    assert r.faults == Fault.WATCHDOG and r.hold_at == cleared + 51 * CoreRig.TICK_US


def test_the_emulator_answers_an_unimplemented_command_over_the_wire(emulator) -> None:
    import serial

    ctrl = emulator(2)
    with serial.Serial(ctrl.port, exclusive=True, timeout=10.0) as s:
        s.write(frame(struct.pack("<BBHI", 1, 0x15, 321, 0)))
        reply = s.read_until(b"\x00")
    nack = decode(reply[:-1]).msg
    assert isinstance(nack, Nack) and (nack.acked_seq, nack.acked_type, nack.reason) == (321, 0x15, 5)
    assert ctrl.core.rx_bad == 0 and ctrl.core.rx_good == 1

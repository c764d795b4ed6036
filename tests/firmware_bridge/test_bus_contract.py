"""The MotorBus contract, one test over every bus (firmware, Feetech, Dynamixel) on emulators
behind real ptys: setpoints, torque, the port pulled mid-run and put back, a device that stops
answering for longer than a staleness limit, faults that latch until cleared, and a bus built in
another process from picklable settings. What the runtime's loop relies on, whichever bus the
profile picks.

Timing is asserted only as order and growth (an age that keeps growing, a measurement newer than
an event), never as a wall-clock bound: the machine is shared."""

from __future__ import annotations

import multiprocessing
import pickle
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from fw_helpers import SETUP_S, WAIT_S, wait_for

from firmware_bridge import dynamixel as dx
from firmware_bridge import feetech as ft
from firmware_bridge.config import JointLimits
from firmware_bridge.emulator import EmulatedController, EmulatorConfig
from firmware_bridge.factory import open_bus
from firmware_bridge.faults import FaultPlan, FaultyTransport
from firmware_bridge.interface import BusHealth, MotorBus, Telemetry
from firmware_bridge.messages import Fault
from firmware_bridge.servo_emulator import EmulatedServoBus, ServoEmulatorConfig

KINDS = ("firmware", "feetech", "dynamixel")
STALE_S = 0.1  # the staleness limit these tests hold a joint to (a profile's stale_ms)


class Rig:
    """One emulated device on a stable link path and the bus on it, with the same controls for
    every kind: pull / put back the port, silence one joint's source, raise and remove a fault."""

    def __init__(self, kind: str, link: str) -> None:
        self.kind = kind
        self.emu: Any
        if kind == "firmware":
            self.emu = EmulatedController(EmulatorConfig(3, record_applied=True), link_path=link,
                                          wrap=lambda t: FaultyTransport(t, seed=5))  # fmt: skip
            # watchdogs of 2 s on every bus: a starved test process is silent for longer than a
            # real host, and a watchdog trip is a fault these tests would then see (the watchdog's
            # own behaviour is pinned in test_fw_link_pty.py and test_servo_bus.py)
            self.settings: dict[str, Any] = {"port": link, "limits": JointLimits.uniform(3),
                                             "watchdog_ms": 2000}  # fmt: skip
        else:
            self.emu = EmulatedServoBus(ServoEmulatorConfig(kind, (1, 2, 3)), link_path=link)
            self.settings = {"port": link, "ids": "1-3", "period_s": 0.01, "reconnect_min_s": 0.02,
                             "setup_timeout_s": SETUP_S, "watchdog_ms": 2000}  # fmt: skip
        self.emu.start()
        self.bus: MotorBus = open_bus(kind, **self.settings)

    def close(self) -> None:
        self.bus.close()
        self.emu.close()

    def tel(self) -> Telemetry:
        t = self.bus.latest_telemetry()
        assert t is not None
        return t

    def silence(self, joint: int, on: bool) -> set[int]:
        """Stop (or restart) the answers for ``joint``; returns the joints that go silent with it:
        one servo on a servo bus, every joint behind a controller (one frame carries them all)."""
        if self.kind == "firmware":
            faulty = self.emu.transport
            assert isinstance(faulty, FaultyTransport)
            faulty.set_plan(FaultPlan(drop_frame_p=1.0 if on else 0.0))
            return {0, 1, 2}
        self.emu.set_silent(joint + 1, on)
        return {joint}

    def raise_fault(self, on: bool) -> int:
        """Make the device report a fault (or stop reporting it); returns the Fault bit."""
        if self.kind == "firmware":
            if on:
                self.emu.inject_fault(Fault.EXTERNAL)  # latched in the controller until cleared
            return Fault.EXTERNAL
        bit = ft.ERR_OVERLOAD if self.kind == "feetech" else dx.ERR_ALERT
        self.emu.set_error(2, bit if on else 0)
        return Fault.OVERLOAD if self.kind == "feetech" else Fault.EXTERNAL


@pytest.fixture
def rig(no_leaks: None, tmp_path) -> Iterator[Callable[[str], Rig]]:
    made: list[Rig] = []

    def make(kind: str) -> Rig:
        r = Rig(kind, str(tmp_path / f"tty{kind}"))
        made.append(r)
        return r

    try:
        yield make
    finally:
        for r in made:
            r.close()


def _wait_tel(bus: MotorBus, pred: Callable[[Telemetry], bool], timeout_s: float = WAIT_S) -> bool:
    return wait_for(lambda: (t := bus.latest_telemetry()) is not None and bool(pred(t)), timeout_s)


@pytest.mark.parametrize("kind", KINDS)
def test_setpoints_torque_and_health(kind, rig):
    r = rig(kind)
    bus = r.bus
    assert isinstance(bus, MotorBus)
    bus.start()
    target = np.array([0.3, -0.2, 0.1], dtype=np.float32)
    bus.send_setpoint(target)
    assert _wait_tel(bus, lambda t: np.abs(t.positions - target).max() < 0.05)
    bus.send_setpoint(np.full(3, np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        bus.send_setpoint(np.zeros(4, dtype=np.float32))
    h = bus.health()
    assert isinstance(h, BusHealth) and h.connected and h.torque_enabled and h.setpoints_rejected == 1
    assert h.telemetry_age_s is not None and h.faults == 0
    t = r.tel()
    assert t.measured_at.shape == (3,) and np.all(t.measured_at <= time.monotonic())
    assert np.all(t.joint_age_s(time.monotonic()) >= 0) and not t.measured_at.flags.writeable
    bus.set_torque(False)
    assert _wait_tel(bus, lambda t: not t.torque_enabled)
    bus.set_torque(True)
    assert _wait_tel(bus, lambda t: t.torque_enabled)
    bus.close()
    assert not bus.health().connected


@pytest.mark.parametrize("kind", KINDS)
def test_port_pulled_mid_run_says_disconnected_then_reconnects_through_one_path(kind, rig):
    r = rig(kind)
    bus = r.bus
    bus.start()
    target = np.array([0.2, 0.1, -0.1], dtype=np.float32)
    bus.send_setpoint(target)
    assert _wait_tel(bus, lambda t: np.abs(t.positions - target).max() < 0.05)
    r.emu.unplug()
    assert wait_for(lambda: not bus.health().connected), "the bus still says connected"
    t_lost = r.tel()
    frozen = t_lost.measured_at.copy()
    time.sleep(2 * STALE_S)  # the scenario: the cable stays out
    t = r.tel()
    assert np.array_equal(t.measured_at, frozen), "nothing is measured while the port is gone"
    assert np.all(t.joint_age_s(time.monotonic()) > STALE_S)  # every joint now older than the limit
    if t.stale is not None:
        assert t.stale.all()
    assert not bus.health().connected and bus.health().reconnects == 0
    replugged = time.monotonic()
    r.emu.replug()
    assert wait_for(lambda: (h := bus.health()).connected and h.configured and h.reconnects == 1)
    assert _wait_tel(bus, lambda t: bool(np.all(t.measured_at > replugged)))  # fresh again
    target2 = np.array([-0.2, 0.0, 0.2], dtype=np.float32)
    bus.send_setpoint(target2)
    assert _wait_tel(bus, lambda t: np.abs(t.positions - target2).max() < 0.05 and t.torque_enabled)


@pytest.mark.parametrize("kind", KINDS)
def test_a_source_that_stops_answering_ages_past_the_limit_while_the_others_stay_fresh(kind, rig):
    r = rig(kind)
    bus = r.bus
    bus.start()
    assert _wait_tel(bus, lambda t: t.torque_enabled)
    silent = sorted(r.silence(1, True))
    fresh = sorted({0, 1, 2} - set(silent))
    assert wait_for(lambda: bool(np.all(r.tel().joint_age_s(time.monotonic())[silent] > STALE_S)))
    frozen = r.tel().measured_at[silent].copy()  # a reply already on its way may have come late
    aged = time.monotonic()
    if fresh:  # the other servos keep being read...
        assert _wait_tel(bus, lambda t: bool(np.all(t.measured_at[fresh] > aged)))
        t = r.tel()
        assert t.stale is not None and t.stale[1]  # (a fresh one may be late in one cycle: load)
        assert bus.health().missed_replies > 0 and bus.health().stale_joints >= 1
    else:
        time.sleep(STALE_S)
    assert np.array_equal(r.tel().measured_at[silent], frozen)  # ...the silent ones are not
    assert bus.health().connected  # a silent device is not a lost port
    back = time.monotonic()
    r.silence(1, False)
    assert _wait_tel(bus, lambda t: bool(np.all(t.measured_at > back)))


@pytest.mark.parametrize("kind", KINDS)
def test_faults_latch_until_clear_faults_which_reenables_torque(kind, rig):
    r = rig(kind)
    bus = r.bus
    bus.start()
    assert _wait_tel(bus, lambda t: t.torque_enabled)
    bit = r.raise_fault(True)
    assert _wait_tel(bus, lambda t: bool(t.faults & bit))
    r.raise_fault(False)  # the cause is gone; the fault stays latched until cleared
    seen = time.monotonic()
    assert _wait_tel(bus, lambda t: t.received_at > seen + STALE_S)
    assert r.tel().faults & bit and bus.health().faults & bit
    bus.clear_faults()
    cleared = time.monotonic()
    assert _wait_tel(bus, lambda t: t.received_at > cleared and t.faults == 0 and t.torque_enabled)
    assert bus.health().faults == 0


def _build_and_read(kind: str, settings: bytes, q: multiprocessing.Queue) -> None:
    """In a child process: the bus from pickled settings, started, one telemetry read, closed."""
    bus = open_bus(kind, **pickle.loads(settings))
    try:
        bus.start()
        end = time.monotonic() + WAIT_S
        while bus.latest_telemetry() is None and time.monotonic() < end:
            time.sleep(0.01)
        t = bus.latest_telemetry()
        q.put(None if t is None else t.positions.tolist())
    finally:
        bus.close()


@pytest.mark.parametrize("kind", ["firmware", "feetech"])
def test_a_bus_builds_in_a_child_process_from_picklable_settings(kind, rig):
    r = rig(kind)  # the emulator here; the bus built (and started) only in the child
    settings = pickle.dumps(r.settings)
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_build_and_read, args=(kind, settings, q))
    p.start()
    try:
        got = q.get(timeout=60)
    finally:
        p.join(60)
    assert p.exitcode == 0 and got is not None and len(got) == 3

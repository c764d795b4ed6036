"""The firmware rules of docs/protocol.md section 6 on BOTH reference cores, fwcore.py (numpy, run
by the emulator) and micropython/legato_fw.py, fed the same frames on a fake clock (no I/O):
watchdog, safe hold, sequence order across wraparound, limits and the step limit, latching, the
telemetry rate, gaps and time sync. Then the motor model (fwcore's plant)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fw_helpers import CORES, CoreRig

from firmware_bridge.messages import (
    Ack,
    ClearFaults,
    ConfigureLimits,
    ConfigureWatchdog,
    Fault,
    Heartbeat,
    Hello,
    Nack,
    NackReason,
    Setpoint,
    State,
    TelemetryMsg,
    TimeSyncRequest,
    TimeSyncResponse,
    Torque,
)
from firmware_bridge.motor import MotorModel, MotorParams

BOTH = pytest.mark.parametrize("kind", CORES)
TICK_US = CoreRig.TICK_US


@BOTH
def test_watchdog_holds_within_timeout_plus_one_tick(kind) -> None:
    r = CoreRig(kind, watchdog_ms=20)
    r.ready()
    r.send(Setpoint((0.5, 0.5)))
    fed = r.now
    r.ticks(20)  # 20 ms after the feed: not yet
    assert not r.faults
    r.ticks(1)  # 21 ms: more than the timeout
    assert r.faults == Fault.WATCHDOG and r.holding
    assert r.hold_at is not None and 20_000 < r.hold_at - fed <= 20_000 + TICK_US
    tel = r.telemetry()
    assert tel.state & State.HOLDING and tel.state & State.FAULT_LATCHED


@BOTH
def test_heartbeat_feeds_watchdog_and_hold_keeps_measured_position(kind) -> None:
    r = CoreRig(kind, watchdog_ms=20)
    r.ready()
    r.send(Setpoint((0.8, -0.8)))
    for _ in range(10):
        r.ticks(10)
        r.send(Heartbeat())
    assert not r.faults  # 100 ms of heartbeats every 10 ms
    r.ticks(25)
    assert r.faults & Fault.WATCHDOG
    q_hold, commanded = r.hold_pos, r.commanded
    r.send(Setpoint((0.0, 0.0)))  # ignored while a fault holds
    assert np.array_equal(r.commanded, commanded)
    r.ticks(500)
    assert np.allclose(r.q, q_hold, atol=0.01)


@BOTH
def test_stale_and_duplicate_setpoints_rejected_across_wraparound(kind) -> None:
    r = CoreRig(kind)
    r.ready()
    r.send(Setpoint((0.1, 0.1)), seq=65534)
    r.send(Setpoint((0.2, 0.2)), seq=65535)
    r.send(Setpoint((0.3, 0.3)), seq=0)  # wrapped: newer
    r.send(Setpoint((0.9, 0.9)), seq=65535)  # late
    r.send(Setpoint((0.9, 0.9)), seq=0)  # duplicate
    assert r.last_applied_seq == 0 and r.core.rx_stale == 2
    assert np.allclose(r.commanded, 0.3)


@BOTH
def test_hello_and_enable_start_a_fresh_sequence_reference(kind) -> None:
    r = CoreRig(kind)
    r.ready()
    r.send(Setpoint((0.1, 0.1)), seq=40_000)
    r.send(Hello(), seq=3)  # the host restarted: its numbers start low again
    r.send(Setpoint((0.2, 0.2)), seq=4)
    assert r.last_applied_seq == 4 and r.core.rx_stale == 0


@BOTH
def test_limits_clamp_and_step_limit_per_tick(kind) -> None:
    r = CoreRig(kind)
    r.ready()
    r.send(Setpoint((5.0, -5.0)))
    assert np.array_equal(r.commanded, [1.0, -1.0])
    r.ticks(1)
    assert np.allclose(r.target, [0.5, -0.5])  # step_max 0.5 rad per tick
    r.ticks(1)
    assert np.allclose(r.target, [1.0, -1.0])


@BOTH
def test_faults_latch_until_cleared_and_torque_off_always_accepted(kind) -> None:
    r = CoreRig(kind)
    r.ready()
    r.core.latch(Fault.EXTERNAL)
    r.ticks(1)
    nack = r.send(Torque(True))[0]
    assert isinstance(nack, Nack) and nack.reason == NackReason.FAULT_LATCHED
    assert isinstance(r.send(Torque(False))[0], Ack) and not r.core.enabled
    r.ticks(100)
    assert r.faults == Fault.EXTERNAL  # still latched
    assert isinstance(r.send(ClearFaults(Fault.WATCHDOG))[0], Ack)
    assert r.faults == Fault.EXTERNAL  # only named bits clear
    r.send(ClearFaults(Fault.EXTERNAL))
    assert r.faults == 0 and isinstance(r.send(Torque(True))[0], Ack)


@BOTH
def test_configuration_refuses_bad_values_by_nack(kind) -> None:
    r = CoreRig(kind, n=2)
    nack = r.send(Torque(True))[0]
    assert isinstance(nack, Nack) and nack.reason == NackReason.NOT_CONFIGURED
    bad = r.send(ConfigureLimits((1.0, -1.0), (0.0, 1.0), (1.0, 1.0), (0.1, 0.1)))[0]
    assert isinstance(bad, Nack) and bad.reason == NackReason.BAD_VALUE
    wrong_n = r.send(ConfigureLimits((-1.0,), (1.0,), (1.0,), (0.1,)))[0]
    assert isinstance(wrong_n, Nack) and wrong_n.reason == NackReason.JOINT_COUNT
    assert isinstance(r.send(ConfigureWatchdog(2, 100))[0], Nack)
    assert isinstance(r.send(ConfigureWatchdog(50, 5000))[0], Nack)  # telemetry above the tick rate
    assert isinstance(r.send(ConfigureWatchdog(50, 500))[0], Ack)


@BOTH
def test_telemetry_rate_gaps_and_time_sync(kind) -> None:
    r = CoreRig(kind)
    r.ready()
    tel = [m for m in r.ticks(1000) if isinstance(m, TelemetryMsg)]
    assert len(tel) == 100  # 100 Hz over 1 s of 1 kHz ticks
    r.send(Heartbeat(), seq=r.seq + 5)  # five host frames lost
    assert r.core.rx_gap == 5
    resp = r.send(TimeSyncRequest(123))[0]
    assert isinstance(resp, TimeSyncResponse) and resp.t1_us == 123 and resp.t2_us == resp.t3_us == r.now


def test_motor_model_one_step_matches_the_documented_formula() -> None:
    p = MotorParams(kp=20.0, kd=0.8, torque_max=5.0, inertia=0.01, lag_s=0.005, friction=0.05)
    m = MotorModel(1, p)
    dt, target = 0.001, np.array([0.1])
    m.step(target, dt, np.array([6.0]))
    u = min(20.0 * 0.1, 5.0)
    tau = u * dt / (0.005 + dt)
    v = dt * tau / 0.01
    assert m.tau[0] == pytest.approx(tau) and m.v[0] == pytest.approx(v) and m.q[0] == pytest.approx(dt * v)


def test_motor_model_respects_velocity_and_torque_limits_and_settles() -> None:
    m = MotorModel(1, MotorParams())
    v_max = np.array([2.0])
    peak_v = peak_tau = 0.0
    for _ in range(3000):
        m.step(np.array([1.0]), 0.001, v_max)
        peak_v, peak_tau = max(peak_v, abs(m.v[0])), max(peak_tau, abs(m.tau[0]))
    assert peak_v <= 2.0 + 1e-12 and peak_tau <= 5.0 + 1e-12
    assert m.q[0] == pytest.approx(1.0, abs=1e-3)


def test_motor_params_validate() -> None:
    with pytest.raises(ValueError, match="inertia"):
        MotorParams(inertia=0.0)
    with pytest.raises(ValueError, match="lag_s"):
        MotorParams(lag_s=-math.inf)

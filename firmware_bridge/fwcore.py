"""The controller's protocol core and firmware rules, with no I/O and no clock of its own.

``handle(frame, now_us)`` applies one valid host frame and returns the replies; ``tick(now_us)``
runs one control tick and returns what to send (telemetry, fault reports). The emulator drives it
from a pty; a MicroPython port would drive the same rules from a UART interrupt and a timer.

Rules (docs/protocol.md, "Firmware rules"):
- Watchdog: while torque is on and no fault is latched, a tick more than ``watchdog_ms`` after
  the last accepted SETPOINT or HEARTBEAT latches WATCHDOG and engages the safe hold.
- Safe hold: the target freezes at the position measured when the hold engaged, torque stays on.
  Every latched fault holds. TORQUE off is accepted in every state.
- Limits: accepted setpoints are clamped to [position_min, position_max]; the target moves
  towards them by at most ``step_max`` per tick; the motor's speed is capped at ``velocity_max``.
- Order: a SETPOINT is applied only if its sequence number is newer (serial arithmetic) than the
  last applied one; HELLO, every accepted TORQUE(1) and a fault-clearing CLEAR_FAULTS (one that
  clears a latched bit and leaves none, torque on) start a fresh reference: the target becomes
  the measured position (clamped into the limits) and the next setpoint is accepted whatever its
  number.
- Faults stay latched until CLEAR_FAULTS names them; TORQUE on is refused while any is latched.
  The hold target is the measured position clamped into the limits, so a POSITION_LIMIT hold
  brings the joint back inside and clearing the fault does not re-latch it.
- Frames the controller cannot use (wrong joint count, a controller->host type) count in rx_bad
  only. A CRC-valid frame of an acknowledged command type this firmware does not implement
  (0x14-0x1F) is a valid frame (rx_good, its seq tracked) answered NACK UNSUPPORTED, whatever its
  payload (``undecodable``); any other unknown type counts in rx_bad.
- Only SETPOINT and HEARTBEAT feed a running watchdog. TORQUE(1) and a fault-clearing
  CLEAR_FAULTS also reset ``last_feed``, as part of the fresh reference they start; a CLEAR_FAULTS
  that clears nothing (mask 0, nothing latched, or bits still latched after it) feeds nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from firmware_bridge.errors import ProtocolError
from firmware_bridge.messages import (
    PROTOCOL_VERSION,
    Ack,
    Capabilities,
    ClearFaults,
    ConfigureLimits,
    ConfigureWatchdog,
    Fault,
    FaultReport,
    Frame,
    Heartbeat,
    Hello,
    Message,
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
from firmware_bridge.seq import seq_distance, seq_newer

POSITION_MARGIN = 0.1  # rad beyond a limit the measured position may overshoot before POSITION_LIMIT
U32 = 0xFFFFFFFF

# the types a controller acts on; a valid frame of any other type is dropped (rx_bad)
HOST_TYPES = frozenset({Hello.TYPE, ConfigureLimits.TYPE, ConfigureWatchdog.TYPE, Torque.TYPE,
                        ClearFaults.TYPE, Setpoint.TYPE, Heartbeat.TYPE, TimeSyncRequest.TYPE})  # fmt: skip
CONTROLLER_COMMANDS = (0x10, 0x1F)  # acknowledged command range: an unknown one here gets NACK UNSUPPORTED

AppliedHook = Callable[[int, np.ndarray, int], None]


class FirmwareCore:
    def __init__(
        self,
        n_joints: int,
        tick_hz: float,
        clock_us: Callable[[], int],
        *,
        telemetry_hz: int = 50,
        watchdog_ms: int = 100,
        motor: MotorParams | None = None,
        name: bytes = b"legato-emu",
    ) -> None:
        if not 1 <= n_joints <= 32:
            raise ValueError(f"n_joints must be in 1..32, got {n_joints}")
        if not 1 <= tick_hz <= 65535:
            raise ValueError(f"tick_hz must be in 1..65535, got {tick_hz}")
        self.n = n_joints
        self.tick_hz = tick_hz
        self.dt = 1.0 / tick_hz
        self._clock_us = clock_us
        self.name = name
        self.motor = MotorModel(n_joints, motor)
        # limits: unconfigured until CONFIGURE_LIMITS (torque on is refused before)
        self.lo = np.full(n_joints, -np.inf, dtype=np.float32)
        self.hi = np.full(n_joints, np.inf, dtype=np.float32)
        self.v_max = np.full(n_joints, np.inf)
        self.step = np.full(n_joints, np.inf)
        self.configured = False
        self.watchdog_us = watchdog_ms * 1000
        self.telemetry_hz = telemetry_hz
        self.enabled = False
        self.faults = 0
        self.commanded = np.zeros(n_joints)  # last accepted setpoint, clamped
        self.target = np.zeros(n_joints)  # step-limited target the motor tracks
        self.hold_pos = np.zeros(n_joints)
        self.last_applied_seq = 0
        self._ref_seq: int | None = None  # last applied setpoint seq, None = accept any
        self._last_rx_seq: int | None = None
        self.last_feed_us = 0
        self.applied_age = 0xFFFF  # saturated = no setpoint applied yet
        self.ticks = 0
        self._tel_acc = 0
        self.rx_good = 0
        self.rx_bad = 0
        self.rx_gap = 0
        self.rx_stale = 0
        self.rx_ignored = 0  # setpoints while torque is off or a fault holds
        self.watchdog_trips = 0
        self.hold_events: list[tuple[int, int]] = []  # (tick time of the hold, last feed time), us
        self.on_applied: AppliedHook | None = None
        self._pending: list[Message] = []

    # ---- frames from the host --------------------------------------------------------------
    def count_bad(self) -> None:
        """A packet the decoder refused (COBS, CRC, length, version, type, payload)."""
        self.rx_bad = (self.rx_bad + 1) & U32

    def undecodable(self, exc: ProtocolError, now_us: int) -> list[Message]:
        """A packet the decoder refused with ``exc``: NACK UNSUPPORTED for an acknowledged command
        type this firmware does not implement (docs/protocol.md section 4), else rx_bad."""
        lo, hi = CONTROLLER_COMMANDS
        if exc.kind == "type" and exc.mtype is not None and exc.seq is not None and lo <= exc.mtype <= hi:
            self.rx_good = (self.rx_good + 1) & U32
            self._track_rx(exc.seq)
            return [Nack(exc.seq, exc.mtype, NackReason.UNSUPPORTED)]
        self.count_bad()
        return []

    def handle(self, frame: Frame, now_us: int) -> list[Message]:
        msg = frame.msg
        if isinstance(msg, Setpoint) and len(msg.positions) != self.n:
            self.count_bad()  # valid on the wire, unusable here: rx_bad only, never rx_good
            return []
        if msg.TYPE not in HOST_TYPES:
            self.count_bad()  # a controller->host type (an echo, a confused peer): dropped
            return []
        self.rx_good = (self.rx_good + 1) & U32
        if isinstance(msg, Hello):
            self._last_rx_seq = None  # a new host session: its sequence numbers start anew
            self._fresh_reference(now_us)  # ...and it does not inherit the old session's target
        self._track_rx(frame.seq)
        if isinstance(msg, Setpoint):
            self._setpoint(frame.seq, msg, now_us)
            return []
        if isinstance(msg, Heartbeat):
            if self.enabled:
                self.last_feed_us = now_us
            return []
        if isinstance(msg, TimeSyncRequest):
            return [TimeSyncResponse(msg.t1_us, now_us, self._clock_us())]
        if isinstance(msg, Hello):
            wd_ms = min(self.watchdog_us // 1000, 0xFFFF)
            tick_hz = int(self.tick_hz)
            return [Capabilities(self.n, PROTOCOL_VERSION, tick_hz, self.telemetry_hz, wd_ms, self.name)]
        if isinstance(msg, ConfigureLimits):
            return [self._configure_limits(frame.seq, msg)]
        if isinstance(msg, ConfigureWatchdog):
            return [self._configure_watchdog(frame.seq, msg)]
        if isinstance(msg, Torque):
            return [self._torque(frame.seq, msg, now_us)]
        if isinstance(msg, ClearFaults):
            cleared = self.faults & msg.mask
            self.faults &= ~msg.mask & 0xFFFF
            if cleared and self.enabled and not self.faults:  # fault-clearing: hold ended, fresh start
                self._fresh_reference(now_us)
            return [Ack(frame.seq, msg.TYPE)]
        return [Nack(frame.seq, msg.TYPE, NackReason.UNSUPPORTED)]

    def _track_rx(self, seq: int) -> None:
        last = self._last_rx_seq
        if last is None or seq_newer(seq, last):
            if last is not None:
                self.rx_gap = (self.rx_gap + seq_distance(seq, last) - 1) & U32
            self._last_rx_seq = seq

    def _setpoint(self, seq: int, msg: Setpoint, now_us: int) -> None:
        if not self.enabled or self.faults:
            self.rx_ignored += 1
            return
        if self._ref_seq is not None and not seq_newer(seq, self._ref_seq):
            self.rx_stale = (self.rx_stale + 1) & U32
            return
        self._ref_seq = seq
        self.last_applied_seq = seq
        self.last_feed_us = now_us
        self.applied_age = 0
        p = np.asarray(msg.positions, dtype=np.float32)
        self.commanded[:] = np.clip(p, self.lo, self.hi)
        if self.on_applied is not None:
            self.on_applied(seq, self.commanded.copy(), now_us)

    def _configure_limits(self, seq: int, msg: ConfigureLimits) -> Message:
        if len(msg.position_min) != self.n:
            return Nack(seq, msg.TYPE, NackReason.JOINT_COUNT)
        lo = np.asarray(msg.position_min, dtype=np.float32)
        hi = np.asarray(msg.position_max, dtype=np.float32)
        vmax = np.asarray(msg.velocity_max, dtype=np.float64)
        step = np.asarray(msg.step_max, dtype=np.float64)
        if not ((lo < hi).all() and (vmax > 0).all() and (step > 0).all()):
            return Nack(seq, msg.TYPE, NackReason.BAD_VALUE)
        self.lo, self.hi, self.v_max, self.step = lo, hi, vmax, step
        np.clip(self.commanded, lo, hi, out=self.commanded)
        self.configured = True
        return Ack(seq, msg.TYPE)

    def _configure_watchdog(self, seq: int, msg: ConfigureWatchdog) -> Message:
        if not (5 <= msg.timeout_ms <= 60_000 and 1 <= msg.telemetry_hz <= self.tick_hz):
            return Nack(seq, msg.TYPE, NackReason.BAD_VALUE)
        self.watchdog_us = msg.timeout_ms * 1000
        self.telemetry_hz = msg.telemetry_hz
        return Ack(seq, msg.TYPE)

    def _torque(self, seq: int, msg: Torque, now_us: int) -> Message:
        if not msg.enable:
            self.enabled = False  # always accepted: the host's way out, whatever is latched
            return Ack(seq, msg.TYPE)
        if not self.configured:
            return Nack(seq, msg.TYPE, NackReason.NOT_CONFIGURED)
        if self.faults:
            return Nack(seq, msg.TYPE, NackReason.FAULT_LATCHED)
        self.enabled = True
        self._fresh_reference(now_us)  # every accepted TORQUE(1): enabling never jumps
        return Ack(seq, msg.TYPE)

    def _fresh_reference(self, now_us: int) -> None:
        """Hold where the motor is (clamped into the limits) and accept the next setpoint whatever
        its sequence number."""
        np.clip(self.motor.q, self.lo, self.hi, out=self.commanded)
        self.target[:] = self.commanded
        self._ref_seq = None
        self.last_feed_us = now_us

    # ---- control tick ----------------------------------------------------------------------
    def latch(self, bits: int, joint: int = 255, value: float = 0.0) -> None:
        """Latch fault ``bits``: hold where the motor is and report it."""
        new = bits & ~self.faults
        if not new:
            return
        if not self.faults:
            # clamped into the limits: a POSITION_LIMIT hold brings the joint back inside, so
            # clearing the fault later does not latch it again at once
            np.clip(self.motor.q, self.lo, self.hi, out=self.hold_pos)
        self.faults |= bits
        self._pending.append(FaultReport(self.faults, new, joint, value))

    def tick(self, now_us: int) -> list[Message]:
        """One control tick at controller time ``now_us``; returns the frames to send."""
        self.ticks += 1
        self.applied_age = min(self.applied_age + 1, 0xFFFF)
        if self.enabled and not self.faults and now_us - self.last_feed_us > self.watchdog_us:
            self.watchdog_trips += 1
            self.hold_events.append((now_us, self.last_feed_us))
            self.latch(Fault.WATCHDOG, value=(now_us - self.last_feed_us) / 1000.0)
        if not self.enabled:
            self.motor.step(None, self.dt, self.v_max)
        elif self.faults:
            self.motor.step(self.hold_pos, self.dt, self.v_max)
        else:
            self.target += np.clip(self.commanded - self.target, -self.step, self.step)
            self.motor.step(self.target, self.dt, self.v_max)
        if self.configured:
            q = self.motor.q
            out = np.flatnonzero((q < self.lo - POSITION_MARGIN) | (q > self.hi + POSITION_MARGIN))
            if out.size:
                self.latch(Fault.POSITION_LIMIT, int(out[0]), float(self.motor.q[out[0]]))
        out_msgs, self._pending = self._pending, []
        # integer accumulator (Bresenham): exactly telemetry_hz frames per tick_hz ticks, no float creep
        self._tel_acc += self.telemetry_hz
        if self._tel_acc >= self.tick_hz:
            self._tel_acc -= self.tick_hz
            out_msgs.append(self.telemetry())
        return out_msgs

    def state_bits(self) -> int:
        s = 0
        if self.enabled:
            s |= State.TORQUE_ENABLED
            if self.faults:
                s |= State.HOLDING
        if self.faults:
            s |= State.FAULT_LATCHED
        if self.configured:
            s |= State.CONFIGURED
        return s

    @property
    def holding(self) -> bool:
        return self.enabled and bool(self.faults)

    def telemetry(self) -> TelemetryMsg:
        m = self.motor
        return TelemetryMsg(
            self.last_applied_seq, self.state_bits(), self.faults, self.applied_age,
            self.rx_good, self.rx_bad, self.rx_gap, self.rx_stale,
            tuple(m.q.tolist()), tuple(m.v.tolist()), tuple(m.tau.tolist()),
        )  # fmt: skip

"""The one interface the edge runtime uses to reach the motors.

Every transport implements :class:`MotorBus`: this package's own protocol (``FirmwareBridge``) and
the vendor buses (``ServoBus``: Feetech STS/SCS, Dynamixel 2.0), built by ``open_bus``. The
runtime never sees frames, ports or sequence numbers.

Health comes in two layers: :class:`BusHealth` is what every bus has (frames, stale joints, round
trip, faults); :class:`LinkHealth` (this package's protocol: CRC counters, controller sequence,
clock offset) and ``ServoHealth`` (vendor buses: reply timeouts, per-servo error bits) extend it.

Conventions: arrays are shape (a,) float32, a = number of joints, in the controller's joint
order; positions in rad, velocities in rad/s, efforts in Nm (or the bus's native torque unit
scaled to Nm); times are host ``time.monotonic()`` seconds.

Freshness is per joint: ``Telemetry.measured_at[j]`` is the host time joint j's values were
measured (a vendor bus: when that servo's reply arrived; the firmware: the controller's send
time on the host clock, or the receive time before time sync). A consumer holds the arm when
``now - measured_at`` of any joint passes its limit (a profile's ``stale_ms``); the age keeps
growing while a port is gone or a servo is silent, since nothing refreshes it.

Reconnect: every bus reopens a lost port through one path
(:class:`~firmware_bridge.reconnect.PortKeeper`); ``BusHealth.connected`` is False from the
moment the bus sees the port fail until it is open and configured again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Telemetry:
    """The controller's latest report. Arrays are read-only copies."""

    positions: np.ndarray  # (a,) rad, measured
    velocities: np.ndarray  # (a,) rad/s, measured
    efforts: np.ndarray  # (a,) Nm, applied
    # (a,) float64, read-only: host monotonic time each joint's values were measured (-inf: never)
    measured_at: np.ndarray
    received_at: float  # host monotonic time this report was made (frame decoded, cycle ended)
    sent_at: float | None  # controller send time mapped to the host clock; None before time sync
    torque_enabled: bool
    holding: bool  # safe hold engaged (watchdog or fault)
    faults: int  # latched fault bits (firmware_bridge.messages.Fault), until clear_faults()
    # the firmware's echo: header seq of the last setpoint it applied. None on vendor buses: their
    # servos echo nothing, so "applied" cannot be known (the goal registers are write-only here)
    last_applied_seq: int | None = None
    controller_time_us: int | None = None  # firmware clock when sent (u32 us, wraps); None: no clock
    # (a,) bool, read-only: True where this joint was not read in the newest cycle and its values
    # are the last good ones (vendor buses; None where the bus reads all joints in one frame)
    stale: np.ndarray | None = None
    servo_errors: tuple[int, ...] | None = None  # per joint newest ServoError bits (vendor buses)

    def joint_age_s(self, now: float) -> np.ndarray:
        """(a,) seconds since each joint was measured, at host monotonic time ``now`` (inf: never)."""
        return now - self.measured_at


@dataclass(frozen=True)
class BusHealth:
    """What every bus reports; cheap to take, safe to log."""

    connected: bool
    configured: bool  # limits (and watchdog) in place since the last (re)connect
    torque_enabled: bool
    faults: int  # Fault bits now latched or reported (any joint)
    frames_sent: int
    frames_received: int
    decode_errors: int  # all packets the host decoder dropped, CRC/checksum errors included
    setpoints_sent: int
    setpoints_rejected: int  # non-finite setpoints refused (the last good one held)
    setpoints_clamped: int  # setpoints that had at least one joint clamped to its limits
    reconnects: int
    stream_overruns: int  # stream ticks skipped because the streamer ran late
    rtt_p50_ms: float | None  # firmware: setpoint -> its echo; servo bus: one write + read cycle
    rtt_p99_ms: float | None
    telemetry_age_s: float | None  # time since the last telemetry
    stale_joints: int  # joints whose newest values are the last good ones, not fresh
    # replies that did not come in time: servo status packets (one per silent servo per cycle),
    # firmware acknowledgements (one per unanswered attempt). The loop reports it next to faults
    missed_replies: int


@dataclass(frozen=True)
class LinkHealth(BusHealth):
    """This package's own protocol adds its CRC, sequence and clock estimates."""

    crc_errors: int
    rx_seq_gaps: int  # controller frames lost on the way to the host
    controller_rx_bad: int  # host frames the controller dropped as corrupt
    controller_rx_gaps: int  # host frames that never reached the controller
    controller_rx_stale: int  # setpoints the controller refused as duplicate or out of order
    clock_offset_us: float | None  # controller clock minus host clock
    clock_drift_ppm: float | None  # controller clock rate minus host clock rate


@runtime_checkable
class MotorBus(Protocol):
    """Start, send setpoints, read the latest telemetry, check health, close with the motors safe."""

    def start(self) -> None:
        """Open the port, configure the motors and (with auto-enable) enable torque holding where
        they are. Raises TransportError (port) or LinkError (motors) after releasing everything."""
        ...

    def send_setpoint(self, positions: np.ndarray) -> None:
        """Store a (a,) joint position target; the bus sends the newest one every period (it keeps
        only the latest target, never a queue). Clamped to limits; non-finite input is refused and
        the previous target held. Never blocks on the port."""
        ...

    def latest_telemetry(self) -> Telemetry | None:
        """The newest telemetry, or None before the first frame."""
        ...

    def health(self) -> BusHealth:
        """A snapshot of counters and estimates (a subclass of BusHealth per bus kind)."""
        ...

    def set_torque(self, enable: bool) -> None:
        """Enable (holding where the motors are) or disable torque. Raises LinkError."""
        ...

    def clear_faults(self) -> None:
        """Clear latched faults (re-enabling torque with auto-enable); a cause that persists latches
        again at the next report. Raises LinkError."""
        ...

    def close(self) -> None:
        """Best effort: disable torque (or hold), stop threads, release the port. Never raises."""
        ...

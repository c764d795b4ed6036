"""The one interface the edge runtime uses to reach the motors.

Any transport implements :class:`MotorBus`: this package's own protocol (``FirmwareBridge``) and,
later, vendor buses (Feetech STS, Dynamixel 2.0 sync write/read) behind the same four methods.
The runtime never sees frames, ports or sequence numbers.

Conventions: arrays are shape (a,) float32, a = number of joints, in the controller's joint
order; positions in rad, velocities in rad/s, efforts in Nm (or the bus's native torque unit
scaled to Nm); times are host ``time.monotonic()`` seconds.
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
    last_applied_seq: int  # sequence number of the last setpoint the controller applied
    controller_time_us: int  # controller clock when sent (u32 microseconds, wraps)
    received_at: float  # host monotonic time the frame was decoded
    sent_at: float | None  # controller send time mapped to the host clock; None before time sync
    torque_enabled: bool
    holding: bool  # safe hold engaged (watchdog or fault)
    faults: int  # latched fault bits (firmware_bridge.messages.Fault)


@dataclass(frozen=True)
class LinkHealth:
    """Counters and estimates; cheap to take, safe to log."""

    connected: bool
    configured: bool  # limits and watchdog acknowledged since the last (re)connect
    torque_enabled: bool
    faults: int
    frames_sent: int
    frames_received: int
    decode_errors: int  # all packets the host decoder dropped, CRC errors included
    crc_errors: int
    rx_seq_gaps: int  # controller frames lost on the way to the host
    controller_rx_bad: int  # host frames the controller dropped as corrupt
    controller_rx_gaps: int  # host frames that never reached the controller
    controller_rx_stale: int  # setpoints the controller refused as duplicate or out of order
    setpoints_sent: int
    setpoints_rejected: int  # non-finite or wrongly shaped setpoints refused (the last good one held)
    setpoints_clamped: int  # setpoints that had at least one joint clamped to its limits
    reconnects: int
    stream_overruns: int  # stream ticks skipped because the streamer ran late
    rtt_p50_ms: float | None  # setpoint send -> telemetry echo of its sequence number
    rtt_p99_ms: float | None
    clock_offset_us: float | None  # controller clock minus host clock
    clock_drift_ppm: float | None  # controller clock rate minus host clock rate
    telemetry_age_s: float | None  # time since the last telemetry frame


@runtime_checkable
class MotorBus(Protocol):
    """Send setpoints, read the latest telemetry, check health, close with the motors made safe."""

    def send_setpoint(self, positions: np.ndarray) -> None:
        """Queue a (a,) joint position target. Clamped to limits; non-finite input is refused and
        the previous target held. Never blocks on the port."""
        ...

    def latest_telemetry(self) -> Telemetry | None:
        """The newest telemetry, or None before the first frame."""
        ...

    def health(self) -> LinkHealth:
        """A snapshot of counters and estimates."""
        ...

    def close(self) -> None:
        """Best effort: disable torque (or hold), stop threads, release the port. Never raises."""
        ...

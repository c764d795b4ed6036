"""Frozen configuration of the host side: joint limits, the link, the streaming bridge.

Units: radians, radians per second, seconds unless a field name says otherwise. Joint order is
the order of the arrays handed to ``send_setpoint`` and is the controller's joint order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


@dataclass(frozen=True)
class JointLimits:
    """Per-joint limits; the host clamps to them and the controller enforces them again."""

    position_min: tuple[float, ...]  # rad, lowest allowed target
    position_max: tuple[float, ...]  # rad, highest allowed target
    velocity_max: tuple[float, ...]  # rad/s, motor speed limit
    step_max: tuple[float, ...]  # rad per controller tick, the most a target may move in one tick

    def __post_init__(self) -> None:
        n = len(self.position_min)
        lengths = {len(self.position_max), len(self.velocity_max), len(self.step_max)}
        if n == 0 or lengths != {n}:
            raise ValueError(f"limit arrays need one equal, non-zero length, got {n} and {sorted(lengths)}")
        for j in range(n):
            lo, hi = self.position_min[j], self.position_max[j]
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"joint {j}: position range [{lo!r}, {hi!r}] must be finite with min < max")
            _positive(f"joint {j} velocity_max", self.velocity_max[j])
            _positive(f"joint {j} step_max", self.step_max[j])

    @property
    def n_joints(self) -> int:
        return len(self.position_min)

    @classmethod
    def uniform(
        cls, n_joints: int, position: float = math.pi, velocity: float = 6.0, step: float = 0.02
    ) -> JointLimits:
        """Same symmetric limits ``[-position, position]`` on every joint."""
        if n_joints < 1:
            raise ValueError(f"n_joints must be >= 1, got {n_joints}")
        return cls(
            (-position,) * n_joints, (position,) * n_joints, (velocity,) * n_joints, (step,) * n_joints
        )


@dataclass(frozen=True)
class LinkConfig:
    """How the host opens and talks to one serial port."""

    port: str  # device path (/dev/ttyTHS1, /dev/ttyACM0, or the emulator's pty)
    baudrate: int = 1_000_000  # ignored by a pseudo-terminal
    read_timeout_s: float = 0.02  # why: bounds how long the reader takes to notice close()
    write_timeout_s: float = 0.05  # a write that blocks longer counts as a lost port, not a hang
    ack_timeout_s: float = 0.05  # per attempt, for acknowledged commands
    retries: int = 5  # attempts per acknowledged command
    reconnect_min_s: float = 0.02  # first backoff after the port vanished
    reconnect_max_s: float = 0.5  # backoff doubles up to this

    def __post_init__(self) -> None:
        if not self.port:
            raise ValueError("port must be a non-empty path")
        if self.baudrate <= 0:
            raise ValueError(f"baudrate must be > 0, got {self.baudrate}")
        for name in ("read_timeout_s", "write_timeout_s", "ack_timeout_s", "reconnect_min_s"):
            _positive(name, getattr(self, name))
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(
                f"reconnect_max_s {self.reconnect_max_s} must be >= reconnect_min_s {self.reconnect_min_s}"
            )
        if self.retries < 1:
            raise ValueError(f"retries must be >= 1, got {self.retries}")


@dataclass(frozen=True)
class BridgeConfig:
    """What the streaming bridge asks of the controller and how it streams."""

    limits: JointLimits  # also sent to the controller (CONFIGURE_LIMITS)
    rate_hz: float = 500.0  # setpoint stream rate (each frame also feeds the watchdog)
    watchdog_ms: int = 100  # controller holds when nothing valid arrives for this long
    telemetry_hz: int = 250  # controller telemetry rate
    timesync_period_s: float = 0.25  # one TIME_SYNC_REQUEST this often
    auto_enable: bool = True  # enable torque after (re)connect; a watchdog fault is cleared first
    close_timeout_s: float = 0.3  # how long close() tries to get the torque-off acknowledged

    def __post_init__(self) -> None:
        _positive("rate_hz", self.rate_hz)
        _positive("timesync_period_s", self.timesync_period_s)
        _positive("close_timeout_s", self.close_timeout_s)
        if not 5 <= self.watchdog_ms <= 60_000:
            raise ValueError(f"watchdog_ms must be in 5..60000, got {self.watchdog_ms}")
        if not 1 <= self.telemetry_hz <= 10_000:
            raise ValueError(f"telemetry_hz must be in 1..10000, got {self.telemetry_hz}")
        if 1000.0 / self.rate_hz >= self.watchdog_ms:
            period_ms = 1000.0 / self.rate_hz
            raise ValueError(f"stream period {period_ms:.1f} ms must be < watchdog_ms {self.watchdog_ms}")

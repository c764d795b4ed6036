"""Motor model of the emulated controller: PD to the target, torque limit, first-order torque lag,
viscous friction, velocity limit. Semi-implicit Euler at the controller tick.

Per joint, each tick of length dt::

    u    = clip(kp * (target - q) - kd * v, -torque_max, torque_max)   # PD, saturated
    tau += (u - tau) * dt / (lag_s + dt)                               # first-order lag (backward Euler)
    v    = clip(v + dt * (tau - friction * v) / inertia, -v_max, v_max)
    q   += dt * v

With torque off, u = 0: the joint coasts to rest on friction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MotorParams:
    kp: float = 20.0  # Nm/rad, position gain
    kd: float = 0.8  # Nm s/rad, velocity gain
    torque_max: float = 5.0  # Nm, driver saturation
    inertia: float = 0.01  # kg m^2, rotor + link reflected to the joint
    lag_s: float = 0.005  # s, time constant of the torque (current loop + driver)
    friction: float = 0.05  # Nm s/rad, viscous

    def __post_init__(self) -> None:
        for name in ("kp", "torque_max", "inertia"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("kd", "lag_s", "friction"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")


class MotorModel:
    """State of ``n`` joints: position q (rad), velocity v (rad/s), applied torque tau (Nm)."""

    def __init__(self, n: int, params: MotorParams | None = None, q0: np.ndarray | None = None) -> None:
        self.p = params or MotorParams()
        self.q = np.zeros(n) if q0 is None else np.array(q0, dtype=np.float64)
        self.v = np.zeros(n)
        self.tau = np.zeros(n)
        self._u = np.zeros(n)  # preallocated: the tick allocates nothing

    def step(self, target: np.ndarray | None, dt: float, v_max: np.ndarray) -> None:
        p, u = self.p, self._u
        if target is None:
            u.fill(0.0)
        else:
            np.subtract(target, self.q, out=u)
            u *= p.kp
            u -= p.kd * self.v
            np.clip(u, -p.torque_max, p.torque_max, out=u)
        self.tau += (u - self.tau) * (dt / (p.lag_s + dt))
        self.v += dt * (self.tau - p.friction * self.v) / p.inertia
        np.clip(self.v, -v_max, v_max, out=self.v)
        self.q += dt * self.v

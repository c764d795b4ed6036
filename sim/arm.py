"""A planar revolute arm: kinematics and a joint-space motor model, batched over b arms.

Units: metres, radians, seconds. Joint j rotates relative to link j-1; joint 0 relative to
the world x axis, around the base at the origin. Shapes: b arms, j joints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ArmConfig:
    link_lengths: tuple[float, ...] = (0.55, 0.45, 0.35)  # m, base to end effector
    q_min: tuple[float, ...] = (-0.35, -2.9, -2.9)  # rad, joint lower limits
    q_max: tuple[float, ...] = (3.49, 2.9, 2.9)  # rad, joint upper limits
    kp: float = 900.0  # 1/s^2, PD stiffness per unit inertia (omega_n = 30 rad/s)
    kd: float = 60.0  # 1/s, PD damping per unit inertia (critically damped)
    accel_max: float = 60.0  # rad/s^2, torque limit per unit inertia
    vel_max: float = 3.0  # rad/s, velocity limit
    physics_hz: float = 200.0  # integration rate
    control_hz: float = 50.0  # setpoint rate; physics_hz must be a multiple

    def __post_init__(self) -> None:
        n = len(self.link_lengths)
        if n < 3:
            raise ValueError(f"the arm needs at least 3 joints, got {n}")
        if len(self.q_min) != n or len(self.q_max) != n:
            raise ValueError("q_min and q_max need one entry per joint")
        ratio = self.physics_hz / self.control_hz
        if ratio < 1 or abs(ratio - round(ratio)) > 1e-9:
            raise ValueError(
                f"physics_hz {self.physics_hz} must be a multiple of control_hz {self.control_hz}"
            )

    @property
    def num_joints(self) -> int:
        return len(self.link_lengths)

    @property
    def substeps(self) -> int:
        return round(self.physics_hz / self.control_hz)

    @property
    def reach(self) -> float:
        return float(sum(self.link_lengths))


def joint_positions(cfg: ArmConfig, q: np.ndarray) -> np.ndarray:
    """Positions of the base, every joint and the end effector: q (b, j) -> (b, j + 1, 2)."""
    angles = np.cumsum(q, axis=-1)  # (b, j) absolute link angles
    lengths = np.asarray(cfg.link_lengths)
    steps = np.stack([np.cos(angles), np.sin(angles)], axis=-1) * lengths[:, None]  # (b, j, 2)
    pts = np.zeros(q.shape[:-1] + (cfg.num_joints + 1, 2))
    pts[..., 1:, :] = np.cumsum(steps, axis=-2)
    return pts


def end_effector(cfg: ArmConfig, q: np.ndarray) -> np.ndarray:
    """End-effector position: q (b, j) -> (b, 2)."""
    return joint_positions(cfg, q)[..., -1, :]


def jacobian(cfg: ArmConfig, q: np.ndarray) -> np.ndarray:
    """End-effector Jacobian d(x, y)/dq: q (b, j) -> (b, 2, j)."""
    angles = np.cumsum(q, axis=-1)
    lengths = np.asarray(cfg.link_lengths)
    sx = -np.sin(angles) * lengths  # (b, j) contribution of link k to dx/dq_m for m <= k
    cx = np.cos(angles) * lengths
    # dx/dq_m = sum_{k >= m} of link k's term: a reversed cumulative sum.
    jx = np.flip(np.cumsum(np.flip(sx, -1), -1), -1)
    jy = np.flip(np.cumsum(np.flip(cx, -1), -1), -1)
    return np.stack([jx, jy], axis=-2)


def clamp_to_limits(cfg: ArmConfig, q: np.ndarray) -> np.ndarray:
    """Clip joint positions (..., j) to the joint limits. NaN or inf is refused with ValueError."""
    if not np.all(np.isfinite(q)):
        raise ValueError("joint targets contain NaN or inf")
    return np.clip(q, cfg.q_min, cfg.q_max)


def motor_step(
    cfg: ArmConfig, q: np.ndarray, qd: np.ndarray, target: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Advance the joint-space motor model by one control period (cfg.substeps physics steps).

    Each joint is a unit inertia driven by a PD controller towards its position target, with
    acceleration (torque) and velocity limits, integrated semi-implicitly at physics_hz;
    positions stop at the joint limits. q, qd, target: (b, j). Returns new (q, qd).
    """
    h = 1.0 / cfg.physics_hz
    lo, hi = np.asarray(cfg.q_min), np.asarray(cfg.q_max)
    q, qd = q.copy(), qd.copy()
    for _ in range(cfg.substeps):
        acc = np.clip(cfg.kp * (target - q) - cfg.kd * qd, -cfg.accel_max, cfg.accel_max)
        qd = np.clip(qd + h * acc, -cfg.vel_max, cfg.vel_max)
        q = q + h * qd
        at_limit = (q < lo) | (q > hi)
        q = np.clip(q, lo, hi)
        qd = np.where(at_limit, 0.0, qd)
    return q, qd

"""Scripted expert: a minimum-jerk reach through a via-point beside the obstacle.

Per episode the expert picks a side (left or right of the start->target line), builds a
Cartesian path that passes the via-point beside the obstacle, times it with the minimum-jerk
profile, converts it to joint targets by damped-least-squares IK, leads the targets by the
PD lag, and adds small temporally correlated action noise. Batched over b episodes.

The IK tracks the end effector's position and the heading of the last link (x, y, phi): the
heading turns from the start posture's to the path's tangent early in the motion, so the last
link trails behind the end effector along the path and both ways around the obstacle are free. With
position alone the 3-joint arm is redundant, and whichever way the elbow folds, one of the
two sides sweeps a link through the obstacle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.arm import ArmConfig, clamp_to_limits, end_effector, jacobian
from sim.scene import Scenes


@dataclass(frozen=True)
class ExpertConfig:
    clearance: float = 0.12  # m, via-point distance beyond the obstacle's surface
    base_duration: float = 0.6  # s, duration = base + per_metre * path length
    per_metre: float = 1.8  # s/m
    ik_iters: int = 4  # DLS iterations per control step
    ik_damping: float = 0.05  # DLS damping lambda
    turn_until: float = 1.0  # path fraction by which the last link follows the path tangent
    heading_weight: float = 0.05  # weight of the heading task against the position task
    noise_std: float = 0.025  # rad, stationary std of the executed action noise (DART-style)
    noise_corr: float = 0.85  # AR(1) correlation of the noise between control steps
    lead_steps: int = 3  # command the path this many steps ahead (kd / kp at 50 Hz ~ 3)


def min_jerk(tau: np.ndarray) -> np.ndarray:
    """Minimum-jerk time scaling s(tau) = 10 tau^3 - 15 tau^4 + 6 tau^5 on tau clipped to [0, 1]."""
    tau = np.clip(tau, 0.0, 1.0)
    return tau**3 * (10.0 - 15.0 * tau + 6.0 * tau**2)


def cartesian_path(
    start: np.ndarray, goal: np.ndarray, via: np.ndarray, frac: np.ndarray, s: np.ndarray
) -> np.ndarray:
    """Path through a via-point: x(s) = p0 + s (pT - p0) + 4 s (1 - s) c, with c chosen so that
    x(frac) = via. start, goal, via: (b, 2); frac: (b,); s: (b, t) in [0, 1] -> (b, t, 2) m."""
    delta = goal - start
    c = (via - start - frac[:, None] * delta) / (4 * frac * (1 - frac))[:, None]
    s = s[..., None]
    return start[:, None] + s * delta[:, None] + 4 * s * (1 - s) * c[:, None]


def path_tangent(
    start: np.ndarray, goal: np.ndarray, via: np.ndarray, frac: np.ndarray, s: np.ndarray
) -> np.ndarray:
    """dx/ds of `cartesian_path` = (pT - p0) + 4 (1 - 2 s) c: (b, t, 2)."""
    delta = goal - start
    c = (via - start - frac[:, None] * delta) / (4 * frac * (1 - frac))[:, None]
    return delta[:, None] + 4 * (1 - 2 * s[..., None]) * c[:, None]


def via_points(scenes: Scenes, side: np.ndarray, start: np.ndarray, clearance: float) -> np.ndarray:
    """Via-point beside the obstacle: side +1 left, -1 right of start->goal. Returns (b, 2) m."""
    u = scenes.goal - start
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    n = np.stack([-u[:, 1], u[:, 0]], -1)
    return scenes.obstacle + side[:, None] * n * (scenes.obstacle_r + clearance)[:, None]


def ik_track(
    arm: ArmConfig, q0: np.ndarray, path: np.ndarray, heading: np.ndarray, cfg: ExpertConfig
) -> np.ndarray:
    """Joint trajectory following an end-effector path and last-link heading by damped least
    squares: q0 (b, j), path (b, t, 2) m, heading (b, t) rad -> (b, t, j) rad. Joints beyond
    the third are held in the null space of the (x, y, phi) task."""
    b, t, _ = path.shape
    q = q0.copy()
    out = np.empty((b, t, arm.num_joints))
    eye3 = np.eye(3)
    for k in range(t):
        for _ in range(cfg.ik_iters):
            # Weighted task: position exact, heading soft (it gives way near joint limits).
            w = cfg.heading_weight
            jac = np.concatenate([jacobian(arm, q), np.full((b, 1, arm.num_joints), w)], 1)  # (b, 3, j)
            err = np.concatenate(
                [path[:, k] - end_effector(arm, q), w * (heading[:, k] - q.sum(-1))[:, None]], -1
            )
            jjt = jac @ jac.transpose(0, 2, 1) + cfg.ik_damping**2 * eye3
            dq = (jac.transpose(0, 2, 1) @ np.linalg.solve(jjt, err[..., None]))[..., 0]
            q = np.clip(q + dq, arm.q_min, arm.q_max)
        out[:, k] = q
    return out


def expert_actions(
    arm: ArmConfig,
    scenes: Scenes,
    side: np.ndarray,
    num_steps: int,
    cfg: ExpertConfig,
    noise: np.ndarray | None = None,
) -> np.ndarray:
    """Joint-target actions for num_steps control steps: (b, num_steps, j) rad.

    side (b,) in {-1, +1}. noise: optional white N(0, 1) draws (b, num_steps, j), shaped here
    into AR(1) noise with cfg.noise_std and cfg.noise_corr; None gives the noise-free expert.
    """
    dt = 1.0 / arm.control_hz
    start = end_effector(arm, scenes.q0)
    frac = np.einsum("bc,bc->b", scenes.obstacle - start, scenes.goal - start) / np.sum(
        (scenes.goal - start) ** 2, -1
    )
    via = via_points(scenes, side, start, cfg.clearance)
    length = np.linalg.norm(via - start, axis=-1) + np.linalg.norm(scenes.goal - via, axis=-1)
    duration = cfg.base_duration + cfg.per_metre * length  # (b,) s
    times = (np.arange(num_steps) + 1 + cfg.lead_steps) * dt  # (t,) time the target is for
    s = min_jerk(times[None] / duration[:, None])  # (b, t)
    phi0 = scenes.q0.sum(-1)[:, None]  # (b, 1)
    tangent = path_tangent(start, scenes.goal, via, frac, s)
    phi1 = phi0 + np.angle(np.exp(1j * (np.arctan2(tangent[..., 1], tangent[..., 0]) - phi0)))
    heading = phi0 + min_jerk(s / cfg.turn_until) * (phi1 - phi0)  # (b, t)
    q = ik_track(arm, scenes.q0, cartesian_path(start, scenes.goal, via, frac, s), heading, cfg)
    if noise is not None:
        shaped = np.empty_like(noise)
        innov = cfg.noise_std * np.sqrt(1 - cfg.noise_corr**2)
        shaped[:, 0] = cfg.noise_std * noise[:, 0]
        for k in range(1, num_steps):
            shaped[:, k] = cfg.noise_corr * shaped[:, k - 1] + innov * noise[:, k]
        q = q + shaped
    return clamp_to_limits(arm, q)

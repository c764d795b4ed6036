"""Scenes: coloured targets, one obstacle between the start pose and the instructed target.

A batch of b scenes is a `Scenes` of arrays. Every reach has two ways around the obstacle
(left and right of the straight line from the start to the target); `sim.episodes` keeps only
scenes where the scripted expert succeeds on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from sim.arm import ArmConfig, end_effector, joint_positions

COLORS: tuple[str, ...] = ("red", "green", "blue")
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
}


@dataclass(frozen=True)
class SceneConfig:
    num_targets: int = 3  # coloured targets, one of them instructed
    target_radius: float = 0.06  # m, drawn disc radius
    success_tol: float = 0.07  # m, end effector to instructed target centre
    obstacle_radius: tuple[float, float] = (0.08, 0.11)  # m, uniform range
    target_dist: tuple[float, float] = (1.05, 1.28)  # m from the base, uniform range
    target_angle: tuple[float, float] = (0.95, 2.19)  # rad from the x axis (55..125 deg)
    min_target_sep: float = 0.3  # m between any two targets
    min_reach: float = 0.45  # m from the start end effector to the instructed target
    obstacle_frac: tuple[float, float] = (0.42, 0.58)  # obstacle position along start->target
    link_radius: float = 0.02  # m, links are capsules of this radius for collisions
    # rad, nominal start posture: end effector at (0, 0.6) m, last link pointing up (+y).
    start_q: tuple[float, ...] = (0.632, 2.677, -1.738)
    start_q_noise: float = 0.05  # rad, uniform +- perturbation of the start posture

    def __post_init__(self) -> None:
        if not 2 <= self.num_targets <= len(COLORS):
            raise ValueError(f"num_targets must be 2..{len(COLORS)}, got {self.num_targets}")


@dataclass(frozen=True)
class Scenes:
    """b scenes. targets (b, k, 2) m; obstacle (b, 2) m; obstacle_r (b,) m; instructed (b,) index
    into targets (target k has colour COLORS[k]); q0 (b, j) rad start posture."""

    targets: np.ndarray
    obstacle: np.ndarray
    obstacle_r: np.ndarray
    instructed: np.ndarray
    q0: np.ndarray
    FIELDS: ClassVar[tuple[str, ...]] = ("targets", "obstacle", "obstacle_r", "instructed", "q0")

    def __len__(self) -> int:
        return len(self.instructed)

    @property
    def goal(self) -> np.ndarray:
        """Instructed target centre, (b, 2)."""
        return self.targets[np.arange(len(self)), self.instructed]

    def select(self, idx: np.ndarray) -> Scenes:
        return Scenes(*(getattr(self, f)[idx] for f in FIELDS))

    @staticmethod
    def concat(parts: list[Scenes]) -> Scenes:
        return Scenes(*(np.concatenate([getattr(p, f) for p in parts]) for f in FIELDS))


FIELDS = Scenes.FIELDS


def sample_scene(rng: np.random.Generator, arm: ArmConfig, cfg: SceneConfig) -> Scenes:
    """Draw one scene's geometry (b = 1) with rejection on target spacing and reach length.

    Feasibility for the expert is checked separately (sim.episodes.sample_valid_scenes).
    """
    j = arm.num_joints
    q0 = np.asarray(cfg.start_q[:j]) + rng.uniform(-cfg.start_q_noise, cfg.start_q_noise, j)
    p0 = end_effector(arm, q0[None])[0]
    for _ in range(1000):
        ang = rng.uniform(*cfg.target_angle, cfg.num_targets)
        dist = rng.uniform(*cfg.target_dist, cfg.num_targets)
        targets = np.stack([dist * np.cos(ang), dist * np.sin(ang)], -1)  # (k, 2)
        sep = np.linalg.norm(targets[:, None] - targets[None], axis=-1) + np.eye(cfg.num_targets)
        k = int(rng.integers(cfg.num_targets))
        if sep.min() < cfg.min_target_sep or np.linalg.norm(targets[k] - p0) < cfg.min_reach:
            continue
        frac = rng.uniform(*cfg.obstacle_frac)
        obstacle = p0 + frac * (targets[k] - p0)
        # Distractor targets must not sit inside the obstacle.
        r_obs = rng.uniform(*cfg.obstacle_radius)
        if np.linalg.norm(targets - obstacle, axis=-1).min() < r_obs + cfg.target_radius + 0.05:
            continue
        # The start posture must be well clear of the obstacle.
        pts = joint_positions(arm, q0[None])[0]
        if segment_point_distance(pts[:-1], pts[1:], obstacle).min() < r_obs + cfg.link_radius + 0.08:
            continue
        return Scenes(targets[None], obstacle[None], np.array([r_obs]), np.array([k]), q0[None])
    raise RuntimeError("could not sample a scene in 1000 tries: check SceneConfig ranges")


def segment_point_distance(a: np.ndarray, b: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Distance from points p to segments a-b, broadcasting over leading dims; last dim 2."""
    ab = b - a
    t = np.clip(np.sum((p - a) * ab, -1) / np.maximum(np.sum(ab * ab, -1), 1e-12), 0.0, 1.0)
    return np.linalg.norm(a + t[..., None] * ab - p, axis=-1)


def collides(arm: ArmConfig, cfg: SceneConfig, scenes: Scenes, q: np.ndarray) -> np.ndarray:
    """Whether any link capsule touches the obstacle: q (b, j) -> (b,) bool."""
    pts = joint_positions(arm, q)  # (b, j + 1, 2)
    dist = segment_point_distance(pts[:, :-1], pts[:, 1:], scenes.obstacle[:, None, :])  # (b, j)
    return np.any(dist < (scenes.obstacle_r[:, None] + cfg.link_radius), axis=-1)


def reached(arm: ArmConfig, cfg: SceneConfig, scenes: Scenes, q: np.ndarray) -> np.ndarray:
    """Whether the end effector is within the success tolerance of the instructed target: (b,)."""
    return np.linalg.norm(end_effector(arm, q) - scenes.goal, axis=-1) < cfg.success_tol


def side_of_path(start: np.ndarray, goal: np.ndarray, obstacle: np.ndarray, path: np.ndarray) -> np.ndarray:
    """Which way around the obstacle a path goes: +1 left, -1 right, 0 undecided.

    start, goal, obstacle: (b, 2); path: (b, t, 2) end-effector points. The side is the sign of
    the path's largest perpendicular excursion from the start->goal line, measured from the
    obstacle's foot on that line; excursions under 1 cm count as undecided.
    """
    u = goal - start
    u = u / np.maximum(np.linalg.norm(u, axis=-1, keepdims=True), 1e-9)
    n = np.stack([-u[:, 1], u[:, 0]], -1)  # left normal
    perp = np.einsum("btc,bc->bt", path - obstacle[:, None], n)  # (b, t)
    idx = np.argmax(np.abs(perp), axis=-1)
    peak = np.nan_to_num(perp[np.arange(len(perp)), idx])  # a NaN plan (rejected later) is undecided
    return np.where(np.abs(peak) < 0.01, 0, np.sign(peak)).astype(np.int64)

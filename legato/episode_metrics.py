"""Per-episode metrics of a rollout and their means over a cell (legato.metrics does the math).

Task-agnostic: the environment recorded, per chunk, whether the route was still open and the
route its plan takes (legato.rollout.ChunkRecord), so mode switches need no geometry here.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from legato import metrics as M

# Per-episode values, in this order in every report (episodes.npz columns).
EPISODE_KEYS: tuple[str, ...] = (
    "success", "completion_s", "steps", "boundary_jump", "boundary_ratio", "overlap_rmse", "nsparc_cmd",
    "nsparc_exec", "ldj_cmd", "ldj_exec", "msj_cmd", "msj_exec", "mode_switches", "stall_fraction",
    "collided", "route",
)  # fmt: skip
# Added after the first reports were written: legato.cross_compare reads older reports without them.
LATER_KEYS: frozenset[str] = frozenset({"route"})


def episode_metrics(res, i: int, control_hz: float) -> dict[str, float]:
    """Per-episode metrics of episode i of a legato.rollout.RolloutResult."""
    dt = 1.0 / control_hz
    cmd = res.commanded[i]
    n = int(np.sum(~np.isnan(cmd[:, 0])))
    cmd = cmd[:n]
    joints, ee = res.joints[i, : n + 1], res.ee[i, : n + 1]
    alive = [c for c in res.chunks if c.alive[i] and c.start < n]
    jump, ratio = M.boundary_discontinuity(cmd, np.array([c.start for c in alive[1:]], dtype=int))
    overlaps = [
        M.overlap_inconsistency(a.chunk[i], a.origin, b.chunk[i], b.origin, b.start)
        for a, b in zip(alive, alive[1:], strict=False)
    ]
    labels = [int(c.route[i]) for c in alive if c.route_open[i]]
    success = bool(res.success[i])
    until = int(res.steps_to_success[i]) if success else n
    return {
        "success": float(success),
        "completion_s": until * dt if success else math.nan,
        "steps": float(n),
        "boundary_jump": jump,
        "boundary_ratio": ratio,
        "overlap_rmse": float(np.nanmean(overlaps)) if overlaps else math.nan,
        "nsparc_cmd": M.nsparc(M.speed_profile(cmd, dt), fs=1 / dt),
        "nsparc_exec": M.nsparc(M.speed_profile(joints, dt), fs=1 / dt),
        "ldj_cmd": M.log_dimensionless_jerk(cmd, dt),
        "ldj_exec": M.log_dimensionless_jerk(joints, dt),
        "msj_cmd": M.mean_squared_jerk(cmd, dt),
        "msj_exec": M.mean_squared_jerk(joints, dt),
        "mode_switches": float(M.mode_switches(np.array(labels))),
        "stall_fraction": M.stall_fraction(ee, dt, until=until),
        "collided": float(res.collided[i]),
        # The route the episode committed to: its last chunk's plan while the choice was open
        # (+1 left, -1 right; NaN if the choice never opened). Completion times of two methods
        # mean little unless they took the same route (push-wall's right detour is ~50 % longer).
        "route": float(labels[-1]) if labels else math.nan,
    }


def episode_table(res, control_hz: float) -> np.ndarray:
    """(episodes, len(EPISODE_KEYS)) float64: episode_metrics of every episode, in key order."""
    rows = [episode_metrics(res, i, control_hz) for i in range(len(res.success))]
    return np.array([[r[k] for k in EPISODE_KEYS] for r in rows], dtype=np.float64)


def aggregate(table: np.ndarray, dt: float) -> dict[str, float]:
    """Means over a cell's episodes (NaN entries skipped), the success rate with its Wilson 95 %
    interval, the collision rate, the throughput and the share of routed episodes that went left.
    table: episode_table's (episodes, k)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (e.g. no successes)
        out = {k: float(np.nanmean(table[:, j])) for j, k in enumerate(EPISODE_KEYS)}
    n = len(table)
    wins = int(table[:, EPISODE_KEYS.index("success")].sum())
    lo, hi = M.wilson_interval(wins, n)
    steps = int(table[:, EPISODE_KEYS.index("steps")].sum())
    out.update(success_rate=wins / n, success_ci_low=lo, success_ci_high=hi, episodes=float(n))
    out.update(collision_rate=out.pop("collided"), throughput_per_min=M.throughput(wins, steps, dt))
    route = table[:, EPISODE_KEYS.index("route")]
    routed = route[np.isfinite(route)]
    out["left_route"] = float(np.mean(routed > 0)) if len(routed) else math.nan
    del out["success"], out["route"]
    return out

"""The omega schedule: how much of each action in a chunk is already known.

Conventions (shared with training, which imports this module; see docs/method.md):
- A chunk has H actions, index i = 0..H-1 is the action's position in the chunk.
- d is the inference delay in control steps: the first d actions of the new chunk are
  executed from the previous chunk while the new one is computed, so they are frozen.
- r is the ramp length (the smoothness knob).

    omega_i = 1                       for i < d
    omega_i = (d + r - i) / (r + 1)   for d <= i < d + r
    omega_i = 0                       for i >= d + r

omega lies in [0, 1]. The shape used in training must be the one used at inference; the
shape's name is recorded in every checkpoint and bundle ("linear" is the only one built in).
"""

from __future__ import annotations

import numpy as np

SCHEDULE_SHAPES = ("linear",)


def omega_schedule(d: int, r: int, horizon: int, shape: str = "linear") -> np.ndarray:
    """Return omega for one chunk, shape (h,), float32.

    d: delay in control steps, 0 <= d <= horizon. r: ramp length, r >= 0.
    """
    if shape not in SCHEDULE_SHAPES:
        raise ValueError(f"unknown omega schedule shape {shape!r}; known: {', '.join(SCHEDULE_SHAPES)}")
    if not 0 <= d <= horizon:
        raise ValueError(f"delay d={d} must lie in 0..{horizon} (the chunk length)")
    if r < 0:
        raise ValueError(f"ramp length r={r} must be >= 0")
    return omega_batch(np.array([d]), np.array([r]), horizon)[0]


def omega_batch(d: np.ndarray, r: np.ndarray, horizon: int) -> np.ndarray:
    """Vectorised linear schedule: d, r of shape (b,) integers -> omega of shape (b, h), float32."""
    d = np.asarray(d, dtype=np.int64)[:, None]  # (b, 1)
    r = np.asarray(r, dtype=np.int64)[:, None]
    i = np.arange(horizon, dtype=np.int64)[None, :]  # (1, h)
    ramp = (d + r - i) / (r + 1.0)
    omega = np.where(i < d, 1.0, np.where(i < d + r, ramp, 0.0))
    return omega.astype(np.float32)


def delay_from_latencies(latencies_s: np.ndarray, period_s: float, d_max: int) -> tuple[int, bool]:
    """RTC's delay rule: ceil(max of recent latencies / control period), clipped to d_max.

    latencies_s: the last b measured inference latencies in seconds, shape (b,).
    Returns (d, clipped) so that the caller can log when the clip was needed.
    """
    if period_s <= 0:
        raise ValueError(f"control period must be positive, got {period_s}")
    if len(latencies_s) == 0:
        return 0, False
    d = int(np.ceil(float(np.max(latencies_s)) / period_s - 1e-9))
    return (min(d, d_max), d > d_max)

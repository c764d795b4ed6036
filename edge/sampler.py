"""Forward-only chunk samplers in numpy: the inference contract the robot runs.

Conventions (docs/method.md): flow time t in [0, 1], t = 0 is noise, t = 1 is data;
N Euler steps with dt = 1 / N at t_k = k * dt; x_{k+1} = x_k + dt * v.
Shapes: b batch, h chunk length (H), a action dim. The samplers keep the dtype of eps: the
runtime passes float32, the numerical checks float64.

A velocity function has the signature ``v = f(y, t, omega)`` with y (b, h, a), t (b, h)
per-token flow time and omega (b, h); the observation is bound into f by the caller (the
prefix encoder runs once per chunk, f runs N times).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

VelocityFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def blend(x: np.ndarray, a_ref: np.ndarray, omega: np.ndarray) -> np.ndarray:
    """Legato guidance: (1 - omega) * x + omega * a_ref. x, a_ref (b, h, a); omega (b, h)."""
    w = omega[..., None]
    return (1.0 - w) * x + w * a_ref


def euler_step(x: np.ndarray, v: np.ndarray, dt: float) -> np.ndarray:
    """One Euler step of the flow ODE: x + dt * v."""
    return x + dt * v


def pad_reference(prev_tail: np.ndarray, horizon: int) -> np.ndarray:
    """Re-index the previous chunk's unexecuted tail to a full chunk.

    prev_tail: (b, k, a) with 1 <= k <= h, i.e. prev[:, s:H]. Returns (b, h, a), padded by
    repeating the last action (the arm holds where the old plan ended).
    """
    b, k, a = prev_tail.shape
    if not 1 <= k <= horizon:
        raise ValueError(f"reference tail has {k} actions; need 1..{horizon}")
    out = np.empty((b, horizon, a), dtype=prev_tail.dtype)
    out[:, :k] = prev_tail
    out[:, k:] = prev_tail[:, -1:]
    return out


def _check(eps: np.ndarray, a_ref: np.ndarray, omega: np.ndarray) -> None:
    if eps.ndim != 3:
        raise ValueError(f"noise must have shape (b, h, a), got {eps.shape}")
    if a_ref.shape != eps.shape:
        raise ValueError(f"reference chunk shape {a_ref.shape} differs from noise shape {eps.shape}")
    if omega.shape != eps.shape[:2]:
        raise ValueError(f"omega shape {omega.shape} must be (b, h) = {eps.shape[:2]}")


def legato_sample(
    velocity: VelocityFn,
    eps: np.ndarray,
    a_ref: np.ndarray,
    omega: np.ndarray,
    num_steps: int,
    final_blend: bool = True,
) -> np.ndarray:
    """Legato's forward-only sampler.

        X = eps
        for k in 0..N-1:  Y = blend(X, A_ref, omega);  X = Y + dt * v(Y, t_k, omega)
        chunk = blend(X, A_ref, omega)          (the final blend; switchable for ablation)

    With omega = 0 everywhere this is plain flow-matching Euler sampling.
    eps, a_ref: (b, h, a); omega: (b, h). Returns the chunk, (b, h, a).
    """
    _check(eps, a_ref, omega)
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    dt = 1.0 / num_steps
    x = eps.copy()
    t = np.empty(omega.shape, dtype=eps.dtype)
    for k in range(num_steps):
        y = blend(x, a_ref, omega)
        t.fill(k * dt)
        x = euler_step(y, velocity(y, t, omega), dt)
    return blend(x, a_ref, omega) if final_blend else x


def hard_prefix_sample(
    velocity: VelocityFn,
    eps: np.ndarray,
    a_ref: np.ndarray,
    d: int,
    num_steps: int,
) -> np.ndarray:
    """Training-time RTC's sampler: the first d tokens are overwritten with A_ref and carry
    flow time 1 at every step; the postfix is denoised as usual. The omega channel carries the
    prefix mask (1 on the prefix), exactly as in training.
    """
    mask = np.zeros(eps.shape[:2], dtype=eps.dtype)
    mask[:, :d] = 1.0
    _check(eps, a_ref, mask)
    dt = 1.0 / num_steps
    x = eps.copy()
    t = np.empty(mask.shape, dtype=eps.dtype)
    for k in range(num_steps):
        x[:, :d] = a_ref[:, :d]
        t.fill(k * dt)
        t[:, :d] = 1.0
        x = euler_step(x, velocity(x, t, mask), dt)
    x[:, :d] = a_ref[:, :d]
    return x

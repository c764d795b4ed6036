"""Inference-time RTC (Black, Galliker, Levine 2025) on the plain model: gradient guidance.

Needs a vector-Jacobian product through the flow head at every denoising step, so it runs in
torch with autograd; it cannot run in a forward-only engine. Conventions: t = 0 noise.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from legato.model import FlowHead


def rtc_soft_mask(d: int, s: int, horizon: int) -> np.ndarray:
    """RTC's exponentially decaying prefix weights W, (h,):
    1 for i < d; c_i (e^{c_i} - 1) / (e - 1) with c_i = (H - s - i) / (H - s - d + 1) for
    d <= i < H - s; 0 for i >= H - s."""
    i = np.arange(horizon, dtype=np.float64)
    c = (horizon - s - i) / (horizon - s - d + 1)
    w = c * (np.exp(c) - 1) / (math.e - 1)
    return np.where(i < d, 1.0, np.where(i < horizon - s, w, 0.0)).astype(np.float32)


def guidance_weight(t: float, beta: float) -> float:
    """min(beta, (1 - t) / t * (t^2 + (1 - t)^2) / (1 - t)^2); beta at t = 0."""
    if t <= 0:
        return beta
    return min(beta, (1 - t) / t * (t**2 + (1 - t) ** 2) / (1 - t) ** 2)


def rtc_sample(
    head: FlowHead,
    kv: torch.Tensor,
    state: torch.Tensor,
    eps: torch.Tensor,
    a_ref: torch.Tensor,
    mask: torch.Tensor,
    num_steps: int,
    beta: float = 5.0,
) -> torch.Tensor:
    """Guided Euler sampling. eps, a_ref (b, h, a) normalised; state (b, s) normalised; kv the
    prefix K/V; mask (h,) soft weights W.

    denoise(x, t) = x + (1 - t) v(x, t); g = VJP of denoise w.r.t. x applied to
    (a_ref - denoise) * W; v_guided = v + weight(t) * g.
    """
    b, h, _ = eps.shape
    dt = 1.0 / num_steps
    omega = torch.zeros(b, h)
    x = eps.clone()
    for k in range(num_steps):
        t = k * dt
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            v = head(x, torch.full((b, h), t), omega, state, kv)
            x1 = x + (1 - t) * v
            err = (a_ref - x1) * mask[None, :, None]
            (g,) = torch.autograd.grad(x1, x, grad_outputs=err)
        x = (x + dt * (v + guidance_weight(t, beta) * g)).detach()
    return x

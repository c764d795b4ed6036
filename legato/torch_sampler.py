"""The Legato sampler in torch: the same recursion as edge.sampler.legato_sample, on tensors.

Used to check that training-side torch code and the deployed numpy sampler agree, and as the
graph the export path can unroll. Conventions as in edge/sampler.py (t = 0 noise).
"""

from __future__ import annotations

import torch

from legato.model import FlowHead


@torch.no_grad()
def legato_sample_torch(
    head: FlowHead,
    kv: torch.Tensor,
    state: torch.Tensor,
    eps: torch.Tensor,
    a_ref: torch.Tensor,
    omega: torch.Tensor,
    num_steps: int,
    final_blend: bool = True,
) -> torch.Tensor:
    """eps, a_ref (b, h, a); omega (b, h); state (b, s) normalised; kv from the prefix encoder.
    Returns (b, h, a)."""
    dt = 1.0 / num_steps
    w = omega[..., None]
    x = eps
    for k in range(num_steps):
        y = (1 - w) * x + w * a_ref
        x = y + dt * head(y, torch.full_like(omega, k * dt), omega, state, kv)
    return (1 - w) * x + w * a_ref if final_blend else x

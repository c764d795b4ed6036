"""Parity gates: the chunk the robot's denoiser makes over the exported graphs against the torch
model's, on held-out observations with the same noise (docs/bundle.md, "parity").

- fp32: max abs error <= 1e-4 in normalised units.
- fp16 / int8: per-chunk cosine >= 0.99, and closed-loop success on held-out episodes within
  3 points of the fp32 bundle.
Both sides go through edge.denoiser.ChunkDenoiser (the bundle's over its engines exactly as
`legato run` wires them, the torch model's over a torch field), so what differs is the graphs.
Observations come from the adapter (the reference adapter: closed-loop torch rollouts on the
held-out seed 1000, so states are mid-trajectory and each chunk has a real previous chunk).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.policy import ChunkPolicy, ChunkRequest, default_method, default_ramp

FP32_MAX_ABS = 1e-4
COSINE_MIN = 0.99
CLOSED_LOOP_POINTS = 3.0


def request(spec: Any, i: int) -> tuple[str, ChunkRequest]:
    """The i-th gate (and calibration) request: d cycling over 0..d_max at s = H / 2, default ramp."""
    s = min(spec.horizon // 2, spec.horizon - spec.d_max) or 1
    d = i % (min(spec.d_max, s, spec.horizon - s) + 1)
    return default_method(spec), ChunkRequest(d=d, s=s, r=default_ramp(spec, d, s))


def compare(ref: ChunkPolicy, test: ChunkPolicy, samples: list[Any], seed: int = 0) -> dict[str, float]:
    """Chunk errors in normalised units over samples, same noise for both: max abs, min cosine."""
    rng = np.random.default_rng(seed)
    spec, norm = ref.spec, ref.norm
    shape = (1, spec.horizon, ref.adapter.action_pad)
    max_abs, cos_min, rms = 0.0, 1.0, []
    for i, smp in enumerate(samples):
        method, req = request(spec, i)
        eps = rng.standard_normal(shape).astype(np.float32)
        a = (
            norm.action(ref.chunk(method, smp.obs, smp.prev, req, eps), smp.obs.state)
            .ravel()
            .astype(np.float64)
        )
        b = (
            norm.action(test.chunk(method, smp.obs, smp.prev, req, eps), smp.obs.state)
            .ravel()
            .astype(np.float64)
        )
        max_abs = max(max_abs, float(np.abs(a - b).max()))
        cos_min = min(cos_min, float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30)))
        rms.append(float(np.sqrt(np.mean((a - b) ** 2))))
    return {
        "max_abs": max_abs,
        "cosine_min": cos_min,
        "rms_mean": float(np.mean(rms)),
        "chunks": len(samples),
    }

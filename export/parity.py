"""Parity gates: the chunk the edge sampler makes over the exported graphs against the torch
model's, on held-out observations with the same noise (docs/bundle.md, "parity").

- fp32: max abs error <= 1e-4 in normalised units.
- fp16 / int8: per-chunk cosine >= 0.99, and closed-loop success on held-out episodes within
  3 points of the fp32 bundle.
Observations come from closed-loop torch rollouts on the held-out seed (1000), so states are
mid-trajectory and each chunk has a real previous chunk to continue from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.policy import ChunkPolicy, ChunkRequest, default_ramp, held_out_seed
from sim.env import Observation

FP32_MAX_ABS = 1e-4
COSINE_MIN = 0.99
CLOSED_LOOP_POINTS = 3.0


@dataclass(frozen=True)
class Sample:
    obs: Observation  # batch 1
    prev: np.ndarray | None  # (1, h, a) raw, the chunk being executed


class _Recorder(ChunkPolicy):
    """Delegates to a runner and records what each chunk was asked from (first env only)."""

    def __init__(self, inner: ChunkPolicy, out: list[Sample], limit: int) -> None:
        super().__init__(inner.spec, inner.norm, inner.source)
        self.inner, self.out, self.limit = inner, out, limit

    def chunk(self, method, obs, prev, req, eps):  # noqa: ANN001, ANN201
        for i in range(obs.state.shape[0]):
            if len(self.out) < self.limit:
                o = Observation(
                    obs.image[i : i + 1].copy(), obs.tokens[i : i + 1].copy(), obs.state[i : i + 1].copy()
                )
                self.out.append(Sample(o, None if prev is None else prev[i : i + 1].copy()))
        return self.inner.chunk(method, obs, prev, req, eps)


def held_out_samples(ck: Any, count: int, seed: int | None = None, episodes: int = 4) -> list[Sample]:
    """`count` observations (with their previous chunk) from torch rollouts on held-out episodes."""
    from legato.rollout import rollout
    from legato.runner import TorchPolicyRunner
    from sim.episodes import sample_episodes

    seed = held_out_seed(ck.train_seed) if seed is None else seed
    spec = ck.spec
    s = min(spec.horizon // 2, spec.horizon - spec.d_max) or 1
    d = min(spec.d_max, s, spec.horizon - s)
    req = ChunkRequest(d=d, s=s, r=default_ramp(spec, d, s))
    out: list[Sample] = []
    rec = _Recorder(TorchPolicyRunner(ck, threads=1), out, count)
    ep = sample_episodes(ck.task, seed, episodes)
    per_episode = -(-count // episodes) + 1
    rollout(
        rec,
        "legato" if spec.method == "legato" else "naive",
        ck.task,
        ep.scenes,
        ep.template,
        req,
        seed=seed,
        max_steps=per_episode * s,
    )
    return out


def _requests(spec, i: int) -> tuple[str, ChunkRequest]:
    method = {"legato": "legato", "rtc-train": "rtc-train", "plain": "naive"}[spec.method]
    s = min(spec.horizon // 2, spec.horizon - spec.d_max) or 1
    d = i % (min(spec.d_max, s, spec.horizon - s) + 1)
    return method, ChunkRequest(d=d, s=s, r=default_ramp(spec, d, s))


def compare(ref: ChunkPolicy, test: ChunkPolicy, samples: list[Sample], seed: int = 0) -> dict[str, float]:
    """Chunk errors in normalised units over samples, same noise for both: max abs, min cosine."""
    rng = np.random.default_rng(seed)
    spec, norm = ref.spec, ref.norm
    max_abs, cos_min, rms = 0.0, 1.0, []
    for i, smp in enumerate(samples):
        method, req = _requests(spec, i)
        eps = rng.standard_normal((1, spec.horizon, spec.action_dim)).astype(np.float32)
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


def closed_loop(policy: ChunkPolicy, ck: Any, episodes: int, seed: int | None = None) -> float:
    """Success rate of `policy` on held-out episodes (the default chunking of the model)."""
    from legato.rollout import rollout
    from sim.episodes import sample_episodes

    spec = policy.spec
    seed = held_out_seed(ck.train_seed) if seed is None else seed
    s = min(spec.horizon // 2, spec.horizon - spec.d_max) or 1
    d = min(2, spec.d_max, s, spec.horizon - s)
    method = {"legato": "legato", "rtc-train": "rtc-train", "plain": "naive"}[spec.method]
    req = ChunkRequest(d=d, s=s, r=default_ramp(spec, d, s))
    ep = sample_episodes(ck.task, seed, episodes)
    res = rollout(policy, method, ck.task, ep.scenes, ep.template, req, seed=seed)
    return float(np.mean(res.success))

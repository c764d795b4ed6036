"""A checkpoint behind the edge policy contract: how the evaluation runs what is deployed.

The prefix encoder runs once per chunk in torch; the flow head becomes the numpy velocity
function of edge.sampler, so Legato and training-time RTC are sampled by the very numpy code
the robot runs (edge.policy.ChunkPolicy does the assembly). Inference-time RTC needs autograd
and stays in torch (legato.baselines). Chunks go in and come out in raw joint units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edge.policy import INFERENCE_METHODS, ChunkPolicy, ChunkRequest, ModelSpec, Observation, check_request
from edge.sampler import VelocityFn
from legato.baselines import rtc_sample, rtc_soft_mask
from legato.checkpoint import Checkpoint

__all__ = ["INFERENCE_METHODS", "ChunkRequest", "Prefix", "TorchPolicyRunner", "check_request", "spec_of"]


def spec_of(ck: Checkpoint) -> ModelSpec:
    """The torch-free description of what a checkpoint was trained for."""
    return ck.spec


@dataclass(frozen=True)
class Prefix:
    """What the flow head needs from an observation, computed once per chunk."""

    kv: torch.Tensor  # (b, L, 2, p, c) cross-attention keys and values
    state: torch.Tensor  # (b, s) normalised proprio


class TorchPolicyRunner(ChunkPolicy):
    def __init__(self, ck: Checkpoint, threads: int = 0) -> None:
        super().__init__(ck.spec, ck.norm, source=str(ck.path))
        self.ck = ck
        self.cfg = ck.policy_cfg
        if threads:
            torch.set_num_threads(threads)

    @torch.no_grad()
    def encode(self, obs: Observation) -> Prefix:
        """Run the prefix encoder once: K/V (b, L, 2, p, c) and the normalised state (b, s)."""
        state = torch.from_numpy(self.norm.state(obs.state))
        kv = self.ck.model.prefix(torch.from_numpy(obs.image), torch.from_numpy(obs.tokens), state)
        return Prefix(kv, state)

    def velocity(self, prefix: Prefix) -> VelocityFn:
        head = self.ck.model.head

        @torch.no_grad()
        def f(y: np.ndarray, t: np.ndarray, omega: np.ndarray) -> np.ndarray:
            v = head(
                torch.from_numpy(y), torch.from_numpy(t), torch.from_numpy(omega), prefix.state, prefix.kv
            )
            return v.numpy()

        return f

    def rtc_chunk(self, prefix: Prefix, eps: np.ndarray, a_ref: np.ndarray, req: ChunkRequest) -> np.ndarray:
        mask = torch.from_numpy(rtc_soft_mask(req.d, req.s, self.cfg.horizon))
        return rtc_sample(
            self.ck.model.head, prefix.kv, prefix.state,
            torch.from_numpy(eps), torch.from_numpy(a_ref), mask,
            self.cfg.num_steps, req.beta,
        ).numpy()  # fmt: skip

"""A checkpoint behind the edge policy contract: how the evaluation runs what is deployed.

The chunk is assembled by the robot's own ChunkDenoiser (edge.denoiser) over a torch field of
the evaluation's batch (legato.adapters.reference.TorchField: the prefix encoder once per chunk,
the flow head as the velocity), so Legato and training-time RTC are sampled by the very numpy
code the robot runs. Inference-time RTC needs autograd and stays in torch (legato.baselines).
Chunks go in and come out in raw joint units.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from edge.adapter import AdapterSpec
from edge.policy import INFERENCE_METHODS, ChunkPolicy, ChunkRequest, ModelSpec, Observation, check_request
from edge.sampler import pad_reference
from legato.adapters.reference import TorchField, section
from legato.baselines import rtc_sample, rtc_soft_mask
from legato.checkpoint import Checkpoint

__all__ = ["INFERENCE_METHODS", "ChunkRequest", "TorchPolicyRunner", "check_request", "spec_of"]


def spec_of(ck: Checkpoint) -> ModelSpec:
    """The torch-free description of what a checkpoint was trained for."""
    return ck.spec


class TorchPolicyRunner(ChunkPolicy):
    def __init__(self, ck: Checkpoint, threads: int = 0) -> None:
        super().__init__(AdapterSpec.from_dict(section(ck), str(ck.path)), source=str(ck.path))
        self.ck = ck
        self.cfg = ck.policy_cfg
        if threads:
            torch.set_num_threads(threads)

    def field(self, batch: int) -> Any:
        return TorchField(self.ck, batch)

    @torch.no_grad()
    def rtc_chunk(self, obs: Observation, prev: np.ndarray, req: ChunkRequest, eps: np.ndarray) -> np.ndarray:
        state = torch.from_numpy(self.norm.state(obs.state))
        kv = self.ck.model.prefix(torch.from_numpy(obs.image), torch.from_numpy(obs.tokens), state)
        a_ref = self.norm.action(pad_reference(prev[:, req.s :], self.cfg.horizon), obs.state)
        mask = torch.from_numpy(rtc_soft_mask(req.d, req.s, self.cfg.horizon))
        x = rtc_sample(
            self.ck.model.head, kv, state,
            torch.from_numpy(eps), torch.from_numpy(a_ref), mask,
            self.cfg.num_steps, req.beta,
        ).numpy()  # fmt: skip
        return self.norm.unaction(x, obs.state)

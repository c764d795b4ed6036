"""A checkpoint behind the edge sampler's interface: how the evaluation runs what is deployed.

The prefix encoder runs once per chunk in torch; the flow head becomes the numpy velocity
function of edge.sampler, so Legato and training-time RTC are sampled by the very numpy code
the robot runs. Inference-time RTC needs autograd and stays in torch (legato.baselines).
Chunks go in and come out in raw joint units; normalisation happens here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edge.sampler import VelocityFn, hard_prefix_sample, legato_sample, pad_reference
from edge.schedule import omega_schedule
from legato.baselines import rtc_sample, rtc_soft_mask
from legato.checkpoint import Checkpoint
from legato.errors import MethodError
from sim.env import Observation

# Inference methods and the training method each needs.
INFERENCE_METHODS: dict[str, str] = {
    "naive": "plain",
    "sync": "plain",
    "rtc": "plain",
    "rtc-train": "rtc-train",
    "legato": "legato",
}


@dataclass(frozen=True)
class ChunkRequest:
    d: int  # delay in control steps
    s: int  # execution horizon
    r: int  # ramp length (legato)
    final_blend: bool = True  # legato's final blend (ablation switch)
    beta: float = 5.0  # RTC guidance cap


def check_request(method: str, ck: Checkpoint, req: ChunkRequest, num_steps: int | None = None) -> None:
    """Refuse what the checkpoint was not trained for, with a one-line reason."""
    if method not in INFERENCE_METHODS:
        raise MethodError(f"unknown method {method!r}; choose from {', '.join(INFERENCE_METHODS)}")
    need = INFERENCE_METHODS[method]
    if ck.method != need:
        raise MethodError(
            f"method {method!r} needs a checkpoint trained with {need!r}; {ck.path} is {ck.method!r}"
        )
    h = ck.policy_cfg.horizon
    if num_steps is not None and num_steps != ck.policy_cfg.num_steps:
        raise MethodError(
            f"sampler asked for N={num_steps} steps but {ck.path} was trained with "
            f"N={ck.policy_cfg.num_steps}"
        )
    if method in ("legato", "rtc-train") and req.d > ck.train_cfg.d_max:
        raise MethodError(f"delay d={req.d} exceeds the trained d_max={ck.train_cfg.d_max} of {ck.path}")
    if not req.d <= req.s <= h - req.d:
        raise MethodError(f"need d <= s <= H - d, got d={req.d}, s={req.s}, H={h}")
    if method == "legato" and req.d + req.r > h - req.s:
        raise MethodError(f"ramp must stay in the overlap: d + r = {req.d + req.r} > H - s = {h - req.s}")


@dataclass(frozen=True)
class Prefix:
    """What the flow head needs from an observation, computed once per chunk."""

    kv: torch.Tensor  # (b, L, 2, p, c) cross-attention keys and values
    state: torch.Tensor  # (b, s) normalised proprio


class TorchPolicyRunner:
    def __init__(self, ck: Checkpoint, threads: int = 0) -> None:
        self.ck = ck
        self.cfg = ck.policy_cfg
        self.norm = ck.norm
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

    def chunk(
        self, method: str, obs: Observation, prev: np.ndarray | None, req: ChunkRequest, eps: np.ndarray
    ) -> np.ndarray:
        """The next chunk, raw units (b, h, a). prev: the chunk being executed (raw), whose index
        req.s is the new chunk's index 0; None for the first chunk (plain sampling)."""
        check_request(method, self.ck, req)
        h = self.cfg.horizon
        prefix = self.encode(obs)
        b = eps.shape[0]
        if prev is None or method in ("naive", "sync"):
            zeros = np.zeros((b, h), np.float32)
            x = legato_sample(self.velocity(prefix), eps, np.zeros_like(eps), zeros, self.cfg.num_steps)
            return self.norm.unaction(x, obs.state)
        a_ref = self.norm.action(pad_reference(prev[:, req.s :], h), obs.state)
        if method == "legato":
            omega = np.broadcast_to(omega_schedule(req.d, req.r, h), (b, h)).copy()
            x = legato_sample(self.velocity(prefix), eps, a_ref, omega, self.cfg.num_steps, req.final_blend)
        elif method == "rtc-train":
            x = hard_prefix_sample(self.velocity(prefix), eps, a_ref, req.d, self.cfg.num_steps)
        else:  # rtc
            mask = torch.from_numpy(rtc_soft_mask(req.d, req.s, h))
            x = rtc_sample(
                self.ck.model.head, prefix.kv, prefix.state,
                torch.from_numpy(eps), torch.from_numpy(a_ref), mask,
                self.cfg.num_steps, req.beta,
            ).numpy()  # fmt: skip
        return self.norm.unaction(x, obs.state)

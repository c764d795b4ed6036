"""The three training objectives on one architecture (docs/method.md has the derivations).

All work in normalised action units on a flattened batch of n = batch_obs * draws chunks.
Conventions: x_t = (1 - t) eps + t A, t = 0 noise, t = 1 data; dt = 1 / N.

- plain: ordinary flow matching, omega = 0, target A - eps.
- legato: per example d ~ U{0..d_max}, r ~ U{0..r_max}, omega from edge.schedule; input
  Y_t = (1 - omega) x_t + omega A; target u = (1 - (omega / dt)(1 - t)) (A - eps); loss over
  tokens with omega < 1 weighted by (1 - omega)^2 (or a plain mean, for the ablation).
  Prefix augmentation (cfg.p_no_prefix, cfg.prefix_noise): some examples get d = r = 0, and
  some get a perturbed chunk (see `prefix_perturbation`) used as both reference and target.
- rtc-train: per example d ~ U{0..d_max}; the first d tokens are clean (A) with flow time 1
  and carry 1 in the omega channel; target A - eps; loss on the postfix only.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from edge.schedule import omega_batch
from legato.config import TrainConfig


@dataclass(frozen=True)
class FlowExample:
    y: torch.Tensor  # (n, h, a) model input
    t: torch.Tensor  # (n, h) per-token flow time
    omega: torch.Tensor  # (n, h) schedule channel
    target: torch.Tensor  # (n, h, a) velocity target
    weight: torch.Tensor  # (n, h) per-token loss weight

    def to(self, device: torch.device) -> FlowExample:
        return FlowExample(*(getattr(self, f.name).to(device) for f in fields(self)))


def sample_time(n: int, num_steps: int, mode: str, rng: np.random.Generator) -> np.ndarray:
    """Flow time per example, (n,): on the Euler grid k / N or continuous U[0, 1)."""
    if mode == "grid":
        return rng.integers(num_steps, size=n) / num_steps
    return rng.random(n)


def plain_example(actions: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> FlowExample:
    """Ordinary flow matching. actions, eps (n, h, a); t (n,)."""
    n, h, _ = actions.shape
    tt = t[:, None, None]
    x_t = (1 - tt) * eps + tt * actions
    return FlowExample(x_t, t[:, None].expand(n, h), torch.zeros(n, h), actions - eps, torch.ones(n, h))


def legato_example(
    actions: torch.Tensor,
    eps: torch.Tensor,
    t: torch.Tensor,
    omega: torch.Tensor,
    num_steps: int,
    weighting: str,
) -> FlowExample:
    """Legato: schedule-shaped mixture input and reshaped target with N baked in.
    actions, eps (n, h, a); t (n,); omega (n, h)."""
    n, h, _ = actions.shape
    tt = t[:, None, None]
    x_t = (1 - tt) * eps + tt * actions
    w = omega[..., None]
    y = (1 - w) * x_t + w * actions
    kappa = omega * num_steps  # omega / dt
    target = (1 - kappa * (1 - t[:, None]))[..., None] * (actions - eps)
    weight = (1 - omega) ** 2 if weighting == "omega2" else (omega < 1).to(omega.dtype)
    return FlowExample(y, t[:, None].expand(n, h), omega, target, weight)


def corrective_example(
    actions: torch.Tensor,
    reference: torch.Tensor,
    eps: torch.Tensor,
    t: torch.Tensor,
    omega: torch.Tensor,
    num_steps: int,
    weighting: str,
) -> FlowExample:
    """Legato with a reference that may be wrong: the sampler's X follows the straight path to
    `actions` (what the robot should do now) while the blend mixes in `reference` (the plan
    being executed). actions, reference, eps (n, h, a); t (n,); omega (n, h).

    With X_k = (1 - t_k) eps + t_k A and the input Y_k = (1 - omega) X_k + omega A_ref, the
    target that makes legato_sample's recursion stay on that path (X_{k+1} = Y_k + dt v) is
        v = (A - eps) + kappa (X_k - A_ref) = f (A - eps) + kappa (A - A_ref),
    f = 1 - kappa (1 - t), kappa = omega / dt; the chunk is then (1 - omega) A + omega A_ref.
    With A_ref = A it is legato_example's target. The second term is the model's correction of
    the reference: zero where it trusts it (docs/training.md, round 3)."""
    n, h, _ = actions.shape
    tt = t[:, None, None]
    x_t = (1 - tt) * eps + tt * actions
    w = omega[..., None]
    y = (1 - w) * x_t + w * reference
    kappa = (omega * num_steps)[..., None]
    target = (actions - eps) + kappa * (x_t - reference)
    weight = (1 - omega) ** 2 if weighting == "omega2" else (omega < 1).to(omega.dtype)
    return FlowExample(y, t[:, None].expand(n, h), omega, target, weight)


def recovery_target(actions: np.ndarray, reference: np.ndarray, d: np.ndarray, recovery: int) -> np.ndarray:
    """What the robot should do after executing the reference's first d actions: those d
    actions, then the expert's chunk plus the offset left at index d - 1, fading to zero over
    `recovery` steps (raised cosine). actions, reference (n, h, a); d (n,). d = 0: actions."""
    n, h, _ = actions.shape
    i = np.arange(h)[None, :, None]
    dd = np.asarray(d)[:, None, None]
    last = np.take_along_axis(reference - actions, np.maximum(dd - 1, 0).repeat(actions.shape[2], 2), 1)
    j = (i - dd + 1).astype(np.float64)
    fade = np.where(j <= recovery, 0.5 * (1 + np.cos(np.pi * np.clip(j, 0, None) / (recovery + 1))), 0.0)
    out = actions + np.where(dd > 0, last * fade, 0.0)
    return np.where(i < dd, reference, out)


def rtc_train_example(
    actions: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, d: np.ndarray
) -> FlowExample:
    """Training-time RTC: clean prefix of d (n,) tokens at flow time 1, loss on the postfix."""
    n, h, _ = actions.shape
    prefix = torch.from_numpy((np.arange(h)[None] < np.asarray(d)[:, None]).astype(np.float32))  # (n, h)
    tt = t[:, None, None]
    x_t = (1 - tt) * eps + tt * actions
    y = torch.where(prefix[..., None] > 0, actions, x_t)
    t_tok = torch.where(prefix > 0, torch.ones(n, h), t[:, None].expand(n, h))
    return FlowExample(y, t_tok, prefix, actions - eps, 1 - prefix)


def prefix_perturbation(
    d: np.ndarray, r: np.ndarray, horizon: int, sigma: np.ndarray, recovery: int, rng: np.random.Generator
) -> np.ndarray:
    """A wrong reference and the way back from it, (n, h, a) in the units of sigma.

    The run-time reference is the policy's own earlier chunk: offset from what the expert would
    do now, and often too slow or too fast. The perturbation is an offset c ~ N(0, sigma^2) at
    the last token the reference touches (k - 1, k = d + r) plus a rate error v ~ N(0, (sigma/4)^2)
    per step before it; after k it fades to zero over `recovery` steps (raised cosine), so the
    target leaves the wrong reference smoothly and rejoins the expert's chunk. Zero where k = 0.
    d, r (n,) ints; sigma (a,) or scalar.
    """
    n, a = len(d), np.size(sigma)
    k = (np.asarray(d) + np.asarray(r))[:, None, None]  # (n, 1, 1)
    c = rng.normal(size=(n, 1, a)) * sigma
    v = rng.normal(size=(n, 1, a)) * sigma / 4
    i = np.arange(horizon)[None, :, None]  # (1, h, 1)
    before = c + v * (i - (k - 1))
    j = (i - k + 1).astype(np.float64)  # 1, 2, ... after the reference
    fade = np.where(j <= recovery, 0.5 * (1 + np.cos(np.pi * np.clip(j, 0, None) / (recovery + 1))), 0.0)
    delta = np.where(i < k, before, c * fade)
    return np.where(k > 0, delta, 0.0)


def build_example(
    actions: torch.Tensor,
    eps: torch.Tensor,
    cfg: TrainConfig,
    num_steps: int,
    rng: np.random.Generator,
    action_std: np.ndarray | None = None,
    reference: torch.Tensor | None = None,
    delays: np.ndarray | None = None,
) -> FlowExample:
    """Draw t (and d, r) per example and build cfg.method's input, target and weights.
    action_std (h, a): the normaliser's per-index std in rad, needed for cfg.prefix_noise.
    reference (n, h, a): the model's own earlier chunks, normalised like actions, for the
    "recover" recipe: a fraction cfg.p_own_reference of the examples uses them."""
    n, h, a = actions.shape
    t = torch.from_numpy(sample_time(n, num_steps, cfg.t_sampling, rng).astype(np.float32))
    if cfg.method == "plain":
        return plain_example(actions, eps, t)
    d = rng.integers(cfg.d_max + 1, size=n) if delays is None else np.asarray(delays)
    if cfg.method == "rtc-train":
        return rtc_train_example(actions, eps, t, d)
    r = rng.integers(cfg.r_max + 1, size=n)
    if cfg.p_no_prefix > 0:
        bare = rng.random(n) < cfg.p_no_prefix
        d, r = np.where(bare, 0, d), np.where(bare, 0, r)
    r = np.minimum(r, h - d)
    omega = torch.from_numpy(omega_batch(d, r, h)).to(actions)
    if cfg.reference_target == "recover":
        return _recover_example(actions, eps, t, omega, d, cfg, num_steps, rng, action_std, reference)
    if cfg.prefix_noise > 0:
        if action_std is None:
            raise ValueError("prefix_noise needs the normaliser's action_std to convert rad")
        delta = prefix_perturbation(d, r, h, np.full(a, cfg.prefix_noise), cfg.recovery, rng)
        delta *= (rng.random(n) < cfg.p_prefix_noise)[:, None, None]
        actions = actions + torch.from_numpy((delta / action_std[None]).astype(np.float32)).to(actions)
    return legato_example(actions, eps, t.to(actions), omega, num_steps, cfg.loss_weighting)


def _recover_example(actions, eps, t, omega, d, cfg: TrainConfig, num_steps: int, rng, action_std,
                     reference: torch.Tensor | None) -> FlowExample:  # fmt: skip
    """The "recover" recipe: the reference keeps its error over the whole chunk (a plan that
    has gone bad stays bad), and the target leaves it right after the executed prefix."""
    n, h, a = actions.shape
    given, own = reference, None
    if given is not None:
        own = torch.from_numpy(rng.random(n) < cfg.p_own_reference)[:, None, None]
    reference = actions.clone()
    if cfg.prefix_noise > 0:
        if action_std is None:
            raise ValueError("prefix_noise needs the normaliser's action_std to convert rad")
        sigma = np.full(a, cfg.prefix_noise)
        c = rng.normal(size=(n, 1, a)) * sigma
        v = rng.normal(size=(n, 1, a)) * sigma / 4
        i = np.arange(h)[None, :, None]
        delta = (c + v * (i - (np.asarray(d)[:, None, None] - 1))) / action_std[None]
        delta *= (rng.random(n) < cfg.p_prefix_noise)[:, None, None]
        reference = reference + torch.from_numpy(delta.astype(np.float32)).to(actions)
    if given is not None:
        reference = torch.where(own, given.to(actions), reference)
    target = recovery_target(actions.numpy(), reference.numpy(), d, cfg.recovery)
    return corrective_example(torch.from_numpy(target.astype(np.float32)), reference, eps, t.to(actions),
                              omega, num_steps, cfg.loss_weighting)  # fmt: skip


def weighted_mse(pred: torch.Tensor, ex: FlowExample) -> torch.Tensor:
    """sum(w * |pred - target|^2) / (sum(w) * a): a mean over the weighted tokens."""
    err = ((pred - ex.target) ** 2).sum(-1)  # (n, h)
    return (ex.weight * err).sum() / (ex.weight.sum().clamp_min(1e-8) * pred.shape[-1])

"""Frozen configs of the policy and its training, each field commented.

Shape vocabulary used across legato/ and edge/: b batch, h chunk length (H), a action dim,
p prefix tokens, l instruction tokens, n denoising steps (N), c model width.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

Method = Literal["legato", "rtc-train", "plain"]
METHODS: tuple[str, ...] = ("legato", "rtc-train", "plain")


@dataclass(frozen=True)
class PolicyConfig:
    action_dim: int = 3  # a: one joint-position target per joint
    state_dim: int = 6  # proprio: joint positions then velocities
    horizon: int = 16  # h: actions per chunk (H)
    num_steps: int = 5  # n: Euler steps per chunk (N); baked into Legato's target
    image_hw: tuple[int, int] = (48, 64)  # camera height, width in pixels; (0, 0) = no camera
    vocab_size: int = 14  # fixed tokenizer vocabulary (sim.language.VOCAB)
    max_tokens: int = 6  # l: instruction length after padding
    width: int = 96  # c: token width of both encoders
    heads: int = 4  # attention heads
    prefix_layers: int = 2  # self-attention blocks of the prefix encoder ("VLM")
    head_layers: int = 3  # blocks of the flow head; each cross-attends to its own prefix K/V
    mlp_ratio: int = 2  # MLP hidden width = mlp_ratio * width
    # "factored": the head's last layer predicts A - eps and the known per-token factor
    # 1 - omega N (1 - t) of Legato's target multiplies it (docs/training.md); "direct": the
    # head predicts the whole target. Identical ideal fields; the factored one is well scaled.
    # "corrective": two outputs per token, D (~ A - eps) and E (the correction of a wrong
    # reference), v = f D + omega N E (legato.objectives.corrective_example).
    velocity_form: Literal["factored", "direct", "corrective"] = "factored"

    def __post_init__(self) -> None:
        h, w = self.image_hw
        if h % 8 or w % 8 or (h == 0) != (w == 0):
            raise ValueError(f"image_hw {self.image_hw} must be multiples of 8 (the stem downsamples by 8)")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be divisible by heads {self.heads}")
        if self.velocity_form not in ("factored", "direct", "corrective"):
            raise ValueError(
                f"velocity_form must be 'factored', 'direct' or 'corrective', got {self.velocity_form!r}"
            )
        if self.horizon < 2 or self.num_steps < 1:
            raise ValueError(f"need horizon >= 2 and num_steps >= 1, got {self.horizon}, {self.num_steps}")

    @property
    def num_prefix_tokens(self) -> int:
        h, w = self.image_hw
        return (h // 8) * (w // 8) + self.max_tokens + 1


@dataclass(frozen=True)
class TrainConfig:
    method: Method = "legato"  # objective: legato | rtc-train | plain
    steps: int = 6000  # optimizer steps (the reference checkpoints' budget, ~18 min on 2 cores)
    batch_obs: int = 32  # observations per step (prefix encoder batch)
    draws: int = 4  # (t, eps, d, r) draws per observation: the flow head sees batch_obs * draws
    lr: float = 1e-3  # peak AdamW learning rate
    warmup: int = 150  # linear warmup steps, then cosine decay to lr / 10
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    d_max: int = 4  # delays d ~ U{0..d_max} (legato, rtc-train); the runtime refuses larger d
    r_max: int = 8  # ramp lengths r ~ U{0..r_max} (legato)
    schedule_shape: str = "linear"  # omega ramp shape; must match inference
    t_sampling: Literal["grid", "continuous"] = "grid"  # flow time on t_k = k / N, or U[0, 1)
    loss_weighting: Literal["omega2", "mean"] = "omega2"  # (1 - omega)^2 weights, or plain mean
    aux_weight: float = 1.0  # weight of the auxiliary target/obstacle position loss (0 = off)
    # Prefix augmentation (legato only; docs/training.md). At run time the reference is the
    # policy's own earlier chunk, not the expert's: teach the head to leave a wrong one.
    p_no_prefix: float = 0.2  # fraction of examples with d = r = 0 (a chunk with no reference)
    prefix_noise: float = 0.1  # rad: std of the offset put on a perturbed reference (0 = off)
    p_prefix_noise: float = 0.5  # fraction of examples whose reference is perturbed
    recovery: int = 6  # steps over which the target returns to the expert's chunk
    # Where a perturbed reference's target rejoins the expert: "reference" = after the ramp
    # (d + r; the second round's recipe: the target follows the reference through the blend),
    # "recover" = right after the executed prefix d, with the reference left wrong over the whole
    # chunk (legato.objectives.corrective_example; round 3).
    reference_target: Literal["reference", "recover"] = "reference"
    p_own_reference: float = 0.0  # recover only: fraction of examples referencing the model's own chunk
    own_reference_s: int = 8  # ... planned this many steps before the example's observation
    # Weights saved as an exponential moving average of the training weights, updated after every
    # optimizer step (0 = the last step's weights). openpi trains pi0 with 0.99, diffusion_policy
    # with a warmed-up ~0.9999: the average smooths the last steps' minibatch noise.
    ema_decay: float = 0.0
    seed: int = 0
    log_every: int = 20  # steps between progress-bar loss updates
    ckpt_every: int = 500  # steps between checkpoints
    threads: int = 0  # torch intra-op threads; 0 = torch's default

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.t_sampling not in ("grid", "continuous"):
            raise ValueError(f"t_sampling must be 'grid' or 'continuous', got {self.t_sampling!r}")
        if self.loss_weighting not in ("omega2", "mean"):
            raise ValueError(f"loss_weighting must be 'omega2' or 'mean', got {self.loss_weighting!r}")
        if not (0 <= self.p_no_prefix <= 1 and 0 <= self.p_prefix_noise <= 1):
            raise ValueError(f"p_no_prefix and p_prefix_noise are probabilities, got "
                             f"{self.p_no_prefix}, {self.p_prefix_noise}")  # fmt: skip
        if self.reference_target not in ("reference", "recover"):
            raise ValueError(
                f"reference_target must be 'reference' or 'recover', got {self.reference_target!r}"
            )
        if not 0 <= self.p_own_reference <= 1:
            raise ValueError(f"p_own_reference is a probability, got {self.p_own_reference}")
        if self.prefix_noise < 0 or self.recovery < 0:
            raise ValueError(
                f"prefix_noise and recovery must be >= 0, got {self.prefix_noise}, {self.recovery}"
            )
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.d_max < 0 or self.r_max < 0:
            raise ValueError(f"d_max and r_max must be >= 0, got {self.d_max}, {self.r_max}")


@dataclass(frozen=True)
class Regime:
    """A chunking regime: what training draws and what the evaluation runs by default."""

    name: str
    horizon: int  # H, actions per chunk
    d_max: int  # training delays d ~ U{0..d_max}
    r_max: int  # training ramps r ~ U{0..r_max}; at inference r = H - s - d, capped here
    s: int  # execution horizon the evaluation uses
    delays: tuple[int, ...]  # delays the evaluation runs


# "short": the project's first setting (H = 16, d <= 4). "paper": Legato's real-robot regime
# (H = 60 at 30 Hz, d ~ U{0..10}, r ~ U{0..50}) scaled to H = 48: s = 12 is the smallest quarter
# of the chunk that keeps d <= s for d = 10, and r_max = H - s fills the whole overlap at d = 0.
REGIMES: dict[str, Regime] = {
    "short": Regime("short", horizon=16, d_max=4, r_max=8, s=8, delays=(0, 1, 2, 3, 4)),
    "paper": Regime("paper", horizon=48, d_max=10, r_max=36, s=12, delays=(0, 2, 4, 6, 8, 10)),
}


def to_dict(cfg: Any) -> dict[str, Any]:
    return asdict(cfg)


def from_dict(cls: type, d: dict[str, Any]) -> Any:
    """Build a config dataclass from JSON, rejecting unknown keys with a clear message."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
    out = {}
    for f in fields(cls):
        if f.name not in d:
            continue
        v, default = d[f.name], f.default
        if isinstance(default, bool):
            ok = isinstance(v, bool)
        elif isinstance(default, int):
            ok = isinstance(v, int) and not isinstance(v, bool)
        elif isinstance(default, float):
            ok = isinstance(v, int | float) and not isinstance(v, bool)
        elif isinstance(default, str):
            ok = isinstance(v, str)
        elif isinstance(default, tuple):
            ok = isinstance(v, list | tuple)
        else:
            ok = True
        if not ok:
            raise ValueError(f"{cls.__name__}.{f.name} must be {type(default).__name__}, got {v!r}")
        out[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**out)

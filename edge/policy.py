"""The robot-side policy contract: what a model was trained for, what a chunk request may ask,
and the batched policy interface of the evaluation. No torch.

Every backend (torch for the evaluation, onnxruntime and TensorRT on the robot) subclasses
:class:`ChunkPolicy` and implements only its velocity field; the chunk itself is assembled once,
by edge.denoiser.ChunkDenoiser (reference padding, normalisation, omega, the mode dispatch), so a
bundle is checked in closed loop exactly like a checkpoint, on the path the robot runs.
Conventions as in edge/sampler.py (t = 0 noise) and edge/schedule.py; shapes: b batch, h chunk
length H, a action dim, s_dim state dim.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Protocol

import numpy as np

from edge.errors import MethodError
from edge.schedule import SCHEDULE_SHAPES
from sim.seeds import held_out_seed  # the held-out seed's one definition (re-exported here)

# Inference methods and the training method each needs.
INFERENCE_METHODS: dict[str, str] = {
    "naive": "plain",
    "sync": "plain",
    "rtc": "plain",
    "rtc-train": "rtc-train",
    "legato": "legato",
}
# Inference methods a forward-only engine can run (RTC needs autograd: torch only).
FORWARD_ONLY = ("naive", "sync", "rtc-train", "legato")


@dataclass(frozen=True)
class ModelSpec:
    """What a trained model fixes for inference; read from a checkpoint's config.json or a
    bundle's manifest (both hold the same sections)."""

    method: str  # training method: legato | rtc-train | plain
    horizon: int  # H, actions per chunk
    num_steps: int  # N, Euler steps: Legato bakes it into the target, so it is fixed
    action_dim: int  # a
    state_dim: int  # proprio entries: joint positions, then velocities
    image_hw: tuple[int, int]  # camera (height, width)
    max_tokens: int  # instruction tokens after padding
    d_max: int  # largest delay seen in training
    r_max: int  # largest ramp seen in training
    schedule_shape: str  # omega ramp shape used in training
    control_hz: float  # control rate the data was recorded at

    @staticmethod
    def from_config(cfg: dict[str, Any], source: str = "config") -> ModelSpec:
        """From the dict of a checkpoint's config.json or a bundle manifest's model section."""
        try:
            p, sch = cfg["policy"], cfg["schedule"]
            spec = ModelSpec(
                method=str(cfg["method"]), horizon=int(p["horizon"]), num_steps=int(p["num_steps"]),
                action_dim=int(p["action_dim"]), state_dim=int(p["state_dim"]),
                image_hw=(int(p["image_hw"][0]), int(p["image_hw"][1])), max_tokens=int(p["max_tokens"]),
                d_max=int(sch["d_max"]), r_max=int(sch["r_max"]),
                schedule_shape=str(sch.get("shape", "linear")),
                control_hz=float(cfg["task"]["arm"]["control_hz"]),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise MethodError(f"{source}: model description is invalid ({type(e).__name__}: {e})") from None
        spec.validate(source)
        return spec

    def to_dict(self) -> dict[str, Any]:
        """A flat map (the policy server's metadata ``spec``): :meth:`from_dict` reads it back."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @staticmethod
    def from_dict(d: Any, source: str = "spec") -> ModelSpec:
        try:
            kw = {f.name: d[f.name] for f in fields(ModelSpec)}
            kw["image_hw"] = (int(kw["image_hw"][0]), int(kw["image_hw"][1]))
            spec = ModelSpec(**kw)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise MethodError(f"{source}: model description is invalid ({type(e).__name__}: {e})") from None
        spec.validate(source)
        return spec

    def validate(self, source: str = "model") -> None:
        if self.method not in set(INFERENCE_METHODS.values()):
            raise MethodError(f"{source}: unknown training method {self.method!r}")
        if self.schedule_shape not in SCHEDULE_SHAPES:
            raise MethodError(f"{source}: omega schedule shape {self.schedule_shape!r} is not one of "
                              f"{', '.join(SCHEDULE_SHAPES)}")  # fmt: skip
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, int) and v < (0 if f.name in ("d_max", "r_max", "max_tokens") else 1):
                raise MethodError(f"{source}: {f.name} = {v} is out of range")
        if not self.control_hz > 0:
            raise MethodError(f"{source}: control_hz = {self.control_hz} must be > 0")


@dataclass(frozen=True)
class ChunkRequest:
    d: int  # delay in control steps
    s: int  # execution horizon
    r: int  # ramp length (legato)
    final_blend: bool = True  # legato's final blend (ablation switch)
    beta: float = 5.0  # RTC guidance cap


def default_ramp(spec: ModelSpec, d: int, s: int) -> int:
    """The ramp that fills the overlap with the previous chunk: H - s - d, capped at r_max."""
    return max(0, min(spec.r_max, spec.horizon - s - d))


def default_method(spec: ModelSpec) -> str:
    """The inference method a model was trained for."""
    return {"plain": "naive", "rtc-train": "rtc-train", "legato": "legato"}[spec.method]


def check_request(method: str, spec: ModelSpec, req: ChunkRequest, num_steps: int | None = None,
                  source: str = "the model") -> None:  # fmt: skip
    """Refuse what the model was not trained for, with a one-line reason."""
    if method not in INFERENCE_METHODS:
        raise MethodError(f"unknown method {method!r}; choose from {', '.join(INFERENCE_METHODS)}")
    need = INFERENCE_METHODS[method]
    if spec.method != need:
        raise MethodError(
            f"method {method!r} needs a model trained with {need!r}; {source} is {spec.method!r}"
        )
    h = spec.horizon
    if num_steps is not None and num_steps != spec.num_steps:
        raise MethodError(
            f"sampler asked for N={num_steps} steps but {source} was trained with N={spec.num_steps}"
        )
    if req.d < 0 or req.s < 1 or req.r < 0:
        raise MethodError(f"need d >= 0, s >= 1 and r >= 0, got d={req.d}, s={req.s}, r={req.r}")
    if method in ("legato", "rtc-train") and req.d > spec.d_max:
        raise MethodError(f"delay d={req.d} exceeds the trained d_max={spec.d_max} of {source}")
    if not req.d <= req.s <= h - req.d:
        raise MethodError(f"need d <= s <= H - d, got d={req.d}, s={req.s}, H={h}")
    if method == "legato" and req.d + req.r > h - req.s:
        raise MethodError(f"ramp must stay in the overlap: d + r = {req.d + req.r} > H - s = {h - req.s}")


def check_held_out(train_seed: int | None, seed: int, source: str = "the model") -> None:
    """Refuse to evaluate on the episode set a model was trained on (episodes depend only on
    (seed, index): sets with other seeds share no episode, see sim.episodes)."""
    if train_seed is not None and int(train_seed) == seed:
        raise MethodError(f"episode seed {seed} is the seed {source} was trained on; "
                          f"evaluate on a held-out seed such as {held_out_seed(train_seed)}")  # fmt: skip


class Observation(Protocol):
    """A batch of observations (sim.env.Observation and the runtime's sources match it)."""

    image: np.ndarray  # (b, H, W, 3) uint8
    tokens: np.ndarray  # (b, l) int64
    state: np.ndarray  # (b, s_dim) raw proprio: joint positions then velocities


class ChunkPolicy:
    """A model behind the one chunk assembly (edge.denoiser.ChunkDenoiser), for batches of
    observations: the evaluation's rollouts and the export's gates call ``chunk``.

    Subclasses implement ``field(batch)``: the velocity field of their backend, either for the
    whole batch (torch) or for batch 1 (the robot's engines: then the batch runs observation by
    observation through the very denoiser the robot runs). Inference-time RTC needs autograd and
    is the torch backend's own (``rtc_chunk``).
    """

    def __init__(self, adapter: Any, source: str = "the model") -> None:
        self.adapter, self.spec, self.norm, self.source = adapter, adapter.spec, adapter.norm, source
        self._denoisers: dict[tuple[str, int, bool], Any] = {}

    def field(self, batch: int) -> Any:
        """An edge.denoiser.Field of batch ``batch`` (or of batch 1)."""
        raise NotImplementedError

    def fused_engine(self) -> Any:
        """The fused graph's engine where the backend runs one (None: the stepwise path)."""
        return None

    def rtc_chunk(self, obs: Observation, prev: np.ndarray, req: ChunkRequest, eps: np.ndarray) -> np.ndarray:
        raise MethodError(f"{type(self).__name__} is forward-only; inference-time RTC needs the torch model")

    def denoiser(self, mode: str, batch: int, fused: bool = False) -> Any:
        """The ChunkDenoiser of this backend for ``mode`` and a batch (made once, then reused)."""
        from edge.denoiser import ChunkDenoiser

        key = (mode, batch, fused)
        den = self._denoisers.get(key)
        if den is None:
            fu = self.fused_engine() if fused else None
            den = ChunkDenoiser(self.adapter, self.field(batch), mode=mode, source=self.source, fused=fu)
            self._denoisers[key] = den
        return den

    def chunk(self, method: str, obs: Observation, prev: np.ndarray | None, req: ChunkRequest,
              eps: np.ndarray) -> np.ndarray:  # fmt: skip
        """The next chunk in raw joint units (b, h, a). prev: the chunk being executed (raw),
        whose index req.s is the new chunk's index 0; None for the first chunk (plain sampling)."""
        check_request(method, self.spec, req, source=self.source)
        if method == "rtc" and prev is not None:
            return self.rtc_chunk(obs, prev, req, eps)
        mode = {"legato": "legato", "rtc-train": "hard-prefix"}.get(method, "naive")
        fused = self.fused_engine() is not None and mode != "hard-prefix" and req.final_blend
        b = eps.shape[0]
        den = self.denoiser(mode, b, fused)
        tail = None if prev is None else prev[:, req.s :]
        if den.batch == b:
            den.set_observation(obs.image, obs.tokens, obs.state)
            return den.denoise(eps, tail, req).reshape(eps.shape[:2] + (self.spec.action_dim,)).copy()
        out = np.empty((b, self.spec.horizon, self.spec.action_dim), np.float32)
        for i in range(b):  # a batch-1 field: one observation at a time, as on the robot
            den.set_observation(obs.image[i], obs.tokens[i], obs.state[i])
            out[i] = den.denoise(eps[i : i + 1], None if tail is None else tail[i], req)
        return out

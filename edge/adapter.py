"""The robot side of a policy adapter: what an architecture declares about its bundle, read from
the manifest's ``adapter`` section (docs/adapters.md). No torch, and no architecture: everything
the runtime knows about a model's graphs is in this data.

An adapter declares
- its graphs by tensor name: a prefix (observation -> named context tensors), a velocity head
  ((x, t, omega, context) -> velocity), which prefix output feeds which head input, and
  optionally a fused graph ((observation, eps, a_ref, omega) -> chunk, all N steps unrolled);
- its time convention: ``t0-noise`` (ours: x_t = (1 - t) eps + t a, Euler from t = 0 to 1) or
  ``t1-noise`` (LeRobot, openpi: x_t = t eps + (1 - t) a, Euler from t = 1 to 0). The sampler
  (edge.denoiser) always runs in t0-noise and converts at the head's boundary:
  t_graph = 1 - t and v = -v_graph;
- chunk length H, Euler steps N, action and state dims, and the graphs' padded dims (LeRobot
  pads both to 32: the sampler works on the padded action dims, the robot gets the first a);
- its observation schema: cameras by name and size (uint8 (1, height, width, 3) RGB each), the
  state input (normalised, (1, state_pad); or none, e.g. pi0.5's state is text in its prompt),
  the language as token ids (+ an attention mask) with the tokenizer file the bundle carries, and
  optionally the prompt the robot builds from the task and the state (PromptSpec);
- its normalisation as data (edge.normalize.Normalizer);
- its capabilities: an omega input (Legato's continuation), per-token flow time (training-time
  RTC's hard prefix), a fused graph.

Every malformed field is a one-line BundleError naming the field and the bad value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge.errors import BundleError, LegatoError
from edge.normalize import Normalizer
from edge.policy import INFERENCE_METHODS, ModelSpec
from edge.schedule import SCHEDULE_SHAPES

TIME_CONVENTIONS = ("t0-noise", "t1-noise")
TOKEN_DTYPES = ("int64", "int32")
MASK_DTYPES = ("bool", "int64", "int32", "float32")


# ---- typed field readers: one-line errors naming the field ------------------------------------
def _obj(d: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise BundleError(f"{where} must be an object, got {type(d).__name__} {_show(d)}")
    return d


def _show(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def _field(d: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise BundleError(f"{where} lacks {key!r}")
    return d[key]


def _int(d: Mapping[str, Any], key: str, where: str, lo: int = 1) -> int:
    v = _field(d, key, where)
    if isinstance(v, bool) or not isinstance(v, int):
        raise BundleError(f"{where}.{key} must be an integer, got {type(v).__name__} {_show(v)}")
    if v < lo:
        raise BundleError(f"{where}.{key} = {v} must be >= {lo}")
    return v


def _num(d: Mapping[str, Any], key: str, where: str) -> float:
    v = _field(d, key, where)
    if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0 or v == float("inf"):
        raise BundleError(f"{where}.{key} must be a finite number > 0, got {_show(v)}")
    return float(v)


def _str(d: Mapping[str, Any], key: str, where: str, choices: tuple[str, ...] | None = None,
         optional: bool = False) -> Any:  # fmt: skip
    v = d.get(key) if optional else _field(d, key, where)
    if optional and v is None:
        return None
    if not isinstance(v, str) or not v:
        raise BundleError(f"{where}.{key} must be a non-empty string, got {type(v).__name__} {_show(v)}")
    if choices is not None and v not in choices:
        raise BundleError(f"{where}.{key} = {v!r} is not one of {', '.join(choices)}")
    return v


def _bool(d: Mapping[str, Any], key: str, where: str) -> bool:
    v = _field(d, key, where)
    if not isinstance(v, bool):
        raise BundleError(f"{where}.{key} must be true or false, got {type(v).__name__} {_show(v)}")
    return v


# ---- the schema --------------------------------------------------------------------------------
@dataclass(frozen=True)
class CameraSpec:
    """One camera: the profile's [cameras] key and LeRobot's ``observation.images.<name>``."""

    name: str
    input: str  # graph input: uint8 (1, height, width, 3) RGB
    height: int
    width: int


@dataclass(frozen=True)
class PromptSpec:
    """A prompt the robot builds from the task and each observation's state before tokenizing it
    (pi0.5: the state is not a graph input but text in the prompt, openpi's PaligemmaTokenizer).
    The state is normalised with LeRobot's quantile / min-max formula, 2 (s - low) / (high - low)
    - 1 (a zero range counts as ``eps``), cut into ``bins`` equal bins of [-1, 1] (np.digitize
    minus 1, as LeRobot's: above the range the last bin, below it -1), the numbers joined by spaces; the task
    is stripped, with "_" and newlines turned into spaces. edge.language.build_prompt does it."""

    template: str  # e.g. "Task: {task}, State: {state};\nAction: "
    state_low: tuple[float, ...]  # (s,) LeRobot's q01 (QUANTILES) or min (MIN_MAX)
    state_high: tuple[float, ...]  # (s,) q99 or max
    eps: float  # replaces a zero range
    bins: int  # 256 in pi0.5


@dataclass(frozen=True)
class LanguageSpec:
    """The instruction: token ids into the prefix, from a prompt through the bundle's tokenizer."""

    tokens: str  # graph input: (1, max_tokens) token ids
    mask: str | None  # graph input: (1, max_tokens) attention mask, 1 = real token; None: no mask
    max_tokens: int
    vocab_size: int  # ids must lie in 0..vocab_size-1
    pad_id: int  # id that pads a short prompt on the right
    tokenizer: str | None  # tokenizer.json in the bundle (the `tokenizers` library); None: ids only
    append: str  # appended to a prompt before tokenizing (LeRobot's SmolVLA appends "\n")
    prompt: PromptSpec | None = None  # the state inside the prompt (pi0.5); None: the prompt as given


@dataclass(frozen=True)
class ObservationSpec:
    cameras: tuple[CameraSpec, ...]
    state: str | None  # graph input: float32 (1, state_pad), normalised; None: no state input
    language: LanguageSpec | None

    @property
    def inputs(self) -> tuple[str, ...]:
        """Every graph input that carries the observation (the prefix's and the fused graph's)."""
        lang = () if self.language is None else (self.language.tokens, self.language.mask)
        return tuple(n for n in (*(c.input for c in self.cameras), *lang, self.state) if n is not None)


@dataclass(frozen=True)
class HeadIO:
    """The velocity head's tensor names."""

    x: str  # in: float32 (1, H, action_pad), the chunk estimate after the blend
    t: str  # in: float32 (1, H) per-token or (1,) per-chunk flow time, in the adapter's convention
    omega: str | None  # in: float32 (1, H), Legato's schedule channel; None: no continuation input
    velocity: str  # out: float32 (1, H, action_pad)
    context: tuple[tuple[str, str], ...]  # (head input, the prefix output that feeds it)


@dataclass(frozen=True)
class FusedIO:
    """The fused graph's tensor names (its observation inputs are the prefix's)."""

    eps: str  # in: float32 (1, H, action_pad) noise X_0
    a_ref: str  # in: float32 (1, H, action_pad) normalised reference (zeros for a first chunk)
    omega: str  # in: float32 (1, H) schedule (zeros: plain sampling)
    chunk: str  # out: float32 (1, H, action_pad) normalised chunk after N steps and the final blend


@dataclass(frozen=True)
class AdapterSpec:
    """Everything the robot knows about a policy, from the manifest's ``adapter`` section."""

    name: str  # the workstation adapter that exported it (legato.adapters), informational here
    method: str  # training method: legato | rtc-train | plain
    time_convention: str  # t0-noise | t1-noise
    horizon: int  # H
    num_steps: int  # N, fixed by training
    action_dim: int  # a: the robot's action entries (joint targets, in the robot's order)
    action_pad: int  # the graphs' action dim (>= a; the sampler's noise has this many)
    state_dim: int  # s: the robot's state entries
    state_pad: int  # the graphs' state dim (>= s; zeros after the normalised state)
    control_hz: float  # rate the training data was recorded at
    schedule_shape: str  # omega ramp shape used in training (edge.schedule)
    d_max: int
    r_max: int
    hard_prefix: bool  # the head takes per-token time (training-time RTC's clean prefix)
    observation: ObservationSpec
    prefix_outputs: tuple[str, ...]  # the context tensors, in the prefix graph's order
    head: HeadIO
    fused: FusedIO | None
    norm: Normalizer

    @property
    def omega(self) -> bool:
        """The head has Legato's omega input (continuation from the executed prefix)."""
        return self.head.omega is not None

    @property
    def spec(self) -> ModelSpec:
        """The sampler-level view the loop and the checks read (image_hw / max_tokens: the first
        camera's size and the language length, for code that reads one camera)."""
        cam = self.observation.cameras[0] if self.observation.cameras else None
        lang = self.observation.language
        return ModelSpec(
            method=self.method, horizon=self.horizon, num_steps=self.num_steps, action_dim=self.action_dim,
            state_dim=self.state_dim, image_hw=(cam.height, cam.width) if cam else (0, 0),
            max_tokens=lang.max_tokens if lang else 0, d_max=self.d_max, r_max=self.r_max,
            schedule_shape=self.schedule_shape, control_hz=self.control_hz,
        )  # fmt: skip

    # ---- (de)serialisation ---------------------------------------------------------------------
    @staticmethod
    def from_dict(d: Any, where: str = "manifest adapter") -> AdapterSpec:
        d = _obj(d, where)
        sch = _obj(_field(d, "schedule", where), f"{where}.schedule")
        caps = _obj(_field(d, "capabilities", where), f"{where}.capabilities")
        obs = _obj(_field(d, "observation", where), f"{where}.observation")
        graphs = _obj(_field(d, "graphs", where), f"{where}.graphs")
        cams = _field(obs, "cameras", f"{where}.observation")
        if not isinstance(cams, list):
            raise BundleError(f"{where}.observation.cameras must be a list, got {type(cams).__name__}")
        cameras = []
        for i, c in enumerate(cams):
            w = f"{where}.observation.cameras[{i}]"
            c = _obj(c, w)
            cameras.append(CameraSpec(_str(c, "name", w), _str(c, "input", w), _int(c, "height", w),
                                      _int(c, "width", w)))  # fmt: skip
        language = None
        if obs.get("language") is not None:
            w = f"{where}.observation.language"
            lg = _obj(obs["language"], w)
            append = lg.get("append", "")
            if not isinstance(append, str):
                raise BundleError(f"{w}.append must be a string, got {type(append).__name__}")
            language = LanguageSpec(
                tokens=_str(lg, "tokens", w), mask=_str(lg, "mask", w, optional=True),
                max_tokens=_int(lg, "max_tokens", w), vocab_size=_int(lg, "vocab_size", w),
                pad_id=_int(lg, "pad_id", w, lo=0), tokenizer=_str(lg, "tokenizer", w, optional=True),
                append=append, prompt=_prompt(lg.get("prompt"), f"{w}.prompt"),
            )  # fmt: skip
        w = f"{where}.graphs"
        prefix = _obj(_field(graphs, "prefix", w), f"{w}.prefix")
        outs = _field(prefix, "outputs", f"{w}.prefix")
        if not isinstance(outs, list) or not outs or not all(isinstance(x, str) and x for x in outs):
            raise BundleError(f"{w}.prefix.outputs must be a non-empty list of names, got {_show(outs)}")
        hd = _obj(_field(graphs, "flow_head", w), f"{w}.flow_head")
        ctx = _obj(_field(hd, "context", f"{w}.flow_head"), f"{w}.flow_head.context")
        for k, v in ctx.items():
            if not isinstance(v, str):
                raise BundleError(f"{w}.flow_head.context.{k} must name a prefix output, got {_show(v)}")
        wh = f"{w}.flow_head"
        head = HeadIO(_str(hd, "x", wh), _str(hd, "t", wh), _str(hd, "omega", wh, optional=True),
                      _str(hd, "velocity", wh), tuple(ctx.items()))  # fmt: skip
        fused = None
        if graphs.get("fused") is not None:
            wf = f"{w}.fused"
            fu = _obj(graphs["fused"], wf)
            fused = FusedIO(
                _str(fu, "eps", wf), _str(fu, "a_ref", wf), _str(fu, "omega", wf), _str(fu, "chunk", wf)
            )
        try:
            norm = Normalizer.from_dict(_field(d, "normalization", where))
        except ValueError as e:
            raise BundleError(f"{where}.normalization: {e}") from None
        out = AdapterSpec(
            name=_str(d, "name", where),
            method=_str(d, "method", where, tuple(dict.fromkeys(INFERENCE_METHODS.values()))),
            time_convention=_str(d, "time_convention", where, TIME_CONVENTIONS),
            horizon=_int(d, "horizon", where, lo=2), num_steps=_int(d, "num_steps", where),
            action_dim=_int(d, "action_dim", where), action_pad=_int(d, "action_pad", where),
            state_dim=_int(d, "state_dim", where), state_pad=_int(d, "state_pad", where),
            control_hz=_num(d, "control_hz", where),
            schedule_shape=_str(sch, "shape", f"{where}.schedule", SCHEDULE_SHAPES),
            d_max=_int(sch, "d_max", f"{where}.schedule", lo=0),
            r_max=_int(sch, "r_max", f"{where}.schedule", lo=0),
            hard_prefix=_bool(caps, "hard_prefix", f"{where}.capabilities"),
            observation=ObservationSpec(
                tuple(cameras), _str(obs, "state", f"{where}.observation", optional=True), language),
            prefix_outputs=tuple(outs), head=head, fused=fused, norm=norm,
        )  # fmt: skip
        out._check(caps, where)
        return out

    def _check(self, caps: Mapping[str, Any], where: str) -> None:
        """Consistency of the declaration with itself (the graphs are checked by check_graphs)."""
        for k, have in (("omega", self.omega), ("fused", self.fused is not None)):
            if _bool(caps, k, f"{where}.capabilities") != have:
                raise BundleError(f"{where}.capabilities.{k} = {not have} but the graphs section "
                                  f"{'names' if have else 'has no'} {k} tensor")  # fmt: skip
        if self.action_pad < self.action_dim or self.state_pad < self.state_dim:
            raise BundleError(f"{where}: padded dims (action_pad {self.action_pad}, state_pad "
                              f"{self.state_pad}) are smaller than action_dim {self.action_dim} / "
                              f"state_dim {self.state_dim}")  # fmt: skip
        if self.method == "legato" and not self.omega:
            raise BundleError(f"{where}: method 'legato' needs an omega input on the flow head")
        if self.method == "rtc-train" and not self.hard_prefix:
            raise BundleError(f"{where}: method 'rtc-train' needs per-token time (capabilities.hard_prefix)")
        if self.d_max >= self.horizon:
            raise BundleError(f"{where}.schedule.d_max = {self.d_max} must be < horizon {self.horizon}")
        if self.norm.state_mean.shape != (self.state_dim,):
            raise BundleError(f"{where}.normalization: state statistics {self.norm.state_mean.shape} do not "
                              f"match state_dim {self.state_dim}")  # fmt: skip
        want = {(self.horizon, self.action_dim), (self.action_dim,)}
        if self.norm.action_mean.shape not in want:
            raise BundleError(f"{where}.normalization: action statistics {self.norm.action_mean.shape} do "
                              f"not match (H, a) = {(self.horizon, self.action_dim)}")  # fmt: skip
        if not self.observation.cameras and self.observation.language is None:
            raise BundleError(f"{where}.observation names neither a camera nor a language input")
        names = [c.name for c in self.observation.cameras]
        if len(set(names)) != len(names):
            raise BundleError(f"{where}.observation.cameras: camera names repeat ({', '.join(names)})")
        ins = self.observation.inputs
        if len(set(ins)) != len(ins):
            raise BundleError(f"{where}.observation: graph input names repeat ({', '.join(ins)})")
        lang = self.observation.language
        if lang is not None and not 0 <= lang.pad_id < lang.vocab_size:
            raise BundleError(f"{where}.observation.language.pad_id = {lang.pad_id} is outside the "
                              f"vocabulary 0..{lang.vocab_size - 1}")  # fmt: skip
        if lang is not None and lang.prompt is not None:
            w = f"{where}.observation.language.prompt"
            if lang.tokenizer is None:
                raise BundleError(f"{w}: a prompt built on the robot needs the bundle's tokenizer "
                                  "(language.tokenizer)")  # fmt: skip
            for k in ("state_low", "state_high"):
                if len(getattr(lang.prompt, k)) != self.state_dim:
                    raise BundleError(f"{w}.{k} has {len(getattr(lang.prompt, k))} entries, state_dim is "
                                      f"{self.state_dim}")  # fmt: skip
        unknown = [p for _, p in self.head.context if p not in self.prefix_outputs]
        if unknown:
            raise BundleError(f"{where}.graphs.flow_head.context names {', '.join(unknown)}, which the "
                              f"prefix does not output ({', '.join(self.prefix_outputs)})")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        lang = self.observation.language
        return {
            "name": self.name, "method": self.method, "time_convention": self.time_convention,
            "horizon": self.horizon, "num_steps": self.num_steps,
            "action_dim": self.action_dim, "action_pad": self.action_pad,
            "state_dim": self.state_dim, "state_pad": self.state_pad, "control_hz": self.control_hz,
            "schedule": {"shape": self.schedule_shape, "d_max": self.d_max, "r_max": self.r_max},
            "capabilities": {"omega": self.omega, "hard_prefix": self.hard_prefix,
                             "fused": self.fused is not None},
            "observation": {
                "cameras": [{"name": c.name, "input": c.input, "height": c.height, "width": c.width}
                            for c in self.observation.cameras],
                "state": self.observation.state,
                "language": None if lang is None else {
                    "tokens": lang.tokens, "mask": lang.mask, "max_tokens": lang.max_tokens,
                    "vocab_size": lang.vocab_size, "pad_id": lang.pad_id, "tokenizer": lang.tokenizer,
                    "append": lang.append,
                    **({} if lang.prompt is None else {"prompt": {
                        "template": lang.prompt.template, "state_low": list(lang.prompt.state_low),
                        "state_high": list(lang.prompt.state_high), "eps": lang.prompt.eps,
                        "bins": lang.prompt.bins}})},
            },
            "normalization": self.norm.to_dict(),
            "graphs": {
                "prefix": {"outputs": list(self.prefix_outputs)},
                "flow_head": {"x": self.head.x, "t": self.head.t, "omega": self.head.omega,
                              "velocity": self.head.velocity, "context": dict(self.head.context)},
                "fused": None if self.fused is None else {
                    "eps": self.fused.eps, "a_ref": self.fused.a_ref, "omega": self.fused.omega,
                    "chunk": self.fused.chunk},
            },
        }  # fmt: skip

    # ---- against the graphs ----------------------------------------------------------------------
    def expected_io(self) -> dict[str, tuple[dict[str, tuple[str, tuple[int, ...]] | None], dict[str, Any]]]:
        """What the declaration fixes about each graph's I/O: {graph: ({input: (dtype, shape) or
        None}, {output: (dtype, shape) or None})}; None: the name is required, its dtype and shape
        are the architecture's own (context tensors, checked head against prefix instead)."""
        h, ap, f32 = self.horizon, self.action_pad, "float32"
        obs: dict[str, Any] = {
            c.input: ("uint8", (1, c.height, c.width, 3)) for c in self.observation.cameras
        }
        if self.observation.state is not None:
            obs[self.observation.state] = (f32, (1, self.state_pad))
        lang = self.observation.language
        if lang is not None:
            obs[lang.tokens] = None  # int64 or int32: checked in check_graphs
            if lang.mask is not None:
                obs[lang.mask] = None
        head_in: dict[str, Any] = {self.head.x: (f32, (1, h, ap)), self.head.t: None}
        if self.head.omega is not None:
            head_in[self.head.omega] = (f32, (1, h))
        head_in.update({k: None for k, _ in self.head.context})
        out: dict[str, Any] = {
            "prefix": (obs, dict.fromkeys(self.prefix_outputs)),
            "flow_head": (head_in, {self.head.velocity: (f32, (1, h, ap))}),
        }
        if self.fused is not None:
            fu = self.fused
            fin = {**obs, fu.eps: (f32, (1, h, ap)), fu.a_ref: (f32, (1, h, ap)), fu.omega: (f32, (1, h))}
            out["fused"] = (fin, {fu.chunk: (f32, (1, h, ap))})
        return out

    def check_graphs(self, graphs: Mapping[str, tuple[Mapping[str, tuple[str, tuple[int, ...]]],
                                                      Mapping[str, tuple[str, tuple[int, ...]]]]],
                     where: str) -> None:  # fmt: skip
        """Refuse graphs whose I/O is not what this declaration says: graphs maps a graph name
        to ({input: (dtype, shape)}, {output: (dtype, shape)}) as the manifest or the file has it."""
        want = self.expected_io()
        extra = sorted(set(graphs) - set(want))
        if extra:
            raise BundleError(f"{where}: graph {extra[0]} is not declared by the adapter (declared: "
                              f"{', '.join(want)})")  # fmt: skip
        for g in ("prefix", "flow_head"):
            if g not in graphs:
                raise BundleError(f"{where}: bundle lacks the {g} graph")
        if self.fused is not None and "fused" not in graphs:
            raise BundleError(f"{where}: the adapter declares a fused graph the bundle lacks")
        for g, (ins, outs) in graphs.items():
            w_in, w_out = want[g]
            for kind, have, exp in (("inputs", ins, w_in), ("outputs", outs, w_out)):
                if set(have) != set(exp):
                    raise BundleError(f"{where}: graph {g} {kind} {sorted(have)} differ from the adapter's "
                                      f"{sorted(exp)}")  # fmt: skip
                for n, e in exp.items():
                    if e is not None and tuple(have[n]) != (e[0], tuple(e[1])):
                        got = f"{have[n][0]}{list(have[n][1])}"
                        raise BundleError(f"{where}: graph {g} {kind[:-1]} {n!r} is {got}, the adapter "
                                          f"needs {e[0]}{list(e[1])}")  # fmt: skip
        prefix_out = graphs["prefix"][1]
        head_in = graphs["flow_head"][0]
        for hin, pout in self.head.context:
            if tuple(head_in[hin]) != tuple(prefix_out[pout]):
                raise BundleError(f"{where}: flow_head input {hin!r} {head_in[hin]} differs from the prefix "
                                  f"output {pout!r} {prefix_out[pout]} that feeds it")  # fmt: skip
        t_dtype, t_shape = head_in[self.head.t]
        per_token, per_chunk = (1, self.horizon), (1,)
        if t_dtype != "float32" or tuple(t_shape) not in (
            (per_token,) if self.hard_prefix else (per_token, per_chunk)
        ):
            raise BundleError(f"{where}: flow_head time input {self.head.t!r} is {t_dtype}{list(t_shape)}; "
                              "the "
                              f"adapter needs float32{list(per_token)}"
                              + ("" if self.hard_prefix else f" or float32{list(per_chunk)}"))  # fmt: skip
        lang = self.observation.language
        if lang is not None:
            for g in [x for x in ("prefix", "fused") if x in graphs]:
                ins = graphs[g][0]
                dt, shp = ins[lang.tokens]
                if dt not in TOKEN_DTYPES or tuple(shp) != (1, lang.max_tokens):
                    raise BundleError(f"{where}: graph {g} token input {lang.tokens!r} is {dt}{list(shp)}, "
                                      "the "
                                      f"adapter needs int64[1, {lang.max_tokens}]")  # fmt: skip
                if lang.mask is not None:
                    dt, shp = ins[lang.mask]
                    if dt not in MASK_DTYPES or tuple(shp) != (1, lang.max_tokens):
                        raise BundleError(f"{where}: graph {g} mask input {lang.mask!r} is {dt}{list(shp)}, "
                                          f"the adapter needs bool[1, {lang.max_tokens}]")  # fmt: skip


def _prompt(d: Any, where: str) -> PromptSpec | None:
    """The language's prompt section (PromptSpec), or None where absent."""
    if d is None:
        return None
    d = _obj(d, where)
    template = _str(d, "template", where)
    if "{task}" not in template or "{state}" not in template:
        raise BundleError(f"{where}.template must hold {{task}} and {{state}}, got {_show(template)}")
    arrays = {}
    for k in ("state_low", "state_high"):
        v = _field(d, k, where)
        if not isinstance(v, list) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in v
        ):
            raise BundleError(f"{where}.{k} must be a list of finite numbers, got {_show(v)}")
        arrays[k] = tuple(float(x) for x in v)
    return PromptSpec(template, arrays["state_low"], arrays["state_high"], _num(d, "eps", where),
                      _int(d, "bins", where, lo=2))  # fmt: skip


def read_adapter(d: Any, where: str) -> AdapterSpec:
    """AdapterSpec.from_dict with every known failure as a BundleError."""
    try:
        return AdapterSpec.from_dict(d, where)
    except BundleError:
        raise
    except LegatoError as e:
        raise BundleError(f"{where}: {e}") from None

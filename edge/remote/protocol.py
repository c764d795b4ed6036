"""What `legato serve` says on connect, what a request and a reply hold, and the checks.

openpi's protocol (websocket; msgpack, edge.remote.wire), with Legato's continuation in the same
maps so that openpi-client works unchanged and a Legato client gets continuation:

- on connect the server sends the **metadata** map (:func:`metadata`): the observation it expects
  (every key with its shape and dtype), the prompt (None: this bundle takes token ids), the chunk
  it returns (H, action dim, units), the control rate, N, the trained d_max / r_max and the
  schedule shape, the profile's execution horizon and ramp, the request's ``legato`` fields, the
  message size limit, and the model section of the bundle manifest (what ``--sim`` builds its
  arm from). A client builds a conforming request from it alone.
- a **request** is one observation map: the keys of ``metadata["observation"]``, exactly, plus an
  optional ``legato`` map (:data:`LEGATO_REQUEST`): ``chunk_id`` (echoed), ``prev_tail`` (k, a)
  float32 raw = the executing chunk's actions from index s on (absent: the first chunk, omega =
  0), ``d``, ``s``, ``r`` and optional ``noise`` (H, noise_dim) float32. The continuation state travels
  in the request, so the server keeps none between requests: any replica serves any request.
- a **reply** is ``{"actions": (H, a) float32, "policy_timing": {"infer_ms"}, "server_timing":
  {"infer_ms", "prev_total_ms" (from the second reply on)}, "legato": {"chunk_id", "d", "s", "r",
  "mode", "server", "queue_ms", "engines_ms", "stages_ms": {stage: ms}}}``: openpi's keys and
  openpi's timing, and the continuation's.
- an **error** is a text frame with one line, then a close (1008 bad request, 1011 internal).

Observation keys follow LeRobot's feature names: ``observation.image`` (H, W, 3) uint8 RGB (or
``observation.images.<camera>`` for each of several cameras), ``observation.state`` (state_dim,)
float32 raw proprio (joint positions, then velocities, rad and rad/s), and the instruction:
``observation.language.tokens`` (max_tokens,) int64 token ids, or ``prompt``, openpi's task string,
which the server tokenizes with the bundle's tokenizer (so a robot without the bundle needs no
tokenizer); a request carries one of the two where the bundle has a tokenizer (the metadata marks
each with ``"or"``: the other key), and only ``prompt`` for a policy whose prompt the server builds
from the task and each request's state (pi0.5). :func:`observation_schema` reads them off the
bundle's adapter; ``metadata["cameras"]`` names the cameras in the policy's order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.errors import LegatoError

PROTOCOL = "openpi-websocket"  # openpi's serving protocol: what openpi-client speaks
LEGATO_PROTOCOL = 1  # version of the continuation fields
IMAGE, STATE, TOKENS = "observation.image", "observation.state", "observation.language.tokens"
IMAGES, PROMPT = "observation.images.", "prompt"  # one key per camera of several; openpi's task string
MAX_PROMPT_CHARS = 1000
LEGATO_REQUEST: dict[str, str] = {
    "chunk_id": "int >= 0, echoed in the reply (the client drops replies to older requests)",
    "prev_tail": "(k, action_dim) float32, 1 <= k <= H: the executing chunk's actions from index s on, "
    "raw units; absent for the first chunk (omega = 0)",
    "d": "int: delay in control steps, 0..d_max",
    "s": "int: execution horizon (index of the executing chunk where prev_tail starts)",
    "r": "int: Legato ramp length (d + r <= H - s)",
    "noise": "optional (H, noise_dim) float32 initial noise (metadata action.noise_dim: the policy's "
    "padded action dimension, e.g. 32 for LeRobot's policies); the server draws it when absent",
}
DEFAULT_MAX_MESSAGE = 1 << 20  # bytes, at least; metadata() raises it to 4x the largest request


class Refusal(LegatoError):
    """A request the server does not serve: one line, sent to the client as a text frame."""


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: str  # numpy dtype.str: "|u1", "<f4", "<i8"
    range: tuple[int, int] | None = None  # inclusive bounds of every element (token ids: the vocabulary)
    alternative: str | None = None  # the key a request may send instead of this one (one of the two)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"shape": list(self.shape), "dtype": self.dtype}
        if self.range is not None:
            d["range"] = list(self.range)
        if self.alternative is not None:
            d["or"] = self.alternative
        return d

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class TextSpec:
    """A string in the request (the task as ``prompt``), at most ``max_chars`` characters."""

    max_chars: int
    alternative: str | None = None  # the key a request may send instead of this one (one of the two)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": "text", "max_chars": self.max_chars}
        if self.alternative is not None:
            d["or"] = self.alternative
        return d

    @property
    def nbytes(self) -> int:
        return 4 * self.max_chars  # UTF-8, at most


def observation_schema(adapter: Any) -> dict[str, TensorSpec | TextSpec]:
    """The observation a bundle's policy takes, by key (adapter: edge.adapter.AdapterSpec), in
    LeRobot's feature names: ``observation.image`` for a policy with one camera (or none),
    ``observation.images.<camera>`` for each of several; ``observation.state`` raw (a policy that
    writes its state into its prompt, pi0.5, needs it too); the instruction as
    ``observation.language.tokens`` ids or, where the bundle carries a tokenizer, as ``prompt``,
    the task string openpi's clients send (one of the two); only as ``prompt`` for a policy whose
    prompt the server builds from the task and the state."""
    spec, obs = adapter.spec, adapter.observation
    u8, f4, i8 = (np.dtype(t).str for t in (np.uint8, np.float32, np.int64))
    out: dict[str, TensorSpec | TextSpec] = {}
    keys = camera_keys(adapter)
    if keys is None:
        out[IMAGE] = TensorSpec((*spec.image_hw, 3), u8)
    else:
        out |= {keys[c.name]: TensorSpec((c.height, c.width, 3), u8) for c in obs.cameras}
    out[STATE] = TensorSpec((spec.state_dim,), f4)
    lang = obs.language
    if lang is not None and lang.prompt is not None:
        out[PROMPT] = TextSpec(MAX_PROMPT_CHARS)
    elif lang is not None:
        vocab = (0, lang.vocab_size - 1) if lang.vocab_size else None
        either = lang.tokenizer is not None  # the server can tokenize the task itself
        out[TOKENS] = TensorSpec((lang.max_tokens,), i8, vocab, PROMPT if either else None)
        if either:
            out[PROMPT] = TextSpec(MAX_PROMPT_CHARS, TOKENS)
    return out


def metadata_cameras(adapter: Any) -> list[dict[str, Any]]:
    """The policy's cameras in its order, as the metadata lists them: name, height, width and the
    request key of each (what a robot needs to open its cameras by the profile's names)."""
    keys = camera_keys(adapter)
    return [
        {"name": c.name, "height": c.height, "width": c.width, "key": keys[c.name] if keys else IMAGE}
        for c in adapter.observation.cameras
    ]


def camera_keys(adapter: Any) -> dict[str, str] | None:
    """{camera name: request key} for a policy with several cameras; None for one or none (its
    image travels as ``observation.image``)."""
    cams = adapter.observation.cameras
    return {c.name: IMAGES + c.name for c in cams} if len(cams) > 1 else None


def parse_schema(d: Any, source: str) -> dict[str, TensorSpec | TextSpec]:
    """A metadata map's ``observation`` (what :func:`observation_schema` wrote) back as specs;
    one line (LegatoError) where it is not such a map."""

    def one(v: Any) -> TensorSpec | TextSpec:
        alt = str(v["or"]) if v.get("or") is not None else None
        if v.get("type") == "text":
            return TextSpec(int(v["max_chars"]), alt)
        rng = tuple(int(r) for r in v["range"]) if "range" in v else None
        return TensorSpec(tuple(int(n) for n in v["shape"]), str(np.dtype(v["dtype"]).str), rng, alt)  # type: ignore[arg-type]

    try:
        out = {str(k): one(v) for k, v in d.items()}
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise LegatoError(
            f"{source}: the metadata's observation is not a map of arrays and texts ({type(e).__name__}: {e})"
        ) from None
    for k, t in out.items():
        if t.alternative is not None and out.get(t.alternative, t).alternative != k:
            raise LegatoError(f"{source}: the metadata's observation {k} names {t.alternative!r} as its "
                              "alternative, which does not name it back")  # fmt: skip
    return out


def metadata(
    man: Any, prof: Any, den: Any, server_id: str, version: str, max_message: int | None = None
) -> dict[str, Any]:
    """The map sent on connect (man: bundle Manifest, prof: Profile, den: the served denoiser)."""
    spec = den.spec
    model = man.data["model"]
    obs = observation_schema(man.adapter)
    h, a = spec.horizon, spec.action_dim
    largest = sum(t.nbytes for t in obs.values()) + 2 * h * a * 4 + 4096  # both alternatives: an upper bound
    limit = max_message or max(DEFAULT_MAX_MESSAGE, 4 * largest)
    joints = model.get("task", {}).get("arm", {}).get("joint_names")
    return {
        "server": "legato-edge",
        "version": version,
        "protocol": PROTOCOL,
        "legato_protocol": LEGATO_PROTOCOL,
        "server_id": server_id,
        "policy": {
            "name": man.name,
            "adapter": man.adapter.name,
            "method": spec.method,
            "mode": den.mode,
            "profile": prof.name,
            "backend": prof.engine("flow_head").backend,
            "precision": man.precision,
        },
        "observation": {k: t.to_dict() for k, t in obs.items()},
        "cameras": metadata_cameras(man.adapter),
        # None: token ids only (observation.language.tokens); else the task string the server
        # tokenizes, written into the policy's prompt with each request's state where the template
        # is not None (pi0.5)
        "prompt": None if PROMPT not in obs else {"key": PROMPT, "template": _template(man.adapter)},
        # the token ids are the simulator's own words (sim.language), as `legato run --sim` gives
        # them; otherwise --sim sends each episode's instruction as the prompt
        "sim_token_ids": TOKENS in obs and _speaks_sim_ids(man),
        "action": {
            "horizon": h,
            "dim": a,
            "noise_dim": int(den.noise_shape[-1]),
            "units": "rad",
            "frame": "absolute joint targets",
            "joints": list(joints) if joints else None,
        },
        "control_hz": float(prof.control.rate_hz),
        "num_steps": spec.num_steps,
        "d_max": spec.d_max,
        "r_max": spec.r_max,
        "schedule_shape": spec.schedule_shape,
        "execution_horizon": prof.control.execution_horizon,
        "ramp": prof.control.ramp,
        "request": {"legato": dict(LEGATO_REQUEST)},
        "max_message_bytes": int(limit),
        "spec": spec.to_dict(),  # the sampler's view (edge.policy.ModelSpec): the robot's loop reads it
        "model": model,
    }


def _speaks_sim_ids(man: Any) -> bool:
    from edge.simrig import speaks_sim_ids

    return speaks_sim_ids(man.path, man.adapter.observation.language)


def _template(adapter: Any) -> str | None:
    prompt = adapter.observation.language.prompt
    return prompt.template if prompt is not None else None


@dataclass
class Request:
    """A checked request: the observation by key (arrays; the prompt a str) and the continuation fields."""

    obs: dict[str, Any]
    chunk_id: int
    prev_tail: np.ndarray | None
    d: int
    s: int
    r: int
    noise: np.ndarray | None


def _either(schema: dict[str, TensorSpec | TextSpec], keys: list[str]) -> list[str]:
    """Keys for a message, two alternatives as one "a or b" (each pair once)."""
    out: list[str] = []
    for k in keys:
        alt = schema[k].alternative
        if alt is None:
            out.append(k)
        elif f"{alt} or {k}" not in out:
            out.append(f"{k} or {alt}")
    return out


def _int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise Refusal(f"legato.{name} must be an integer, got {type(v).__name__}")
    return int(v)


def _shape(x: np.ndarray) -> str:
    return str(tuple(x.shape))


def parse_request(
    msg: Any,
    schema: dict[str, TensorSpec | TextSpec],
    horizon: int,
    action_dim: int,
    default_s: int,
    noise_dim: int | None = None,
) -> Request:
    """Check a decoded request against the served bundle; raises :class:`Refusal` (one line).
    ``noise_dim``: the last dimension of the policy's noise (a LeRobot policy's padded action
    dimension; None: action_dim)."""
    nd = action_dim if noise_dim is None else noise_dim
    if not isinstance(msg, dict):
        raise Refusal(f"a request is a msgpack map, got {type(msg).__name__}")
    keys = {k for k in msg if k != "legato"}
    both = sorted(k for k, t in schema.items() if t.alternative is not None and {k, t.alternative} <= keys)
    if both:
        raise Refusal(f"send {both[0]} or {schema[both[0]].alternative}, not both")
    missing = sorted(k for k, t in schema.items() if k not in keys and t.alternative not in keys)
    unknown = sorted(str(k) for k in keys - set(schema))
    if missing or unknown:
        parts = ([f"missing {', '.join(_either(schema, missing))}"] if missing else []) + (
            [f"unknown {', '.join(unknown)}"] if unknown else []
        )
        expected = ", ".join(_either(schema, list(schema)))
        raise Refusal(f"observation keys do not match the bundle: {'; '.join(parts)} (expected {expected})")
    obs: dict[str, Any] = {}
    for k, t in schema.items():
        if k not in msg:  # the other one of two alternatives came
            continue
        x = msg[k]
        if isinstance(t, TextSpec):
            if not isinstance(x, str) or not x.strip() or len(x) > t.max_chars:
                got = f"{len(x)} characters" if isinstance(x, str) else type(x).__name__
                raise Refusal(
                    f"{k} must be a non-empty string of at most {t.max_chars} characters, got {got}"
                )
            obs[k] = x
            continue
        if not isinstance(x, np.ndarray):
            raise Refusal(f"observation {k} must be an array ({t.dtype} {t.shape}), got {type(x).__name__}")
        if x.dtype.str != t.dtype or tuple(x.shape) != t.shape:
            raise Refusal(
                f"observation {k} is {x.dtype.str} {_shape(x)}, the bundle needs {t.dtype} {t.shape}"
            )
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise Refusal(f"observation {k} holds NaN or inf")
        if t.range is not None and x.size and (x.min() < t.range[0] or x.max() > t.range[1]):
            raise Refusal(
                f"observation {k} holds values in [{x.min()}, {x.max()}], the bundle takes "
                f"[{t.range[0]}, {t.range[1]}]"
            )
        obs[k] = x
    leg = msg.get("legato")
    if leg is None:  # a plain openpi client: every chunk sampled from scratch
        return Request(obs, 0, None, 0, default_s, 0, None)
    if not isinstance(leg, dict):
        raise Refusal(f"legato must be a map, got {type(leg).__name__}")
    bad = sorted(str(k) for k in leg if k not in LEGATO_REQUEST)
    if bad:
        raise Refusal(f"unknown legato field {', '.join(bad)} (allowed: {', '.join(LEGATO_REQUEST)})")
    cid = _int(leg.get("chunk_id", 0), "chunk_id")
    if cid < 0:
        raise Refusal(f"legato.chunk_id must be >= 0, got {cid}")
    tail = leg.get("prev_tail")
    if tail is not None:
        if (
            not isinstance(tail, np.ndarray)
            or tail.dtype != np.float32
            or tail.ndim != 2
            or tail.shape[1] != action_dim
            or not 1 <= tail.shape[0] <= horizon
        ):
            got = f"{tail.dtype.str} {_shape(tail)}" if isinstance(tail, np.ndarray) else type(tail).__name__
            raise Refusal(
                f"legato.prev_tail must be <f4 (k, {action_dim}) with 1 <= k <= {horizon}, got {got}"
            )
        if not np.isfinite(tail).all():
            raise Refusal("legato.prev_tail holds NaN or inf")
    noise = leg.get("noise")
    if noise is not None:
        if not isinstance(noise, np.ndarray) or noise.dtype != np.float32 or noise.shape != (horizon, nd):
            got = (
                f"{noise.dtype.str} {_shape(noise)}"
                if isinstance(noise, np.ndarray)
                else type(noise).__name__
            )
            raise Refusal(f"legato.noise must be <f4 ({horizon}, {nd}), got {got}")
        if not np.isfinite(noise).all():
            raise Refusal("legato.noise holds NaN or inf")
    d = _int(leg.get("d", 0), "d")
    s = _int(leg.get("s", default_s), "s")
    r = _int(leg.get("r", 0), "r")
    return Request(obs, cid, tail, d, s, r, noise)

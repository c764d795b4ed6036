"""Read and verify a bundle (docs/bundle.md) without torch: what the robot loads.

``load_manifest(path)`` parses manifest.json into a :class:`Manifest` (the adapter section,
graph I/O, precision, parity, engine keys) and checks its structure and types, and that the
graphs' declared I/O is what the adapter says; ``verify(path)`` also checks every file's sha256,
opens every graph in onnxruntime and compares its inputs and outputs with the manifest. Every
failure is a one-line :class:`edge.errors.BundleError`. Nothing here knows a model architecture:
the manifest's ``adapter`` section (edge.adapter) declares it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.adapter import AdapterSpec, read_adapter
from edge.errors import BundleError
from edge.normalize import Normalizer
from edge.outputs import MARKER as OUTPUT_MARKER
from edge.outputs import read_marker, sha256_file
from edge.policy import ModelSpec

FORMAT = "legato-bundle"
FORMAT_VERSION = 2  # 2: the adapter section (policy adapters); 1: the reference model only
MANIFEST = "manifest.json"
GRAPHS = ("prefix", "flow_head", "fused")  # the fused graph is optional
REQUIRED_GRAPHS = ("prefix", "flow_head")
PRECISIONS = ("fp32", "fp16", "int8")
ENGINE_KEY_FIELDS = ("tensorrt", "cuda", "gpu", "compute_capability", "l4t", "jetpack", "onnx_sha256")
RELEASE_PROFILE = "profile.toml"  # written beside a flashed release's files (deploy/agent.py)
DTYPES = ("float32", "float16", "uint8", "int8", "int32", "int64", "bool")
_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int64)": "int64",
    "tensor(float16)": "float16",
    "tensor(int32)": "int32",
    "tensor(bool)": "bool",
}


def _type_error(where: str, want: str, v: Any) -> BundleError:
    s = repr(v)
    return BundleError(
        f"{where} must be {want}, got {type(v).__name__} {s if len(s) <= 40 else s[:37] + '...'}"
    )


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # numpy dtype name, one of DTYPES
    shape: tuple[int, ...]  # static

    @staticmethod
    def from_dict(d: Any, where: str) -> TensorInfo:
        if not isinstance(d, Mapping):
            raise _type_error(where, "an object {name, dtype, shape}", d)
        name, dtype, shape = d.get("name"), d.get("dtype"), d.get("shape")
        if not isinstance(name, str) or not name:
            raise _type_error(f"{where}.name", "a non-empty string", name)
        if dtype not in DTYPES:
            raise BundleError(f"{where} {name!r}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        if not isinstance(shape, list) or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0
                                                  for x in shape):  # fmt: skip
            raise _type_error(f"{where} {name!r} shape", "a list of positive integers", shape)
        return TensorInfo(name, dtype, tuple(shape))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class GraphInfo:
    name: str  # prefix | flow_head | fused
    file: str  # relative to the bundle
    sha256: str
    precision: str  # fp32 | fp16 | int8
    opset: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    def input(self, name: str) -> TensorInfo:
        for t in self.inputs:
            if t.name == name:
                return t
        raise BundleError(f"graph {self.name} has no input {name!r}")

    def output(self, name: str) -> TensorInfo:
        for t in self.outputs:
            if t.name == name:
                return t
        raise BundleError(f"graph {self.name} has no output {name!r}")

    def io(self) -> tuple[dict[str, tuple[str, tuple[int, ...]]], dict[str, tuple[str, tuple[int, ...]]]]:
        return (
            {t.name: (t.dtype, t.shape) for t in self.inputs},
            {t.name: (t.dtype, t.shape) for t in self.outputs},
        )


@dataclass(frozen=True)
class Manifest:
    path: Path  # the bundle folder
    data: dict[str, Any]  # manifest.json as parsed
    adapter: AdapterSpec  # the policy as its adapter declared it
    precision: str
    graphs: dict[str, GraphInfo]

    @property
    def spec(self) -> ModelSpec:
        return self.adapter.spec

    @property
    def norm(self) -> Normalizer:
        return self.adapter.norm

    @property
    def name(self) -> str:
        return str(self.data.get("name", self.path.name))

    @property
    def model_config(self) -> dict[str, Any]:
        """The checkpoint's own config as exported (the adapter's business; provenance here)."""
        return dict(self.data.get("model") or {})

    @property
    def parity(self) -> dict[str, Any]:
        return dict(self.data.get("parity", {}))

    @property
    def engines(self) -> dict[str, Any]:
        return dict(self.data.get("engines", {}))

    @property
    def profile_name(self) -> str | None:
        p = self.data.get("profile") or {}
        return p.get("name") if isinstance(p, dict) else None

    @property
    def files(self) -> dict[str, str]:
        return dict(self.data.get("files", {}))

    def graph_path(self, name: str) -> Path:
        if name not in self.graphs:
            raise BundleError(f"{self.path}: bundle has no {name} graph (has {', '.join(self.graphs)})")
        return self.path / self.graphs[name].file


def _graph_info(name: str, g: Any, where: str) -> GraphInfo:
    if not isinstance(g, Mapping):
        raise _type_error(where, "an object", g)
    for key, kind in (("file", str), ("sha256", str), ("precision", str), ("opset", int)):
        v = g.get(key)
        if not isinstance(v, kind) or isinstance(v, bool) or (kind is str and not v):
            raise _type_error(f"{where}.{key}", "a non-empty string" if kind is str else "an integer", v)
    if g["precision"] not in PRECISIONS:
        raise BundleError(f"{where}.precision {g['precision']!r} is not one of {', '.join(PRECISIONS)}")
    io = []
    for key in ("inputs", "outputs"):
        v = g.get(key)
        if not isinstance(v, list) or not v:
            raise _type_error(f"{where}.{key}", "a non-empty list", v)
        io.append(tuple(TensorInfo.from_dict(t, f"{where}.{key}[{i}]") for i, t in enumerate(v)))
    return GraphInfo(name, g["file"], g["sha256"], g["precision"], g["opset"], io[0], io[1])


def _check_sampler(data: Mapping[str, Any], ad: AdapterSpec, where: str) -> None:
    """The sampler section restates what training fixed: it must agree with the adapter."""
    s = data.get("sampler")
    if not isinstance(s, Mapping):
        raise _type_error(f"{where}.sampler", "an object", s)
    want = {
        "num_steps": ad.num_steps,
        "omega_schedule": ad.schedule_shape,
        "d_max": ad.d_max,
        "r_max": ad.r_max,
    }
    for k, v in want.items():
        if k not in s:
            raise BundleError(f"{where}.sampler lacks {k!r}")
        if type(s[k]) is not type(v) or s[k] != v:
            raise BundleError(f"{where}.sampler.{k} = {s[k]!r}, but the model was trained with {k} = {v!r} "
                              "(the adapter section); the sampler must run what training fixed")  # fmt: skip
    if s.get("final_blend", True) is not True:
        raise BundleError(
            f"{where}.sampler.final_blend = {s['final_blend']!r}: the runtime always applies it"
        )


def load_manifest(path: str | Path) -> Manifest:
    """Parse and check BUNDLE/manifest.json (structure, types, adapter, graph I/O against the
    adapter, sampler against the adapter); no hashing, no graph loading."""
    root = Path(path)
    mpath = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"{root}: no such bundle folder")
    if mpath.is_symlink() and root.resolve() not in mpath.resolve().parents:
        raise BundleError(f"{mpath} points outside the bundle ({mpath.resolve()}); a bundle holds its "
                          "manifest itself")  # fmt: skip
    try:
        data = json.loads(mpath.read_text())
    except FileNotFoundError:
        raise BundleError(f"{root}: not a bundle (no {MANIFEST})") from None
    except (OSError, ValueError) as e:
        raise BundleError(f"{mpath}: unreadable manifest ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BundleError(f"{mpath}: not a legato bundle manifest (format {FORMAT!r} expected)")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        old = isinstance(version, int) and not isinstance(version, bool) and version < FORMAT_VERSION
        src = (data.get("source") or {}).get("checkpoint") if isinstance(data.get("source"), dict) else None
        raise BundleError(
            f"{mpath}: format_version {version!r} is not supported (this runtime reads {FORMAT_VERSION})"
            + (
                "; it is an older bundle: re-export it with "
                f"`legato export --checkpoint {src or 'CHECKPOINT'}`"
                if old
                else ""
            )  # fmt: skip
        )
    for key, want in (("adapter", dict), ("graphs", dict), ("files", dict), ("precision", str),
                      ("sampler", dict), ("engines", dict)):  # fmt: skip
        if key not in data:
            raise BundleError(f"{mpath}: manifest lacks {key!r}")
        if not isinstance(data[key], want):
            raise _type_error(f"{mpath}: {key!r}", "an object" if want is dict else "a string", data[key])
    for rel, digest in data["files"].items():
        if not isinstance(digest, str) or len(digest) != 64:
            raise _type_error(f"{mpath}: files[{rel!r}]", "a sha256 hex string", digest)
    adapter = read_adapter(data["adapter"], f"{mpath} adapter")
    precision = data["precision"]
    if precision not in PRECISIONS:
        raise BundleError(f"{mpath}: precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    graphs: dict[str, GraphInfo] = {}
    for name, g in data["graphs"].items():
        where = f"{mpath} graphs.{name}"
        if name not in GRAPHS:
            raise BundleError(f"{where}: unknown graph (allowed: {', '.join(GRAPHS)})")
        graphs[name] = _graph_info(name, g, where)
    missing = [g for g in REQUIRED_GRAPHS if g not in graphs]
    if missing:
        raise BundleError(f"{mpath}: bundle lacks the {', '.join(missing)} graph")
    adapter.check_graphs({n: g.io() for n, g in graphs.items()}, str(mpath))
    _check_sampler(data, adapter, str(mpath))
    return Manifest(root, data, adapter, precision, graphs)


def _engine_paths(m: Manifest) -> set[str]:
    """Files an engines entry names (plans built on the device, the TensorRT timing cache)."""
    out = set()
    for e in m.engines.values():
        if isinstance(e, Mapping):
            out.update(str(e[k]) for k in ("file", "timing_cache") if isinstance(e.get(k), str))
    return out


def _check_files(m: Manifest, extra_files: tuple[str, ...] = ()) -> None:
    """Every listed file present, inside the bundle, with its sha256; nothing else in the folder
    (the manifest, the output marker and engine plans the engines section names aside)."""
    root = m.path.resolve()
    files = m.files
    for g in m.graphs.values():
        if files.get(g.file) != g.sha256:
            raise BundleError(
                f"{m.path}: graph {g.name} ({g.file}) sha256 differs between 'graphs' and 'files'"
            )
    for rel, digest in files.items():
        p = (m.path / rel).resolve()
        if root not in p.parents:
            raise BundleError(f"{m.path}: file entry {rel!r} points outside the bundle")
        if not p.is_file():
            raise BundleError(f"{m.path}: {rel} is missing")
        got = sha256_file(p)
        if got != digest:
            raise BundleError(
                f"{m.path}: {rel} is corrupt (sha256 {got[:12]}..., manifest says {digest[:12]}...)"
            )
    allowed = {MANIFEST, OUTPUT_MARKER, *files, *_engine_paths(m), *extra_files}
    if (read_marker(m.path) or {}).get("kind") == "release":
        allowed.add(RELEASE_PROFILE)  # a flashed release carries the profile it was flashed for
    for dirpath, dirnames, names in os.walk(m.path):
        base = Path(dirpath)
        for n in sorted(dirnames):
            if (base / n).is_symlink():
                raise BundleError(f"{m.path}: {(base / n).relative_to(m.path)} is a symlinked folder; a "
                                  "bundle holds its files itself")  # fmt: skip
        for n in sorted(names):
            rel = (base / n).relative_to(m.path).as_posix()
            if rel not in allowed:
                raise BundleError(f"{m.path}: {rel} is not listed in the manifest's files (a bundle "
                                  "holds exactly what its manifest lists; re-export it or remove "
                                  "the file)")  # fmt: skip


def _load_graphs(m: Manifest) -> dict[str, Any]:
    """Every graph in onnxruntime (CPU) with the manifest's I/O: {graph: edge.engine.OrtEngine}."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise BundleError(
            "onnxruntime is not installed; `pip install onnxruntime` to verify a bundle"
        ) from None
    from edge.engine import OrtEngine

    engines: dict[str, Any] = {}
    for g in m.graphs.values():
        try:
            eng = OrtEngine(m.graph_path(g.name), name=g.name)
        except BundleError as e:
            for x in engines.values():
                x.close()
            raise BundleError(
                f"{m.path}: graph {g.name} does not load in onnxruntime ({str(e)[:200]})"
            ) from None
        engines[g.name] = eng
        sess = eng.session
        for kind, real, declared in (
            ("input", sess.get_inputs(), g.inputs),
            ("output", sess.get_outputs(), g.outputs),
        ):
            got = {x.name: (_ORT_DTYPES.get(x.type, x.type), tuple(x.shape)) for x in real}
            exp = {t.name: (t.dtype, t.shape) for t in declared}
            if got != exp:
                for x in engines.values():
                    x.close()
                raise BundleError(
                    f"{m.path}: graph {g.name} {kind}s in the file {got} differ from the manifest {exp}"
                )
    return engines


def fixed_observation(ad: AdapterSpec) -> tuple[dict[str, Any], Any, Any]:
    """A deterministic observation for the policy: (images by camera, tokens, state). Images a
    smooth gradient, tokens the first non-pad ids, the state at its training mean."""
    import numpy as np

    images = {}
    for k, c in enumerate(ad.observation.cameras):
        y, x = np.mgrid[0 : c.height, 0 : c.width]
        img = np.stack([x * 255 // max(c.width - 1, 1), y * 255 // max(c.height - 1, 1),
                        np.full_like(x, 64 + 32 * k)], -1)  # fmt: skip
        images[c.name] = img.astype(np.uint8)
    lang = ad.observation.language
    tokens = None
    if lang is not None:
        tokens = np.full(lang.max_tokens, lang.pad_id, np.int64)
        ids = [i for i in range(lang.vocab_size) if i != lang.pad_id][: max(1, lang.max_tokens // 2)]
        tokens[: len(ids)] = ids
    return images, tokens, ad.norm.state_mean.astype(np.float32)


def _forward_check(m: Manifest, engines: dict[str, Any]) -> None:
    """One chunk through the robot's denoiser on a fixed observation and noise, stepwise and
    fused, and a continued chunk: every output of every graph finite (NaN or inf weights, an
    overflowing fp16 graph, a broken export never reach a motor)."""
    import numpy as np

    from edge.denoiser import denoiser_for, mode_for
    from edge.policy import ChunkRequest, default_ramp

    ad = m.adapter
    spec = ad.spec
    mode = mode_for(spec)
    images, tokens, state = fixed_observation(ad)
    image: Any = images if len(images) != 1 else next(iter(images.values()))
    sets = [{g: engines[g] for g in ("prefix", "flow_head")}]
    if "fused" in engines and mode != "hard-prefix":
        sets.append(dict(engines))
    s = min(spec.horizon // 2, spec.horizon - spec.d_max) or 1
    d = min(spec.d_max, 1, spec.horizon - s)
    req = ChunkRequest(d=d, s=s, r=default_ramp(spec, d, s))
    for graphs in sets:
        den = denoiser_for(ad, graphs, mode=mode, source=str(m.path))
        eps = np.random.default_rng(0).standard_normal(den.noise_shape).astype(np.float32)
        tail = None
        for _ in range(2):  # a first chunk, then one continued from it
            den.set_observation(image, tokens, state)
            chunk = den.denoise(eps, tail, req)
            for g, eng in graphs.items():
                for name, out in eng.outputs.items():
                    if not np.all(np.isfinite(out)):
                        raise BundleError(f"{m.path}: graph {g} output {name!r} is not finite on a fixed "
                                          "input (NaN or inf weights, or an overflow); the bundle is "
                                          "refused")  # fmt: skip
            if not np.all(np.isfinite(chunk)):
                raise BundleError(
                    f"{m.path}: the chunk is not finite on a fixed input; the bundle is refused"
                )
            tail = chunk[req.s :].copy()


def verify(path: str | Path, *, load_graphs: bool = True, extra_files: tuple[str, ...] = ()) -> Manifest:
    """Check a bundle completely: manifest structure and types, every sha256 and nothing
    unlisted, the graph I/O against the adapter, and (load_graphs) that every graph opens in
    onnxruntime with that I/O and one chunk through the robot's denoiser on a fixed input is
    finite in every graph output. ``extra_files``: names the caller adds beside the bundle's own
    (`legato flash` assembling a release: its profile.toml, before the release is marked)."""
    m = load_manifest(path)
    _check_files(m, extra_files)
    for name, e in m.engines.items():
        key = e.get("key", {}) if isinstance(e, dict) else {}
        missing = [k for k in ENGINE_KEY_FIELDS if k not in key]
        if missing:
            raise BundleError(f"{m.path}: engine {name} key lacks {', '.join(missing)}")
        if name in m.graphs and key["onnx_sha256"] != m.graphs[name].sha256:
            raise BundleError(
                f"{m.path}: engine {name} was built from another ONNX "
                f"({key['onnx_sha256'][:12]}..., graph is {m.graphs[name].sha256[:12]}...)"
            )
        plan = m.path / str(e.get("file", ""))
        if "file" in e and not plan.is_file():
            raise BundleError(f"{m.path}: engine {name} plan {e['file']} is missing")
        if "file" in e and "sha256" in e and sha256_file(plan) != e["sha256"]:
            raise BundleError(f"{m.path}: engine {name} plan {e['file']} is corrupt (sha256 differs)")
    if load_graphs:
        engines = _load_graphs(m)
        try:
            _forward_check(m, engines)
        finally:
            for e in engines.values():
                e.close()
    return m


def summary(m: Manifest) -> list[str]:
    """Lines for `legato bundle info`."""
    s = m.spec
    lines = [
        f"bundle {m.name} at {m.path}",
        f"  model: method {s.method}, H={s.horizon}, N={s.num_steps}, action_dim={s.action_dim}, "
        f"d_max={s.d_max}, r_max={s.r_max}, schedule {s.schedule_shape}, {s.control_hz:g} Hz",
        f"  profile: {m.profile_name}, precision {m.precision}",
    ]
    ad = m.adapter
    cams = ", ".join(f"{c.name} {c.height}x{c.width}" for c in ad.observation.cameras) or "none"
    lang = ad.observation.language
    lines.append(
        f"  adapter: {ad.name}, time {ad.time_convention}, actions {ad.action_dim} (graphs {ad.action_pad}), "
        f"state {ad.state_dim} (graphs {ad.state_pad}), cameras {cams}, language "
        + (
            "none"
            if lang is None
            else f"{lang.max_tokens} tokens" + (f", tokenizer {lang.tokenizer}" if lang.tokenizer else "")
        )
        + f", omega {'yes' if ad.omega else 'no'}, hard prefix {'yes' if ad.hard_prefix else 'no'}"
    )
    for g in m.graphs.values():
        lines.append(
            f"  graph {g.name}: {g.file} ({g.precision}, opset {g.opset}, sha256 {g.sha256[:12]}...)"
        )
        lines.append("    in:  " + ", ".join(f"{t.name} {t.dtype}{list(t.shape)}" for t in g.inputs))
        lines.append("    out: " + ", ".join(f"{t.name} {t.dtype}{list(t.shape)}" for t in g.outputs))
    par = m.parity
    if par:
        lines.append("  parity: " + json.dumps({k: v for k, v in par.items() if k != "gate"}, sort_keys=True))
        lines.append("  gate: " + json.dumps(par.get("gate", {}), sort_keys=True))
    q = m.data.get("quantization", {})
    if q:
        lines.append(f"  quantization: {q.get('method')}")
    if "attention" in m.data:
        lines.append(f"  attention: {m.data['attention']}")
    lines.append(
        "  engines: "
        + (
            ", ".join(f"{k} ({v.get('key', {}).get('tensorrt')})" for k, v in m.engines.items())
            or "none (built on the device)"
        )
    )
    return lines

"""Read and verify a bundle (docs/bundle.md) without torch: what the robot loads.

``load_manifest(path)`` parses manifest.json into a :class:`Manifest` (model spec,
normalisation, graph I/O, precision, parity, engine keys) and checks its structure;
``verify(path)`` also checks every file's sha256, opens every graph in onnxruntime and
compares its inputs and outputs with the manifest, and checks that the graph shapes agree with
the model config. Every failure is a one-line :class:`edge.errors.BundleError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import BundleError, LegatoError
from edge.normalize import Normalizer
from edge.outputs import sha256_file
from edge.policy import ModelSpec

FORMAT = "legato-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
GRAPHS = ("prefix", "flow_head", "fused")  # the fused graph is optional
REQUIRED_GRAPHS = ("prefix", "flow_head")
PRECISIONS = ("fp32", "fp16", "int8")
ENGINE_KEY_FIELDS = ("tensorrt", "cuda", "gpu", "compute_capability", "l4t", "jetpack", "onnx_sha256")
_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(uint8)": "uint8",
    "tensor(int64)": "int64",
    "tensor(float16)": "float16",
    "tensor(int32)": "int32",
}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # numpy dtype name: float32 | uint8 | int64
    shape: tuple[int, ...]  # static

    @staticmethod
    def from_dict(d: Any, where: str) -> TensorInfo:
        try:
            return TensorInfo(str(d["name"]), str(d["dtype"]), tuple(int(x) for x in d["shape"]))
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{where}: malformed tensor entry ({type(e).__name__}: {e})") from None

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


@dataclass(frozen=True)
class Manifest:
    path: Path  # the bundle folder
    data: dict[str, Any]  # manifest.json as parsed
    spec: ModelSpec
    norm: Normalizer
    precision: str
    graphs: dict[str, GraphInfo]

    @property
    def name(self) -> str:
        return str(self.data.get("name", self.path.name))

    @property
    def model_config(self) -> dict[str, Any]:
        return self.data["model"]

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


def expected_io(spec: ModelSpec, cfg: dict[str, Any]) -> dict[str, tuple[dict[str, tuple], dict[str, tuple]]]:
    """The documented graph I/O for a model config: {graph: ({input: (dtype, shape)}, {output: ...})}."""
    p = cfg["policy"]
    h, a, s, n = spec.horizon, spec.action_dim, spec.state_dim, spec.num_steps
    hi, wi = spec.image_hw
    L, c, l = int(p["head_layers"]), int(p["width"]), spec.max_tokens  # noqa: N806
    pt = (hi // 8) * (wi // 8) + l + 1
    f32 = "float32"
    obs = {"image": ("uint8", (1, hi, wi, 3)), "tokens": ("int64", (1, l)), "state": (f32, (1, s))}
    prefix_out = {"kv": (f32, (1, L, 2, pt, c)), "mod": (f32, (1, n + 1, L, 6, c)), "cond": (f32, (1, h, c))}
    head_in = {"y": (f32, (1, h, a)), "t": (f32, (1, h)), "omega": (f32, (1, h)), **prefix_out}
    fused_in = {**obs, "eps": (f32, (1, h, a)), "a_ref": (f32, (1, h, a)), "omega": (f32, (1, h))}
    return {
        "prefix": (obs, prefix_out),
        "flow_head": (head_in, {"v": (f32, (1, h, a))}),
        "fused": (fused_in, {"chunk": (f32, (1, h, a))}),
    }


def load_manifest(path: str | Path) -> Manifest:
    """Parse and structurally check BUNDLE/manifest.json (no hashing, no graph loading)."""
    root = Path(path)
    mpath = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"{root}: no such bundle folder")
    try:
        data = json.loads(mpath.read_text())
    except FileNotFoundError:
        raise BundleError(f"{root}: not a bundle (no {MANIFEST})") from None
    except (OSError, ValueError) as e:
        raise BundleError(f"{mpath}: unreadable manifest ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BundleError(f"{mpath}: not a legato bundle manifest (format {FORMAT!r} expected)")
    if data.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{mpath}: format_version {data.get('format_version')!r} is not supported "
            f"(this runtime reads {FORMAT_VERSION})"
        )
    for key in ("model", "graphs", "files", "precision"):
        if key not in data:
            raise BundleError(f"{mpath}: manifest lacks {key!r}")
    try:
        spec = ModelSpec.from_config(data["model"], source=f"{mpath} model")
        norm = Normalizer.from_dict(data["model"].get("normalization"))
    except LegatoError as e:
        raise BundleError(str(e)) from None
    except ValueError as e:
        raise BundleError(f"{mpath}: model normalization: {e}") from None
    precision = data["precision"]
    if precision not in PRECISIONS:
        raise BundleError(f"{mpath}: precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    graphs: dict[str, GraphInfo] = {}
    if not isinstance(data["graphs"], dict):
        raise BundleError(f"{mpath}: 'graphs' must be an object")
    for name, g in data["graphs"].items():
        where = f"{mpath} graphs.{name}"
        if name not in GRAPHS:
            raise BundleError(f"{where}: unknown graph (allowed: {', '.join(GRAPHS)})")
        try:
            graphs[name] = GraphInfo(
                name=name,
                file=str(g["file"]),
                sha256=str(g["sha256"]),
                precision=str(g["precision"]),
                opset=int(g["opset"]),
                inputs=tuple(TensorInfo.from_dict(t, where) for t in g["inputs"]),
                outputs=tuple(TensorInfo.from_dict(t, where) for t in g["outputs"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{where}: malformed ({type(e).__name__}: {e})") from None
    missing = [g for g in REQUIRED_GRAPHS if g not in graphs]
    if missing:
        raise BundleError(f"{mpath}: bundle lacks the {', '.join(missing)} graph")
    return Manifest(root, data, spec, norm, precision, graphs)


def _check_files(m: Manifest) -> None:
    files = m.files
    for g in m.graphs.values():
        if files.get(g.file) != g.sha256:
            raise BundleError(
                f"{m.path}: graph {g.name} ({g.file}) sha256 differs between 'graphs' and 'files'"
            )
    for rel, digest in files.items():
        p = (m.path / rel).resolve()
        if m.path.resolve() not in p.parents:
            raise BundleError(f"{m.path}: file entry {rel!r} points outside the bundle")
        if not p.is_file():
            raise BundleError(f"{m.path}: {rel} is missing")
        got = sha256_file(p)
        if got != digest:
            raise BundleError(
                f"{m.path}: {rel} is corrupt (sha256 {got[:12]}..., manifest says {digest[:12]}...)"
            )


def _check_io(m: Manifest) -> None:
    want = expected_io(m.spec, m.model_config)
    for g in m.graphs.values():
        ins, outs = want[g.name]
        for kind, declared, expect in (("input", g.inputs, ins), ("output", g.outputs, outs)):
            got = {t.name: (t.dtype, t.shape) for t in declared}
            if got != expect:
                raise BundleError(
                    f"{m.path}: graph {g.name} {kind}s {got} do not match the model config ({expect})"
                )


def _load_graphs(m: Manifest) -> None:
    try:
        import onnxruntime as ort
    except ImportError:
        raise BundleError(
            "onnxruntime is not installed; `pip install onnxruntime` to verify a bundle"
        ) from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    for g in m.graphs.values():
        try:
            sess = ort.InferenceSession(str(m.graph_path(g.name)), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise BundleError(
                f"{m.path}: graph {g.name} does not load in onnxruntime ({' '.join(str(e).split())[:200]})"
            ) from None
        for kind, real, declared in (
            ("input", sess.get_inputs(), g.inputs),
            ("output", sess.get_outputs(), g.outputs),
        ):
            got = {x.name: (_ORT_DTYPES.get(x.type, x.type), tuple(x.shape)) for x in real}
            exp = {t.name: (t.dtype, t.shape) for t in declared}
            if got != exp:
                raise BundleError(
                    f"{m.path}: graph {g.name} {kind}s in the file {got} differ from the manifest {exp}"
                )


def verify(path: str | Path, *, load_graphs: bool = True) -> Manifest:
    """Check a bundle completely: manifest structure, every sha256, the graph I/O against the
    model config, and (load_graphs) that every graph opens in onnxruntime with that I/O."""
    m = load_manifest(path)
    _check_io(m)
    _check_files(m)
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
        _load_graphs(m)
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

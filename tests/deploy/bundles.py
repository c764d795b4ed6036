"""Small hand-made bundles that pass edge.bundle.verify: real ONNX graphs with the committed
reference bundle's I/O (each output a constant) and its adapter section, plus a data file whose
bytes the test chooses, so a test can make two bundles that differ in exactly one file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import onnx
from onnx import TensorProto, helper

REPO = Path(__file__).resolve().parents[2]
_DT = {"float32": TensorProto.FLOAT, "uint8": TensorProto.UINT8, "int64": TensorProto.INT64}


def _graph(path: Path, name: str, ins: dict, outs: dict, salt: float) -> None:
    nodes, outputs = [], []
    for i, (out, (dtype, shape)) in enumerate(outs.items()):
        value = helper.make_tensor(f"v{i}", _DT[dtype], [1], [salt])
        shp = helper.make_tensor(f"s{i}", TensorProto.INT64, [len(shape)], list(shape))
        nodes.append(helper.make_node("Constant", [], [f"shape{i}"], value=shp))
        nodes.append(helper.make_node("ConstantOfShape", [f"shape{i}"], [out], value=value))
        outputs.append(helper.make_tensor_value_info(out, _DT[dtype], list(shape)))
    inputs = [helper.make_tensor_value_info(k, _DT[d], list(s)) for k, (d, s) in ins.items()]
    model = helper.make_model(
        helper.make_graph(nodes, name, inputs, outputs), opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    onnx.save(model, str(path))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_bundle(
    out: Path,
    *,
    name: str = "tiny",
    profile: str = "x86-cpu",
    data: bytes = b"weights v1",
    salt: float = 0.0,
    engine_key: dict | None = None,
    memory: dict[str, tuple[int, int]] | None = None,
) -> Path:
    """A bundle folder at `out` (created): manifest.json, prefix.onnx, flow_head.onnx, data/blob.bin.

    `memory`: graph -> (weight_bytes, peak_activation_bytes) recorded in the manifest as the export
    records them (docs/bundle.md, "memory"); the graph files stay tiny."""
    ref = json.loads((REPO / "models/legato-x86-cpu/manifest.json").read_text())
    out.mkdir(parents=True)
    graphs = {}
    for g in ("prefix", "flow_head"):
        io = ref["graphs"][g]
        ins = {t["name"]: (t["dtype"], tuple(t["shape"])) for t in io["inputs"]}
        outs = {t["name"]: (t["dtype"], tuple(t["shape"])) for t in io["outputs"]}
        _graph(out / f"{g}.onnx", g, ins, outs, salt)
        graphs[g] = {
            "file": f"{g}.onnx",
            "sha256": _sha(out / f"{g}.onnx"),
            "opset": 17,
            "precision": "fp32",
            "inputs": [{"name": k, "dtype": d, "shape": list(s)} for k, (d, s) in ins.items()],
            "outputs": [{"name": k, "dtype": d, "shape": list(s)} for k, (d, s) in outs.items()],
        }
        if memory and g in memory:
            graphs[g]["memory"] = {"weight_bytes": memory[g][0], "peak_activation_bytes": memory[g][1]}
    (out / "data").mkdir()
    (out / "data/blob.bin").write_bytes(data)
    files = {f"{g}.onnx": graphs[g]["sha256"] for g in graphs}
    files["data/blob.bin"] = _sha(out / "data/blob.bin")
    engines = {}
    if engine_key is not None:  # a flow_head engine "built" for the device this key describes
        (out / "engines").mkdir()
        (out / "engines/flow_head.plan").write_bytes(b"plan")
        key = {**engine_key, "onnx_sha256": graphs["flow_head"]["sha256"]}
        engines["flow_head"] = {
            "file": "engines/flow_head.plan",
            "sha256": _sha(out / "engines/flow_head.plan"),
            "key": key,
        }
        files["engines/flow_head.plan"] = engines["flow_head"]["sha256"]
    adapter = {**ref["adapter"], "graphs": {**ref["adapter"]["graphs"], "fused": None}}
    adapter["capabilities"] = {**adapter["capabilities"], "fused": False}
    manifest = {
        "format": "legato-bundle",
        "format_version": ref["format_version"],
        "name": name,
        "adapter": adapter,
        "model": ref["model"],
        "sampler": ref["sampler"],
        "profile": {"name": profile},
        "precision": "fp32",
        "graphs": graphs,
        "files": files,
        "engines": engines,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out

"""Which ops are sensitive in fp16? Convert the fused graph to fp16 keeping one op family float32
at a time (and all of them, and none), and measure the normalised chunk error against the fp32
graph on held-out observations with the same noise (onnxruntime CPU; its fp16 kernels round
like a GPU's storage but may accumulate in fp32, so this is a lower bound on the GPU's error).

    .venv/bin/python bench/sweep_fp16.py [--checkpoint models/legato] [--samples 16]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FAMILIES = {
    "none kept": (),
    "LayerNormalization": ("LayerNormalization",),
    "Softmax": ("Softmax",),
    "ReduceMean/Pow/Sqrt": ("ReduceMean", "Pow", "Sqrt"),
    "all of the above (shipped)": ("LayerNormalization", "ReduceMean", "Softmax", "Pow", "Sqrt"),
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default="models/legato")
    ap.add_argument("--samples", type=int, default=16)
    a = ap.parse_args()
    import onnxruntime as ort

    from export import precision
    from export.graphs import export_graph
    from legato.adapters import ExportGraph
    from legato.adapters.reference import graph_names, held_out_samples, section
    from legato.adapters.reference_graphs import example_inputs, modules
    from legato.checkpoint import load

    ck = load(a.checkpoint)
    work = Path(tempfile.mkdtemp(prefix="sweep-fp16-"))
    pol = ck.model.eval()
    ins, outs = graph_names(section(ck))["fused"]
    export_graph(
        ExportGraph(modules(pol)["fused"], example_inputs(pol)["fused"], ins, outs), work / "fp32.onnx"
    )
    samples = held_out_samples(ck, a.samples)
    rng = np.random.default_rng(0)
    h, ad = ck.spec.horizon, ck.spec.action_dim
    feeds = []
    for s in samples:
        eps = rng.standard_normal((1, h, ad)).astype(np.float32)
        omega = np.zeros((1, h), np.float32)
        omega[0, :4] = 1.0
        omega[0, 4:8] = np.linspace(0.8, 0.2, 4)
        a_ref = rng.standard_normal((1, h, ad)).astype(np.float32) * 0.5
        feeds.append(
            {
                "image": s.obs.image,
                "tokens": s.obs.tokens.astype(np.int64),
                "state": ck.norm.state(s.obs.state),
                "eps": eps,
                "a_ref": a_ref,
                "omega": omega,
            }
        )
    ref = ort.InferenceSession(str(work / "fp32.onnx"), providers=["CPUExecutionProvider"])
    want = [ref.run(None, f)[0] for f in feeds]
    print(f"fused graph, {len(feeds)} held-out observations, normalised chunk error vs fp32")
    print("| kept float32 | max abs | min cosine |")
    print("|---|---|---|")
    for name, ops in FAMILIES.items():
        path = work / f"{len(ops)}-{abs(hash(name))}.onnx"
        precision.to_fp16(work / "fp32.onnx", path, keep_fp32=ops)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = [sess.run(None, f)[0] for f in feeds]
        err = max(float(np.abs(g - w).max()) for g, w in zip(got, want, strict=True))
        cos = min(
            float(g.ravel() @ w.ravel() / np.linalg.norm(g) / np.linalg.norm(w))
            for g, w in zip(got, want, strict=True)
        )
        print(f"| {name} | {err:.4f} | {cos:.6f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

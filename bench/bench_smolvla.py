"""Full-size SmolVLA (published sizes, random weights) on this CPU, torch eager against
onnxruntime side by side in one run at one thread: prefix and per-step latency (medians), the
chunk (prefix + N steps), FLOPs and the fraction of the one-thread matmul peak, int8 (dynamic)
at its gate, both onnxruntime's default (weight MatMuls only: "int8") and with attention's
activation x activation MatMuls too ("int8attn", what `legato export` does for SmolVLA), and peak
memory. Also the memory table of SmolVLA and pi0.5 per precision.

    .venv/bin/python bench/bench_smolvla.py --out reports/bench-smolvla.json      # ~15 min, ~7 GB
    .venv/bin/python bench/bench_smolvla.py --memory-table                         # seconds

Needs the vla extra. Run it alone (it holds ~7 GB at its peak: the fp32 model, its ONNX
export and one session at a time).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def flops_of(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def memory_table() -> dict:
    from legato.adapters.published import parameter_groups, pi05_module, smolvla_module, weight_bytes

    out = {}
    for name, m in (("smolvla", smolvla_module(meta=True)), ("pi05", pi05_module(meta=True))):
        g = parameter_groups(m)
        out[name] = {
            "params": {k: v["matrix"] + v["vector"] for k, v in g.items()},
            "weight_bytes": {p: weight_bytes(g, p) for p in ("fp32", "fp16", "int8")},
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="also write the results as JSON")
    ap.add_argument("--memory-table", action="store_true", help="only the parameter / weight-byte table")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds (after one warm-up round)")
    ap.add_argument(
        "--graphs", default=None, help="folder of this script's exported graphs to reuse (same seed)"
    )
    a = ap.parse_args()
    if a.memory_table:
        print(json.dumps(memory_table(), indent=1))
        return 0
    import onnxruntime as ort
    import torch

    from export.precision import to_dynamic_int8
    from legato.adapters.legato_flow import LegatoHead
    from legato.adapters.published import smolvla_module
    from legato.adapters.smolvla_graphs import PREFIX_OUTPUTS, PrefixGraph, StepGraph

    torch.set_num_threads(1)
    torch.manual_seed(0)
    load_start = os.getloadavg()
    res: dict = {"machine": "2-core x86 VM (AVX-512 VNNI), 1 thread; load average recorded"}
    model = smolvla_module().eval()
    spec = model.spec
    res["params"] = sum(p.numel() for p in model.parameters())
    rng = np.random.default_rng(0)
    frame = torch.from_numpy(rng.integers(0, 256, (1, 480, 640, 3), dtype=np.uint8))
    tokens = torch.from_numpy(rng.integers(0, 49280, (1, 48))).long()
    mask = torch.ones(1, 48, dtype=torch.long)
    state = torch.randn(1, spec.max_state_dim)
    head = LegatoHead(spec.num_steps, None)
    prefix, step = PrefixGraph(model, 1).eval(), StepGraph(model, head).eval()
    args = (frame, tokens, mask, state)
    with torch.no_grad():
        ctx = prefix(*args)
        x = torch.randn(1, spec.chunk, spec.max_action_dim)
        t, omega = torch.tensor([1.0]), torch.zeros(1, spec.chunk)
        res["prefix_tokens"] = int(ctx[2].shape[-1])
        res["flops"] = {
            "prefix": flops_of(lambda: prefix(*args)),
            "step": flops_of(lambda: step(x, t, omega, *ctx)),
        }
        v_ref = step(x, t, omega, *ctx).numpy()
    res["peak_rss_gb_eager"] = peak_rss_gb()
    tmp = Path(a.graphs) if a.graphs else Path(tempfile.mkdtemp(prefix="bench-smolvla-"))
    names = ["image_cam0", "tokens", "token_mask", "state"]
    if not (tmp / "step.onnx").exists():
        t0 = time.perf_counter()
        with torch.no_grad():
            torch.onnx.export(
                prefix,
                args,
                str(tmp / "prefix.onnx"),
                input_names=names,
                output_names=list(PREFIX_OUTPUTS),
                opset_version=17,
                dynamo=False,
            )
            torch.onnx.export(
                step,
                (x, t, omega, *ctx),
                str(tmp / "step.onnx"),
                input_names=["x", "t", "omega", *PREFIX_OUTPUTS],
                output_names=["velocity"],
                opset_version=17,
                dynamo=False,
            )
        res["export_s"] = time.perf_counter() - t0
    for g in ("prefix", "step"):
        if not (tmp / f"{g}-int8.onnx").exists():
            to_dynamic_int8(tmp / f"{g}.onnx", tmp / f"{g}-int8.onnx")
        if not (tmp / f"{g}-int8attn.onnx").exists():  # attention's MatMuls too
            to_dynamic_int8(tmp / f"{g}.onnx", tmp / f"{g}-int8attn.onnx", activation_matmuls=True)
    res["graph_bytes"] = {p.stem: p.stat().st_size for p in sorted(tmp.glob("*.onnx"))}
    feeds_prefix = {n: v.numpy() for n, v in zip(names, args, strict=True)}
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sessions, feeds = {}, {}
    for precision, suffix in (("fp32", ""), ("int8", "-int8"), ("int8attn", "-int8attn")):
        sp = ort.InferenceSession(str(tmp / f"prefix{suffix}.onnx"), so, providers=["CPUExecutionProvider"])
        ss = ort.InferenceSession(str(tmp / f"step{suffix}.onnx"), so, providers=["CPUExecutionProvider"])
        ctx_o = sp.run(None, feeds_prefix)
        f = {
            "x": x.numpy(),
            "t": t.numpy(),
            "omega": omega.numpy(),
            **dict(zip(PREFIX_OUTPUTS, ctx_o, strict=True)),
        }
        v = ss.run(None, f)[0]
        res[f"onnx_{precision}_velocity"] = {
            "max_abs": float(np.abs(v - v_ref).max()),
            "cosine": float((v.ravel() @ v_ref.ravel()) / np.linalg.norm(v) / np.linalg.norm(v_ref)),
        }
        sessions[precision], feeds[precision] = (sp, ss), f
    res["peak_rss_gb_sessions"] = peak_rss_gb()
    # Side by side: every round times each backend once (and the GEMM ceiling), so a load that
    # changes during the run changes all of them alike; medians over the rounds.
    times: dict[str, list[float]] = {}

    def once(key: str, fn) -> None:
        t0 = time.perf_counter()
        fn()
        times.setdefault(key, []).append(time.perf_counter() - t0)

    a_mm, b_mm = torch.randn(1024, 1024), torch.randn(1024, 1024)
    with torch.no_grad():
        for _ in range(a.repeats + 1):
            once("matmul", lambda: a_mm @ b_mm)
            once("eager_prefix", lambda: prefix(*args))
            once("eager_step", lambda: step(x, t, omega, *ctx))
            for prec, (sp, ss) in sessions.items():
                once(f"onnx_{prec}_prefix", lambda sp=sp: sp.run(None, feeds_prefix))
                once(f"onnx_{prec}_step", lambda ss=ss, prec=prec: ss.run(None, feeds[prec]))
    med = {k: statistics.median(v[1:]) for k, v in times.items()}  # the first round warms up
    res["matmul_peak_gflops"] = 2 * 1024**3 / med["matmul"] / 1e9
    for k in ("eager", "onnx_fp32", "onnx_int8", "onnx_int8attn"):
        res[f"{k}_s"] = {"prefix": med[f"{k}_prefix"], "step": med[f"{k}_step"]}
    n = spec.num_steps
    kinds = ("eager_s", "onnx_fp32_s", "onnx_int8_s", "onnx_int8attn_s")
    chunk = {k: res[k]["prefix"] + n * res[k]["step"] for k in kinds}
    res["chunk_s"] = chunk
    res["speedup"] = {
        "step_fp32": res["eager_s"]["step"] / res["onnx_fp32_s"]["step"],
        "prefix_fp32": res["eager_s"]["prefix"] / res["onnx_fp32_s"]["prefix"],
        "chunk_fp32": chunk["eager_s"] / chunk["onnx_fp32_s"],
        "chunk_int8": chunk["eager_s"] / chunk["onnx_int8_s"],
        "chunk_int8attn": chunk["eager_s"] / chunk["onnx_int8attn_s"],
    }
    res["load_average"] = {"start": load_start, "end": os.getloadavg()}
    # what `legato export --precision int8` does for this adapter (int8attn: attention's MatMuls too)
    from legato.adapters.smolvla_adapter import SmolVLALoaded

    res["int8_exported"] = "int8attn" if SmolVLALoaded.int8_activation_matmuls else "int8"
    peak = res["matmul_peak_gflops"]
    res["fraction_of_peak"] = {
        f"{k}_{g}": res["flops"][g] / res[k][g] / 1e9 / peak
        for k in ("eager_s", "onnx_fp32_s")
        for g in ("prefix", "step")
    }
    print(json.dumps(res, indent=1))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

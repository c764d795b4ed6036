"""One chunk (prefix once, N flow steps and the Legato blends) per backend, timed side by side.

Variants, all at the same thread count, interleaved round by round in one process:
- torch eager (legato.runner.TorchPolicyRunner);
- onnxruntime fp32 as exported plainly (Policy.prefix -> kv and the original FlowHead, which
  recomputes the adaLN modulation per token per step, SDPA exported as is);
- the rewritten bundle graphs (adaLN table hoisted into the prefix, standard-op attention);
- the rewritten graphs with dynamic int8 (the x86-cpu int8 bundle);
- the fused graph (all N steps and blends in one call), fp32 and dynamic int8.
Also: FLOPs per chunk (MatMul/Gemm/Conv, from the graphs' inferred shapes) and the achieved
FLOP/s as a fraction of this machine's one-thread matmul peak.

    .venv/bin/python bench/bench_chunk.py [--checkpoint models/legato] [--rounds 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def chunk_flops(ck, rewritten: bool) -> int:
    """FLOPs of one chunk (prefix once + N head steps), counted by torch's FlopCounterMode
    (matmuls, convolutions, attention) on batch-1 inputs."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from legato.adapters.reference_graphs import FlowHeadGraph, PrefixGraph, example_inputs

    pol = ck.model.eval()
    ex = example_inputs(pol)
    image, tokens, state = ex["prefix"]
    y, t, omega, *_ = ex["flow_head"]
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        if rewritten:
            kv, mod, cond = PrefixGraph(pol)(image, tokens, state)
            for _ in range(pol.cfg.num_steps):
                FlowHeadGraph(pol)(y, t, omega, kv, mod, cond)
        else:
            kv = pol.prefix(image, tokens, state)
            for _ in range(pol.cfg.num_steps):
                pol.head(y, t, omega, state, kv)
    return int(fc.get_total_flops())


def matmul_peak(threads: int) -> float:
    """GFLOP/s of a 512 x 512 fp32 matmul at `threads` threads (torch, MKL/oneDNN)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(20):
            a @ b
        best = max(best, 20 * 2 * 512**3 / (time.perf_counter() - t) / 1e9)
    return best


def plain_policy(ck, folder: Path, threads: int):
    """The model exported with no rewrite: prefix -> kv, and the original FlowHead per step."""
    import torch

    from edge.bundle_policy import _engine
    from edge.policy import ChunkPolicy
    from legato.runner import TorchPolicyRunner

    pol = ck.model.eval()
    cfg = pol.cfg
    h, a, s = cfg.horizon, cfg.action_dim, cfg.state_dim
    image = torch.zeros(1, *cfg.image_hw, 3, dtype=torch.uint8)
    tokens, state = torch.ones(1, cfg.max_tokens, dtype=torch.int64), torch.zeros(1, s)
    with torch.no_grad():
        kv = pol.prefix(image, tokens, state)
        torch.onnx.export(
            pol.prefix,
            (image, tokens, state),
            str(folder / "plain_prefix.onnx"),
            dynamo=False,
            input_names=["image", "tokens", "state"],
            output_names=["kv"],
            opset_version=17,
        )
        args = (torch.zeros(1, h, a), torch.zeros(1, h), torch.zeros(1, h), state, kv)
        torch.onnx.export(
            pol.head,
            args,
            str(folder / "plain_head.onnx"),
            dynamo=False,
            opset_version=17,
            input_names=["y", "t", "omega", "state", "kv"],
            output_names=["v"],
        )

    class PlainField:
        """The plain export as the denoiser's field (batch 1): the prefix gives kv, the head
        reads the normalised state and kv."""

        batch = 1

        def __init__(self) -> None:
            self.p = _engine(folder / "plain_prefix.onnx", threads)
            self.h = _engine(folder / "plain_head.onnx", threads)
            self.observation = self.p.inputs
            self.h.bind("kv", self.p, "kv")

        def buffers(self):
            return (self.h.inputs["y"], self.h.inputs["t"], self.h.inputs["omega"], self.h.outputs["v"])

        def encode(self) -> None:
            self.p.run()
            self.h.inputs["state"][...] = self.p.inputs["state"]

        def velocity(self, y, t, omega, out) -> None:
            self.h.run()

    class Plain(ChunkPolicy):
        def __init__(self) -> None:
            super().__init__(TorchPolicyRunner(ck).adapter, "plain export")
            self._field = PlainField()

        def field(self, batch):
            return self._field

    return Plain()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default="models/legato")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--chunks", type=int, default=40, help="chunks per variant per round")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import torch

    from edge.bundle_policy import BundlePolicy
    from edge.policy import ChunkRequest
    from export.pipeline import ExportOptions, export_bundle
    from legato.adapters.reference import held_out_samples
    from legato.checkpoint import load
    from legato.runner import TorchPolicyRunner

    torch.set_num_threads(a.threads)
    ck = load(a.checkpoint)
    work = Path(tempfile.mkdtemp(prefix="bench-chunk-"))
    quiet = lambda msg: None  # noqa: E731
    export_bundle(
        ExportOptions(
            checkpoint=a.checkpoint,
            profile="x86-cpu",
            out=work / "std",
            attention="standard",
            episodes=1,
            parity_samples=4,
            progress=quiet,
        )
    )
    for prec in ("fp32", "int8"):
        export_bundle(
            ExportOptions(
                checkpoint=a.checkpoint,
                profile="x86-cpu",
                out=work / prec,
                precision=prec,
                episodes=1,
                parity_samples=4,
                progress=quiet,
            )
        )
    variants = {
        "torch eager": TorchPolicyRunner(ck, threads=a.threads),
        "onnxruntime fp32, plain export": plain_policy(ck, work, a.threads),
        "onnxruntime fp32, rewritten, standard-op attention": BundlePolicy(work / "std", threads=a.threads),
        "onnxruntime fp32, rewritten, fused attention op": BundlePolicy(work / "fp32", threads=a.threads),
        "onnxruntime int8 (dynamic), rewritten": BundlePolicy(work / "int8", threads=a.threads),
        "onnxruntime fp32, fused graph": BundlePolicy(work / "fp32", threads=a.threads, fused=True),
        "onnxruntime int8 (dynamic), fused graph": BundlePolicy(work / "int8", threads=a.threads, fused=True),
    }
    smp = held_out_samples(ck, 4)[-1]  # a mid-episode observation with a previous chunk
    req = ChunkRequest(d=2, s=8, r=4)
    eps = (
        np.random.default_rng(0).standard_normal((1, ck.spec.horizon, ck.spec.action_dim)).astype(np.float32)
    )
    times: dict[str, list[float]] = {k: [] for k in variants}
    for pol in variants.values():  # warm-up
        for _ in range(5):
            pol.chunk("legato", smp.obs, smp.prev, req, eps)
    for _ in range(a.rounds):
        for name, pol in variants.items():
            t = time.perf_counter()
            for _ in range(a.chunks):
                pol.chunk("legato", smp.obs, smp.prev, req, eps)
            times[name].append((time.perf_counter() - t) / a.chunks)
    fl_plain, fl_rew = chunk_flops(ck, rewritten=False), chunk_flops(ck, rewritten=True)
    peak = matmul_peak(a.threads)
    eager = float(np.median(times["torch eager"]))
    print(
        f"checkpoint {a.checkpoint}, {a.threads} thread(s), {a.rounds} rounds x {a.chunks} chunks, "
        f"median per chunk; matmul peak {peak:.1f} GFLOP/s"
    )
    print(f"FLOPs per chunk: plain {fl_plain / 1e6:.1f} M, rewritten {fl_rew / 1e6:.1f} M (FlopCounterMode)")
    print("| variant | ms / chunk | min-max ms | vs torch eager | GFLOP/s | of peak |")
    print("|---|---|---|---|---|---|")
    for name, ts in times.items():
        med = float(np.median(ts))
        fl = fl_plain if name in ("torch eager", "onnxruntime fp32, plain export") else fl_rew
        print(
            f"| {name} | {1e3 * med:.2f} | {1e3 * min(ts):.2f}-{1e3 * max(ts):.2f} | {eager / med:.2f}x | "
            f"{fl / med / 1e9:.1f} | {fl / med / 1e9 / peak:.0%} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

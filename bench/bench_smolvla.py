"""Full-size SmolVLA (published sizes, random weights) on this CPU, torch eager against
onnxruntime side by side in one run at one thread (or `--threads N`): prefix and per-step latency
(medians), the chunk (prefix + N steps), FLOPs and the fraction of the matmul peak (the faster of
torch's and onnxruntime's 1024^3 GEMM) and of the rate the expert's own MLP shapes reach in
onnxruntime (the step's ceiling), an op-type profile of the fp32 step, int8 (dynamic)
at its gate, both onnxruntime's default (weight MatMuls only: "int8") and with attention's
activation x activation MatMuls too ("int8attn", what `legato export` does for SmolVLA), and peak
memory. The fp32 graphs are what `legato export` writes for a CPU profile (tanh GELU fused into
onnxruntime's FastGelu). Also the memory table of SmolVLA and pi0.5 per precision.

    .venv/bin/python bench/bench_smolvla.py --out reports/bench-smolvla.json      # ~15 min, ~7 GB
    .venv/bin/python bench/bench_smolvla.py --memory-table                         # seconds

Needs the vla extra. Run it alone (it holds ~7 GB at its peak: the fp32 model, its ONNX
export and one session at a time).

With `--lerobot-policy DIR` (a LeRobot SmolVLA folder, e.g. scripts/make_full_smolvla.py's) both
sides load that folder's weights and each round also times LeRobot's own code in torch eager
(its prepare_images + embed_prefix + cache fill, and one denoise_step), in a worker process
inside LeRobot's throwaway environment (bench/lerobot_smolvla_worker.py; $LEROBOT_ENV, made by
`scripts/make_lerobot_fixtures.py setup`; about 4 GB more at the peak), and checks its velocity
against this project's step:

    .venv/bin/python scripts/make_full_smolvla.py --data DEMOS --out /tmp/smolvla-full
    .venv/bin/python bench/bench_smolvla.py --lerobot-policy /tmp/smolvla-full --graphs DIR --out X.json

`--threads N` runs every side at N threads instead (torch, each onnxruntime session, the GEMM
ceilings, LeRobot's worker): the issue's "today" numbers were taken at two threads, and a Jetson's
CPU has 6-12 cores. Then onnxruntime's idle threads do not spin (each session's
`session.intra_op.allow_spinning` = 0) and every timed call starts after a 0.2 s pause: a pool left
spinning by the call before takes a core from the next one (a step measured 1.26x slower).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


class LeRobotWorker:
    """LeRobot's SmolVLA timed in its own environment (bench/lerobot_smolvla_worker.py)."""

    def __init__(self, env: Path, policy: Path, inputs: Path, threads: int) -> None:
        py = env / "bin" / "python"
        if not py.exists():
            raise SystemExit(
                f"bench_smolvla: no LeRobot environment at {env} "
                "(make it with: python scripts/make_lerobot_fixtures.py setup, or set LEROBOT_ENV)"
            )
        worker = Path(__file__).with_name("lerobot_smolvla_worker.py")
        self.proc = subprocess.Popen(
            [str(py), str(worker), str(policy), str(inputs), str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.params = self._answer()["params"]

    def _answer(self) -> Any:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("@@ "):
                return json.loads(line[3:])
        raise SystemExit(f"bench_smolvla: the LeRobot worker ended (exit {self.proc.wait()})")

    def call(self, command: str) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def weights_source(graphs: Path, source: str) -> None:
    """A reused --graphs folder must hold graphs of the same weights (refuse a mix)."""
    marker = graphs / "source.json"
    if marker.exists():
        had = json.loads(marker.read_text())["weights"]
        if had != source:
            raise SystemExit(f"bench_smolvla: {graphs} holds graphs of {had}, not of {source}")
    else:
        graphs.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"weights": source}) + "\n")


def cpu_name() -> str:
    """The CPU as /proc/cpuinfo names it, with its family and model (Linux; 'unknown CPU' elsewhere)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    fields = dict(
        (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in info.splitlines()[:30])
    )
    name, family, model = (fields.get(k, "?") for k in ("model name", "cpu family", "model"))
    return f"{name} (family {family}, model {model})"


def ort_session(model: str | bytes, threads: int, profile_prefix: str | None = None) -> Any:
    """An onnxruntime CPU session of a graph file or a serialised model at ``threads`` intra-op
    threads, idle threads not spinning (profiling on where ``profile_prefix`` is given)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def _serialised(graph: Any) -> bytes:
    from onnx import helper

    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def onnx_gemm(threads: int, n: int = 1024) -> tuple[Any, dict]:
    """onnxruntime's own GEMM ceiling: one (n, n) x (n, n) fp32 MatMul, B a constant (prepacked,
    as every weight of the exported graphs)."""
    from onnx import TensorProto, helper, numpy_helper

    b = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "gemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
        [numpy_helper.from_array(b, "b")],
    )
    feeds = {"a": np.random.default_rng(2).standard_normal((n, n)).astype(np.float32)}
    return ort_session(_serialised(g), threads), feeds


def onnx_mlp_chain(tokens: int, width: int, ff: int, layers: int, threads: int) -> tuple[Any, dict, int]:
    """The expert's SwiGLU MLPs alone, in onnxruntime, at the step's token count: `layers` blocks
    x + down(silu(x gate) * (x up)) with distinct weights of the expert's sizes (so they stream
    from memory as the step's do). Returns (session, feeds, FLOPs): the rate onnxruntime's
    GEMMs reach on the step's own matrix shapes, the step's realistic ceiling."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    nodes, inits, cur = [], [], "x"
    for i in range(layers):
        for name, shape in ((f"g{i}", (width, ff)), (f"u{i}", (width, ff)), (f"d{i}", (ff, width))):
            w = rng.standard_normal(shape) / np.sqrt(shape[0])
            inits.append(numpy_helper.from_array(w.astype(np.float32), name))
        nodes += [
            helper.make_node("MatMul", [cur, f"g{i}"], [f"hg{i}"]),
            helper.make_node("MatMul", [cur, f"u{i}"], [f"hu{i}"]),
            helper.make_node("Sigmoid", [f"hg{i}"], [f"sg{i}"]),
            helper.make_node("Mul", [f"hg{i}", f"sg{i}"], [f"ag{i}"]),
            helper.make_node("Mul", [f"ag{i}", f"hu{i}"], [f"m{i}"]),
            helper.make_node("MatMul", [f"m{i}", f"d{i}"], [f"o{i}"]),
            helper.make_node("Add", [cur, f"o{i}"], [f"r{i}"]),
        ]
        cur = f"r{i}"
    g = helper.make_graph(
        nodes,
        "mlp_chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, tokens, width])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [1, tokens, width])],
        inits,
    )
    feeds = {"x": rng.standard_normal((1, tokens, width)).astype(np.float32)}
    flops = layers * 3 * 2 * tokens * width * ff
    return ort_session(_serialised(g), threads), feeds, flops


def step_bounds(step_flops: float, chain_gflops: float, gemm_gflops: float, eager_steps: dict) -> dict:
    """The fp32 step's floors and the largest speedups they allow: its FLOPs at the rate the
    expert's MLP shapes reach in onnxruntime (the chain: a ceiling where the step's GEMMs run no
    faster than it, as on the Zen 5 host) and at onnxruntime's 1024^3 GEMM rate (the ceiling of
    any fp32 graph on that library). eager_steps: {label: seconds per eager step}."""
    out: dict = {}
    # (the floor's key, the speedups' key suffix: the chain's keep the names of older reports)
    for floor_key, suffix, gflops in (
        ("onnx_fp32_step_at_mlp_chain_rate_s", "", chain_gflops),
        ("onnx_fp32_step_at_gemm_peak_s", "_at_gemm_peak", gemm_gflops),
    ):
        out[floor_key] = floor_s = step_flops / gflops / 1e9
        for label, eager_s in eager_steps.items():
            out[f"max_speedup_over_{label}{suffix}"] = eager_s / floor_s
    return out


def op_profile(graph: Path, feeds: dict, threads: int, runs: int = 10) -> dict:
    """onnxruntime's profiler on one graph: milliseconds per run by op type (profiling adds
    its own overhead; read the shares, not the sum)."""
    import collections

    sess = ort_session(str(graph), threads, profile_prefix=str(graph.parent / f"{graph.stem}-profile"))
    for _ in range(runs + 1):
        sess.run(None, feeds)
    trace = Path(sess.end_profiling())
    per_op: collections.Counter = collections.Counter()
    for e in json.loads(trace.read_text()):
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    trace.unlink()
    total = sum(per_op.values())
    matmul = sum(v for k, v in per_op.items() if k in ("MatMul", "FusedMatMul", "Gemm"))
    return {
        "ms_per_run": {k: v / (runs + 1) / 1e3 for k, v in per_op.most_common()},
        "matmul_share": matmul / total,
    }


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
    ap.add_argument("--threads", type=int, default=1, help="threads of every side (default 1)")
    ap.add_argument(
        "--graphs", default=None, help="folder of this script's exported graphs to reuse (same weights)"
    )
    ap.add_argument(
        "--lerobot-policy",
        default=None,
        help="a LeRobot SmolVLA folder: both sides load its weights, LeRobot's own eager code is timed too",
    )
    ap.add_argument(
        "--lerobot-env",
        default=os.environ.get("LEROBOT_ENV", "/work/lerobot-env"),
        help="LeRobot's throwaway environment (scripts/make_lerobot_fixtures.py setup)",
    )
    a = ap.parse_args()
    if a.threads < 1:
        ap.error(f"--threads must be at least 1, not {a.threads}")
    if a.memory_table:
        print(json.dumps(memory_table(), indent=1))
        return 0
    import onnx
    import torch

    from export.pipeline import onnxruntime_ops
    from export.precision import fuse_fast_gelu, to_dynamic_int8
    from legato.adapters.legato_flow import LegatoHead
    from legato.adapters.published import smolvla_module
    from legato.adapters.smolvla_graphs import PREFIX_OUTPUTS, PrefixGraph, StepGraph

    threads = a.threads
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    load_start = os.getloadavg()
    res: dict = {
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, {threads} thread{'s' if threads > 1 else ''}; "
        "load average recorded",
        "threads": threads,
    }
    if a.lerobot_policy:
        from legato.adapters.smolvla import SmolVLAPolicy

        source = str(Path(a.lerobot_policy).resolve())
        model = SmolVLAPolicy.load(source).model.eval()
    else:
        source = "smolvla_module(), torch.manual_seed(0)"
        model = smolvla_module().eval()
    res["weights"] = source
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
    weights_source(tmp, source)
    worker = None
    if a.lerobot_policy:
        inputs = tmp / "lerobot-inputs.npz"
        np.savez(
            inputs,
            frame=frame.numpy(),
            tokens=tokens.numpy(),
            token_mask=mask.numpy(),
            state=state.numpy(),
            x=x.numpy(),
            t=t.numpy(),
        )
        worker = LeRobotWorker(Path(a.lerobot_env), Path(source), inputs, threads)
        worker.call("prefix")
        v_lr = np.load(worker.call(f"velocity {tmp / 'lerobot-velocity.npy'}"))
        res["lerobot_params"] = worker.params
        res["lerobot_velocity"] = {  # LeRobot's step from its own prefix against this project's
            "max_abs": float(np.abs(v_lr - v_ref).max()),
            "max_abs_ref": float(np.abs(v_ref).max()),
        }
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
        for g in ("prefix", "step"):  # as `legato export` writes fp32 for a CPU profile
            fuse_fast_gelu(tmp / f"{g}.onnx")
        res["export_s"] = time.perf_counter() - t0
    res["onnxruntime_ops"] = {
        g: onnxruntime_ops(onnx.load(str(tmp / f"{g}.onnx"), load_external_data=False))
        for g in ("prefix", "step")
    }
    if "FastGelu" not in res["onnxruntime_ops"]["prefix"]:
        raise SystemExit(f"bench_smolvla: {tmp}/prefix.onnx has no FastGelu (older graphs): new --graphs")
    for g in ("prefix", "step"):
        if not (tmp / f"{g}-int8.onnx").exists():
            to_dynamic_int8(tmp / f"{g}.onnx", tmp / f"{g}-int8.onnx")
        if not (tmp / f"{g}-int8attn.onnx").exists():  # attention's MatMuls too
            to_dynamic_int8(tmp / f"{g}.onnx", tmp / f"{g}-int8attn.onnx", activation_matmuls=True)
    res["graph_bytes"] = {p.stem: p.stat().st_size for p in sorted(tmp.glob("*.onnx"))}
    feeds_prefix = {n: v.numpy() for n, v in zip(names, args, strict=True)}
    sessions, feeds = {}, {}
    for precision, suffix in (("fp32", ""), ("int8", "-int8"), ("int8attn", "-int8attn")):
        sp, ss = (ort_session(str(tmp / f"{g}{suffix}.onnx"), threads) for g in ("prefix", "step"))
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

    def settle() -> None:  # let the previous call's thread pool go idle (see the docstring)
        if threads > 1:
            time.sleep(0.2)

    def once(key: str, fn) -> None:
        settle()
        t0 = time.perf_counter()
        fn()
        times.setdefault(key, []).append(time.perf_counter() - t0)

    a_mm, b_mm = torch.randn(1024, 1024), torch.randn(1024, 1024)
    gemm_sess, gemm_feeds = onnx_gemm(threads)
    expert = model.expert.config
    mlp_sess, mlp_feeds, mlp_flops = onnx_mlp_chain(
        spec.chunk, expert.hidden_size, expert.intermediate_size, expert.num_hidden_layers, threads
    )
    res["mlp_chain"] = {
        "tokens": spec.chunk,
        "width": expert.hidden_size,
        "ff": expert.intermediate_size,
        "layers": expert.num_hidden_layers,
        "flops": mlp_flops,
    }
    with torch.no_grad():
        for _ in range(a.repeats + 1):
            once("matmul", lambda: a_mm @ b_mm)
            once("matmul_onnx", lambda: gemm_sess.run(None, gemm_feeds))
            once("mlp_chain_onnx", lambda: mlp_sess.run(None, mlp_feeds))
            once("eager_prefix", lambda: prefix(*args))
            once("eager_step", lambda: step(x, t, omega, *ctx))
            if worker is not None:  # timed inside the worker: no pipe in the number
                for part in ("prefix", "step"):
                    settle()
                    times.setdefault(f"lerobot_{part}", []).append(worker.call(part))
            for prec, (sp, ss) in sessions.items():
                once(f"onnx_{prec}_prefix", lambda sp=sp: sp.run(None, feeds_prefix))
                once(f"onnx_{prec}_step", lambda ss=ss, prec=prec: ss.run(None, feeds[prec]))
    med = {k: statistics.median(v[1:]) for k, v in times.items()}  # the first round warms up
    # The GEMM ceiling is the faster library's: torch's MKL and onnxruntime's MLAS
    # differ by 2x on some CPUs (MKL takes a slower path on AMD's AVX-512 parts).
    res["matmul_gflops"] = {
        "torch": 2 * 1024**3 / med["matmul"] / 1e9,
        "onnxruntime": 2 * 1024**3 / med["matmul_onnx"] / 1e9,
    }
    res["matmul_peak_gflops"] = max(res["matmul_gflops"].values())
    res["mlp_chain_gflops"] = mlp_flops / med["mlp_chain_onnx"] / 1e9
    for k in ("eager", "onnx_fp32", "onnx_int8", "onnx_int8attn"):
        res[f"{k}_s"] = {"prefix": med[f"{k}_prefix"], "step": med[f"{k}_step"]}
    n = spec.num_steps
    kinds = ("eager_s", "onnx_fp32_s", "onnx_int8_s", "onnx_int8attn_s")
    if worker is not None:
        res["lerobot_eager_s"] = {"prefix": med["lerobot_prefix"], "step": med["lerobot_step"]}
        res["peak_rss_gb_lerobot"] = worker.call("rss")
        worker.close()
        kinds = ("lerobot_eager_s", *kinds)
    chunk = {k: res[k]["prefix"] + n * res[k]["step"] for k in kinds}
    res["chunk_s"] = chunk
    res["speedup"] = {
        "step_fp32": res["eager_s"]["step"] / res["onnx_fp32_s"]["step"],
        "prefix_fp32": res["eager_s"]["prefix"] / res["onnx_fp32_s"]["prefix"],
        "chunk_fp32": chunk["eager_s"] / chunk["onnx_fp32_s"],
        "chunk_int8": chunk["eager_s"] / chunk["onnx_int8_s"],
        "chunk_int8attn": chunk["eager_s"] / chunk["onnx_int8attn_s"],
    }
    if "lerobot_eager_s" in res:  # against LeRobot's own eager code, what users run today
        lr = res["lerobot_eager_s"]
        res["speedup_vs_lerobot"] = {
            "step_fp32": lr["step"] / res["onnx_fp32_s"]["step"],
            "step_int8attn": lr["step"] / res["onnx_int8attn_s"]["step"],
            "prefix_fp32": lr["prefix"] / res["onnx_fp32_s"]["prefix"],
            "chunk_fp32": chunk["lerobot_eager_s"] / chunk["onnx_fp32_s"],
            "chunk_int8attn": chunk["lerobot_eager_s"] / chunk["onnx_int8attn_s"],
            "step_this_eager": lr["step"] / res["eager_s"]["step"],
        }
    res["load_average"] = {"start": load_start, "end": os.getloadavg()}
    # what `legato export --precision int8` does for this adapter (int8attn: attention's MatMuls too)
    from legato.adapters.smolvla_adapter import SmolVLALoaded

    res["int8_exported"] = "int8attn" if SmolVLALoaded.int8_activation_matmuls else "int8"
    peak = res["matmul_peak_gflops"]
    res["fraction_of_peak"] = {
        f"{k}_{g}": res["flops"][g] / res[k][g] / 1e9 / peak
        for k in ("eager_s", "onnx_fp32_s", "lerobot_eager_s")
        for g in ("prefix", "step")
        if k in res
    }
    sides = (("eager_s", "eager"), ("lerobot_eager_s", "lerobot"))
    eager_steps = {label: res[k]["step"] for k, label in sides if k in res}
    res["step_bound"] = step_bounds(
        res["flops"]["step"], res["mlp_chain_gflops"], res["matmul_gflops"]["onnxruntime"], eager_steps
    )
    res["onnx_fp32_step_profile"] = op_profile(tmp / "step.onnx", feeds["fp32"], threads)
    print(json.dumps(res, indent=1))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`legato export`: checkpoint + device profile -> verified bundle (docs/bundle.md).

The checkpoint is loaded through its policy adapter (legato.adapters: the reference model's, or
an architecture's), which says what the graphs are, what the robot must know about them (the
manifest's adapter section) and where held-out observations and a closed loop come from.
Stages (each prints one progress line): check the target and the profile, load the checkpoint,
export the fp32 graphs (checker + shape inference), fp32 parity against torch, the precision
transform and its gates (cosine per chunk, closed-loop success against the fp32 bundle),
TensorRT engines where asked and possible, then the bundle is written through
edge.outputs.atomic_folder: complete or not at all. Every gate runs the bundle through
edge.denoiser.ChunkDenoiser wired exactly as `legato run` wires it (edge.bundle_policy). Any
refusal is one line; nothing is written for it.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edge.bundle import FORMAT, FORMAT_VERSION, MANIFEST, sha256_file, verify
from edge.engine import Engine
from edge.errors import BundleError, OutputError, UsageError
from edge.outputs import MARKER, atomic_folder, check_target
from edge.profiles import Profile, load_profile
from export.onnx_files import copy_graph

GRAPHS = ("prefix", "flow_head", "fused")


@dataclass
class ExportOptions:
    checkpoint: str | Path
    profile: str | Path
    out: str | Path
    precision: str | None = None  # default: the profile's flow-head precision
    engines: bool = False
    force: bool = False
    parity_samples: int = 16  # held-out observations for the chunk gates
    episodes: int = 100  # closed-loop episodes for the fp16/int8 gate (0: skip for fp32)
    calibration: str | Path | None = None  # .npz with the observation arrays (else the adapter's)
    calibration_samples: int = 32
    threads: int = 1
    attention: str = (
        "auto"  # standard | onnxruntime (fused op, CPU profiles) | auto: by the profile's backend
    )
    progress: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))


def _io(model: onnx.ModelProto) -> tuple[list[dict], list[dict]]:
    init = {i.name for i in model.graph.initializer}

    def t(v: onnx.ValueInfoProto) -> dict[str, Any]:
        tt = v.type.tensor_type
        return {
            "name": v.name,
            "dtype": str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))),
            "shape": [d.dim_value for d in tt.shape.dim],
        }

    return [t(i) for i in model.graph.input if i.name not in init], [t(o) for o in model.graph.output]


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def check_graph(path: Path) -> onnx.ModelProto:
    """onnx.checker (full) and strict shape inference; a failure is a bug in the exporter."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    return model


def write_manifest(folder: Path, lp: Any, precision: str, graph_precision: dict[str, str],
                   extra: dict[str, Any], fp32_dir: Path | None = None) -> dict:  # fmt: skip
    """Write the adapter's extra files and manifest.json (format 2) for the graphs in ``folder``:
    every file of the folder listed with its sha256, each graph's I/O and memory (export.memory;
    the per-precision estimates from the fp32 graph, in ``fp32_dir`` when the graphs here are not
    fp32), the onnxruntime-only ops each graph holds and the attention they imply."""
    from export.memory import graph_memory

    for rel, data in lp.bundle_files().items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    graphs, files, ort_ops = {}, {}, {}
    for name in GRAPHS:
        p = folder / f"{name}.onnx"
        if not p.exists():
            continue
        model = onnx.load(str(p), load_external_data=False)
        if ops := onnxruntime_ops(model):
            ort_ops[name] = ops
        ins, outs = _io(model)
        mem = graph_memory(p, estimates=graph_precision[name] == "fp32")
        if "by_precision" not in mem and fp32_dir is not None and (fp32_dir / p.name).exists():
            mem["by_precision"] = graph_memory(fp32_dir / p.name, estimates=True)["by_precision"]
        graphs[name] = {
            "file": p.name,
            "sha256": sha256_file(p),
            "opset": _opset(model),
            "precision": graph_precision[name],
            "inputs": ins,
            "outputs": outs,
            "nodes": len(model.graph.node),
            "memory": mem,
        }
    for p in sorted(x for x in folder.rglob("*") if x.is_file()):  # graphs, external data, engines, extras
        rel = p.relative_to(folder).as_posix()
        if rel not in (MANIFEST, MARKER):
            files[rel] = sha256_file(p)
    from importlib.metadata import PackageNotFoundError, version

    try:
        tool = f"legato-edge {version('legato-edge')}"
    except PackageNotFoundError:
        tool = "legato-edge"
    sec = lp.section
    data = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": folder.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tool": tool,
        "adapter": sec,
        "model": lp.model_config,
        "precision": precision,
        "sampler": {
            "num_steps": sec["num_steps"],
            "omega_schedule": sec["schedule"]["shape"],
            "d_max": sec["schedule"]["d_max"],
            "r_max": sec["schedule"]["r_max"],
            "blend": "host float32",
            "final_blend": True,
            "time_grid": "t_k = k / N (t = 0 noise; the head converts to the adapter's convention)",
        },
        "graphs": graphs,
        "files": files,
        "engines": {},
        # What the graphs hold, not what was asked: an adapter may have no fused attention.
        "onnxruntime_ops": ort_ops,
        "attention": "onnxruntime com.microsoft.MultiHeadAttention"
        if any("MultiHeadAttention" in ops for ops in ort_ops.values())
        else "standard ops",
        **extra,
    }
    (folder / MANIFEST).write_text(json.dumps(data, indent=1) + "\n")
    return data


def check_writable(out: Path) -> None:
    """Refuse an output whose folder cannot be written before any long work: a temporary file is
    created and removed in the nearest existing ancestor (nothing is left behind)."""
    base = out.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as e:
        raise OutputError(f"cannot write {out}: {base} is not writable ({e.strerror or e})") from None


def check_profile_fits(profile: Profile, spec: Any, precision: str) -> None:
    where = f"profile {profile.name} ({profile.path})"
    if precision not in profile.device.precisions:
        raise UsageError(
            f"--precision {precision}: {where} cannot run {precision} on {profile.device.model} "
            f"(allowed: {', '.join(profile.device.precisions)})"
        )
    if precision == "fp8":
        raise UsageError(
            "--precision fp8: the exporter does not write FP8 Q/DQ graphs yet (allowed: fp32, fp16, int8)"
        )
    from edge.profiles import chunk_geometry

    # H and N are the checkpoint's; a profile that pins others, or whose s / d_max / ramp do not
    # fit them, is refused before minutes of work
    chunk_geometry(
        profile.control,
        spec.horizon,
        spec.num_steps,
        spec.d_max,
        where,
        error=UsageError,
        model="the checkpoint",
    )


def attention_kind(profile: Profile, requested: str, precision: str) -> str:
    """onnxruntime's fused MultiHeadAttention where every graph runs on onnxruntime's CPU provider
    in fp32 or dynamic int8 (it wins there: docs/performance.md); standard ops otherwise
    (TensorRT fuses the MatMul-Softmax-MatMul pattern itself)."""
    if requested not in ("auto", "standard", "onnxruntime"):
        raise UsageError(f"--attention {requested}: allowed: auto, standard, onnxruntime")
    cpu_only = all(
        e.backend == "onnxruntime" and tuple(e.providers) == ("CPUExecutionProvider",)
        for e in profile.engines.values()
    )
    if requested == "onnxruntime" and (not cpu_only or precision == "fp16"):
        raise UsageError(
            f"--attention onnxruntime: profile {profile.name} runs graphs outside onnxruntime's CPU "
            "provider (allowed: standard)"
        )
    if requested == "auto":
        return "onnxruntime" if cpu_only and precision != "fp16" else "standard"
    return requested


def load_calibration(path: str | Path, lp: Any) -> list[Any]:
    """Held-out-style samples (no previous chunk) from a .npz with the adapter's observation
    arrays (the reference: image (k, H, W, 3) uint8, tokens (k, l) int64, state (k, s) raw float32);
    anything else is refused naming the array."""
    from legato.adapters import Obs, Sample

    want = lp.observation_arrays()
    try:
        data = np.load(path)
        absent = [k for k in want if k not in data.files]
        if absent:
            raise UsageError(f"--calibration {path}: lacks array {absent[0]!r} (needs {', '.join(want)})")
        arrays = {k: data[k] for k in want}
    except (OSError, ValueError) as e:
        raise UsageError(f"--calibration {path}: unreadable ({e})") from None
    k = len(next(iter(arrays.values())))
    for name, (dt, shape) in want.items():
        x = arrays[name]
        if x.dtype != np.dtype(dt) or tuple(x.shape[1:]) != shape or len(x) != k or k == 0:
            raise UsageError(
                f"--calibration {path}: {name} is {x.dtype}{list(x.shape)}, the model's input "
                f"needs {np.dtype(dt)}[k, {', '.join(map(str, shape))}] with k >= 1 for every array"
            )
    return [Sample(Obs(**{n: arrays[n][i : i + 1] for n in want}), None) for i in range(k)]


class _Recording(Engine):
    """An engine that records a copy of its inputs at every run (the calibration feeds), delegating
    everything else to the engine it wraps (bindings included)."""

    def __init__(self, inner: Engine, feeds: list[dict[str, np.ndarray]]) -> None:
        self.inner, self.feeds, self.name = inner, feeds, inner.name
        self.input_specs, self.output_specs = inner.input_specs, inner.output_specs
        self.inputs, self.outputs = inner.inputs, inner.outputs

    def _run_impl(self) -> None:
        self.feeds.append({n: np.array(v) for n, v in self.inner.inputs.items()})
        self.inner.run()

    def _bind_impl(self, name: str, producer: Engine, output: str) -> None:
        self.inner._bind_impl(name, getattr(producer, "inner", producer), output)


def _calibration_feeds(lp: Any, opt: ExportOptions, fp32_dir: Path) -> tuple[dict[str, list], dict[str, Any]]:
    """Feeds for each graph, recorded from the deployed sampler (edge.denoiser over the fp32
    engines) while it makes the chunks the robot makes: observations from the adapter (the
    reference: simulator rollouts on seed 2000) or --calibration, each chunk continued from a
    real reference (the observation's previous chunk, or the policy's own first chunk on it)
    with the gates' requests (d cycling over 0..d_max, the default ramp), so the quantizer sees
    omega > 0 and real references as well as first chunks."""
    from edge.bundle import load_manifest
    from edge.bundle_policy import _engine
    from edge.denoiser import denoiser_for, mode_for
    from export import parity
    from export.precision import feeds_sha256

    if opt.calibration is not None:
        samples = load_calibration(opt.calibration, lp)
        desc: dict[str, Any] = {"source": str(opt.calibration), "samples": len(samples)}
    else:
        seed = 2000  # neither the training seed (0) nor the held-out evaluation seed (1000)
        samples = lp.samples(opt.calibration_samples, seed=seed)
        desc = {"source": "held-out observations of the adapter (reference: simulator rollouts of the "
                "torch policy)", "seed": seed, "samples": len(samples)}  # fmt: skip
    m = load_manifest(fp32_dir)
    ad, spec = m.adapter, m.spec
    feeds: dict[str, list] = {g: [] for g in m.graphs}
    eng = {g: _Recording(_engine(m.graph_path(g), opt.threads), feeds[g]) for g in m.graphs}
    mode = mode_for(spec)
    dens = [denoiser_for(ad, {"prefix": eng["prefix"], "flow_head": eng["flow_head"]}, mode)]
    if "fused" in eng and mode != "hard-prefix":
        dens.append(denoiser_for(ad, eng, mode))
    rng = np.random.default_rng(0)
    chunks = continued = 0
    omega_max = 0.0
    for i, smp in enumerate(samples):
        _, req = parity.request(spec, i)
        o = smp.obs
        for den in dens:
            tail = None if smp.prev is None else smp.prev[0, req.s :]
            for _ in range(1 if tail is not None else 2):
                den.set_observation(o.image, o.tokens, o.state)
                eps = rng.standard_normal(den.noise_shape).astype(np.float32)
                out = den.denoise(eps, tail, req)
                chunks += 1
                if tail is not None and den.method != "naive":
                    continued += 1
                    omega_max = max(omega_max, float(den.omega.max()))
                tail = out[req.s :].copy()  # a first chunk is continued from itself next
    if "fused" in eng and mode == "hard-prefix":  # the fused graph never runs this mode: plain inputs
        for f in feeds["prefix"]:
            zeros = np.zeros((1, spec.horizon, ad.action_pad), np.float32)
            fu = ad.fused
            eps = rng.standard_normal(zeros.shape).astype(np.float32)
            feeds["fused"].append(
                {**f, fu.eps: eps, fu.a_ref: zeros, fu.omega: np.zeros(zeros.shape[:2], np.float32)}
            )
    desc.update(chunks=chunks, continued_chunks=continued, omega_max=omega_max,
                sampler="edge.denoiser.ChunkDenoiser (the robot's), first and continued chunks",
                sha256=feeds_sha256(feeds["prefix"]))  # fmt: skip
    return feeds, desc


def _stage_printer(say: Callable[[str], None]) -> Callable[[int, str], None]:
    t0 = time.perf_counter()
    return lambda i, text: say(f"[{i}/7 {time.perf_counter() - t0:6.1f}s] {text}")


def _export_fp32(lp: Any, graphs: dict[str, Any], folder: Path, onnxruntime_fusions: bool) -> None:
    """The fp32 graphs; with ``onnxruntime_fusions`` (every graph on onnxruntime's CPU provider)
    tanh GELU chains become onnxruntime's FastGelu, as in its dynamic int8 graphs (-7 % on
    full-size SmolVLA's fp32 prefix, docs/performance.md); the parity gate then checks them."""
    from export.graphs import export_graph
    from export.precision import fuse_fast_gelu

    for name, g in graphs.items():
        export_graph(g, folder / f"{name}.onnx")
        if onnxruntime_fusions:
            fuse_fast_gelu(folder / f"{name}.onnx")
        check_graph(folder / f"{name}.onnx")
    write_manifest(folder, lp, "fp32", dict.fromkeys(graphs, "fp32"), {})


def onnxruntime_ops(model: onnx.ModelProto) -> dict[str, int]:
    """The onnxruntime-only (com.microsoft) ops a graph holds, by op type: what it needs beyond
    standard ONNX."""
    return dict(sorted(Counter(n.op_type for n in model.graph.node if n.domain == "com.microsoft").items()))


def _label(graph: str) -> str:
    return "prefix+flow_head" if graph == "flow_head" else graph


def _chunk_gates(ref: Any, folder: Path, samples: list[Any], threads: int) -> dict[str, dict[str, float]]:
    """The bundle in ``folder`` against the torch reference, stepwise and fused (as `legato run`
    and `legato run --fused` run it)."""
    from edge.bundle_policy import BundlePolicy
    from export import parity

    res = {"flow_head": parity.compare(ref, BundlePolicy(folder, threads=threads), samples)}
    if (folder / "fused.onnx").exists():
        res["fused"] = parity.compare(ref, BundlePolicy(folder, threads=threads, fused=True), samples)
    return res


def export_bundle(opt: ExportOptions) -> Path:
    say = opt.progress
    out = Path(opt.out)
    stage = _stage_printer(say)
    t0 = time.perf_counter()

    stage(1, f"checking {out} and profile {opt.profile}")
    check_target(out, "bundle", replace=opt.force)
    check_writable(out)
    profile = load_profile(opt.profile)
    precision = opt.precision or profile.engine("flow_head").precision
    if precision not in profile.device.precisions:  # before the checkpoint loads (fast refusal)
        check_profile_fits(profile, None, precision)
    if precision != "fp32" and opt.episodes < 1:
        raise UsageError(
            f"--episodes {opt.episodes}: the {precision} gate needs closed-loop episodes (allowed: >= 1)"
        )
    stage(2, f"loading checkpoint {opt.checkpoint}")
    import torch

    from edge.bundle_policy import BundlePolicy
    from edge.policy import held_out_seed
    from export import parity
    from legato import adapters

    torch.set_num_threads(max(1, opt.threads))
    lp = adapters.load(opt.checkpoint, threads=opt.threads)
    spec = lp.spec.spec
    check_profile_fits(profile, spec, precision)
    if opt.calibration is not None:
        load_calibration(opt.calibration, lp)  # refuse a mismatch before minutes of work
    with tempfile.TemporaryDirectory(prefix="legato-export-") as work_s:
        work = Path(work_s)
        fp32_dir = work / "fp32"
        fp32_dir.mkdir()
        fused_attn = attention_kind(profile, opt.attention, precision) == "onnxruntime"
        to_export = lp.graphs(fused_attn)
        graphs = tuple(to_export)
        stage(
            3,
            f"exporting fp32 graphs ({', '.join(graphs)}); "
            + ("onnxruntime's fused ops; " if fused_attn else "")
            + "onnx.checker + shape inference",
        )
        _export_fp32(lp, to_export, fp32_dir, onnxruntime_fusions=fused_attn)
        stage(4, f"fp32 parity against torch on {opt.parity_samples} held-out observations")
        samples = lp.samples(opt.parity_samples)
        torch_pol = lp.reference_policy(threads=opt.threads)
        res = _chunk_gates(torch_pol, fp32_dir, samples, opt.threads)
        for g, r in res.items():
            if r["max_abs"] > parity.FP32_MAX_ABS:
                raise BundleError(
                    f"parity gate failed (fp32): graph {g} chunk max abs error {r['max_abs']:.3g} > "
                    f"{parity.FP32_MAX_ABS:g} in normalised units; no bundle written"
                )
        say(
            "    fp32 chunk max abs error: "
            + ", ".join(f"{_label(g)} {r['max_abs']:.2e}" for g, r in res.items())
        )
        parity_rec: dict[str, Any] = {
            "observations": len(samples),
            "seed": held_out_seed(lp.train_seed),
            "reference": f"torch ({type(torch_pol).__module__}.{type(torch_pol).__name__})",
            "runs": "edge.denoiser.ChunkDenoiser on both sides; the bundle's over onnxruntime engines "
            "wired as legato run wires them (edge.denoiser.denoiser_for)",
            "fp32": res,
        }
        quant: dict[str, Any] = {"method": "none"}
        final_dir, graph_prec = fp32_dir, dict.fromkeys(graphs, "fp32")
        if precision != "fp32":
            stage(5, f"{precision}: transforming graphs and checking their gates")
            final_dir = work / precision
            final_dir.mkdir()
            backend = profile.engine("flow_head").backend
            quant, graph_prec = _transform(lp, opt, precision, backend, fp32_dir, final_dir, graphs)
            for name in graphs:
                check_graph(final_dir / f"{name}.onnx")
            write_manifest(final_dir, lp, precision, graph_prec, {}, fp32_dir=fp32_dir)
            qres = _chunk_gates(torch_pol, final_dir, samples, opt.threads)
            parity_rec[precision] = qres
            for g, r in qres.items():
                if r["cosine_min"] < parity.COSINE_MIN:
                    raise BundleError(
                        f"parity gate failed ({precision}): graph {g} min chunk cosine "
                        f"{r['cosine_min']:.4f} < {parity.COSINE_MIN} (max abs error {r['max_abs']:.3g}); "
                        "no bundle written"
                    )
            say(
                f"    {precision} min chunk cosine: "
                + ", ".join(f"{_label(g)} {r['cosine_min']:.5f}" for g, r in qres.items())
            )
        else:
            stage(5, "fp32: no precision transform")
        if opt.episodes > 0:
            stage(
                6,
                f"closed loop: {opt.episodes} held-out episodes, fp32 bundle"
                + (f" and {precision} bundle" if precision != "fp32" else ""),
            )
            s32 = lp.closed_loop(BundlePolicy(fp32_dir, threads=opt.threads), opt.episodes)
            if s32 is None:
                say("    no simulator fits this policy: closed-loop gate skipped")
                parity_rec["closed_loop"] = {"skipped": "no simulator fits the policy"}
            else:
                loop = {"episodes": opt.episodes, "fp32_success": s32,
                        "runs": "edge.denoiser.ChunkDenoiser (stepwise) in legato.rollout"}  # fmt: skip
                if precision != "fp32":
                    sq = lp.closed_loop(BundlePolicy(final_dir, threads=opt.threads), opt.episodes)
                    loop["success"] = sq
                    miss = 100 * (s32 - sq)
                    say(f"    success: fp32 {100 * s32:.1f} %, {precision} {100 * sq:.1f} %")
                    if abs(miss) > parity.CLOSED_LOOP_POINTS:
                        raise BundleError(
                            f"parity gate failed ({precision}): graphs {', '.join(GRAPHS[:2])} closed-loop "
                            f"success {100 * sq:.1f} % vs fp32 {100 * s32:.1f} % ({miss:+.1f} points, "
                            f"allowed {parity.CLOSED_LOOP_POINTS:g}); no bundle written"
                        )
                else:
                    say(f"    success: fp32 {100 * s32:.1f} %")
                parity_rec["closed_loop"] = loop
        else:
            stage(6, "closed loop skipped (--episodes 0)")
        parity_rec["gate"] = {
            "fp32_max_abs": parity.FP32_MAX_ABS,
            "cosine_min": parity.COSINE_MIN,
            "closed_loop_points": parity.CLOSED_LOOP_POINTS,
        }
        stage(7, f"writing {out}")
        extra = {
            "source": {
                "checkpoint": str(opt.checkpoint),
                "adapter": lp.name,
                "weights_sha256": lp.weights_sha256,
            },
            "profile": {"name": profile.name, "sha256": sha256_file(profile.path), "data": profile.to_dict()},
            "quantization": quant,
            "parity": parity_rec,
        }
        with atomic_folder(out, "bundle", replace=opt.force, meta={"precision": precision}) as tmp:
            for name in graphs:  # with the external data files each graph names (past 2 GB)
                copy_graph(final_dir / f"{name}.onnx", tmp / f"{name}.onnx")
            engines: dict[str, Any] = {}
            if opt.engines:
                engines = _engines(profile, tmp, say)
            data = write_manifest(tmp, lp, precision, graph_prec, extra, fp32_dir=fp32_dir)
            if engines:
                data["engines"] = engines
            data["name"] = out.name
            (tmp / MANIFEST).write_text(json.dumps(data, indent=1) + "\n")
            verify(tmp)
    say(f"wrote {out} ({precision}, {time.perf_counter() - t0:.1f} s)")
    return out


def _transform(lp: Any, opt: ExportOptions, precision: str, backend: str, src: Path, dst: Path,
               graphs: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, str]]:  # fmt: skip
    from export import precision as prec

    if precision == "fp16":
        kept = []
        for name in graphs:
            kept = prec.to_fp16(src / f"{name}.onnx", dst / f"{name}.onnx")
        return {"method": "fp16", "io": "float32", "keep_fp32": kept}, dict.fromkeys(graphs, "fp16")
    if backend == "onnxruntime":
        both = bool(lp.int8_activation_matmuls)  # the adapter's choice (legato.adapters.LoadedPolicy)
        gelus = {
            name: prec.to_dynamic_int8(src / f"{name}.onnx", dst / f"{name}.onnx", activation_matmuls=both)
            for name in graphs
        }
        return (
            {"method": "dynamic-int8", "per_channel": True, "ops": list(prec.QUANT_OPS), "calibration": None,
             "activation_matmuls": "int8 dynamic" if both else "float",
             "fused_fast_gelu": {g: n for g, n in gelus.items() if n}},
            dict.fromkeys(graphs, "int8"),
        )  # fmt: skip
    feeds, desc = _calibration_feeds(lp, opt, src)
    for name in graphs:
        prec.to_qdq_int8(src / f"{name}.onnx", dst / f"{name}.onnx", feeds[name], f"for {name}")
    return (
        {
            "method": "qdq-int8",
            "per_channel": True,
            "activations": "int8 symmetric per-tensor",
            "excluded": "activation x activation MatMuls (attention) stay float",
            "ops": list(prec.QUANT_OPS),
            "calibration": desc,
        },
        dict.fromkeys(graphs, "int8"),
    )


def _engines(profile: Profile, folder: Path, say: Callable[[str], None]) -> dict[str, Any]:
    from export.tensorrt_build import TensorRTUnavailable, build_engines

    try:
        return build_engines(profile, folder, say)
    except TensorRTUnavailable as e:
        say(f"    --engines: {e}")
        return {}

"""`legato export`: checkpoint + device profile -> verified bundle (docs/bundle.md).

Stages (each prints one progress line): check the target and the profile, load the checkpoint,
export the fp32 graphs (checker + shape inference), fp32 parity against torch, the precision
transform and its gates (cosine per chunk, closed-loop success against the fp32 bundle),
TensorRT engines where asked and possible, then the bundle is written through
edge.outputs.atomic_folder: complete or not at all. Any refusal is one line; nothing is
written for it.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edge.bundle import FORMAT, FORMAT_VERSION, MANIFEST, sha256_file, verify
from edge.errors import BundleError, OutputError, UsageError
from edge.outputs import atomic_folder, check_target
from edge.profiles import Profile, load_profile

OPSET = 17
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
    calibration: str | Path | None = None  # .npz with image/tokens/state (else simulator rollouts)
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


def check_graph(path: Path) -> onnx.ModelProto:
    """onnx.checker (full) and strict shape inference; a failure is a bug in the exporter."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    return model


def write_manifest(
    folder: Path, model_cfg: dict, precision: str, graph_precision: dict[str, str], extra: dict[str, Any]
) -> dict:
    graphs, files = {}, {}
    for name in GRAPHS:
        p = folder / f"{name}.onnx"
        if not p.exists():
            continue
        model = onnx.load(str(p), load_external_data=False)
        ins, outs = _io(model)
        digest = sha256_file(p)
        graphs[name] = {
            "file": p.name,
            "sha256": digest,
            "opset": OPSET,
            "precision": graph_precision[name],
            "inputs": ins,
            "outputs": outs,
            "nodes": len(model.graph.node),
        }
        files[p.name] = digest
    for p in sorted((folder / "engines").glob("*")) if (folder / "engines").is_dir() else []:
        files[f"engines/{p.name}"] = sha256_file(p)
    from importlib.metadata import PackageNotFoundError, version

    try:
        tool = f"legato-edge {version('legato-edge')}"
    except PackageNotFoundError:
        tool = "legato-edge"
    sch = model_cfg["schedule"]
    data = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": folder.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tool": tool,
        "model": model_cfg,
        "precision": precision,
        "sampler": {
            "num_steps": model_cfg["policy"]["num_steps"],
            "omega_schedule": sch.get("shape", "linear"),
            "d_max": sch["d_max"],
            "r_max": sch["r_max"],
            "blend": "host float32",
            "final_blend": True,
            "time_grid": "t_k = k / N",
        },
        "graphs": graphs,
        "files": files,
        "engines": {},
        **extra,
    }
    (folder / MANIFEST).write_text(json.dumps(data, indent=1) + "\n")
    return data


def _model_config(ck: Any) -> dict:
    """The checkpoint's config sections the robot needs (ModelSpec.from_config reads them)."""
    from legato.checkpoint import read_config

    cfg = read_config(ck.path)
    return {
        k: cfg[k]
        for k in ("format_version", "method", "policy", "schedule", "normalization", "task", "train")
        if k in cfg
    }


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
    c = profile.control
    if c.horizon != spec.horizon or c.num_steps != spec.num_steps:
        raise UsageError(
            f"{where}: control.horizon = {c.horizon} and control.num_steps = {c.num_steps}, but the "
            f"checkpoint has H = {spec.horizon}, N = {spec.num_steps}"
        )
    if c.d_max > spec.d_max:
        raise UsageError(
            f"{where}: control.d_max = {c.d_max} exceeds the checkpoint's trained d_max = {spec.d_max}"
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


def load_calibration(path: str | Path, spec: Any) -> list[dict[str, np.ndarray]]:
    """Observation feeds (normalised state) from a .npz with image (k, H, W, 3) uint8, tokens (k, l) int64,
    state (k, s) raw float32; anything else is refused naming the array."""
    try:
        data = np.load(path)
        absent = [k for k in ("image", "tokens", "state") if k not in data.files]
        if absent:
            raise UsageError(f"--calibration {path}: lacks array {absent[0]!r} (needs image, tokens, state)")
        arrays = {k: data[k] for k in ("image", "tokens", "state")}
    except (OSError, ValueError) as e:
        raise UsageError(f"--calibration {path}: unreadable ({e})") from None
    hi, wi = spec.image_hw
    want = {
        "image": (np.uint8, (hi, wi, 3)),
        "tokens": (np.int64, (spec.max_tokens,)),
        "state": (np.float32, (spec.state_dim,)),
    }
    k = len(arrays["image"])
    for name, (dt, shape) in want.items():
        x = arrays[name]
        if x.dtype != dt or tuple(x.shape[1:]) != shape or len(x) != k or k == 0:
            raise UsageError(
                f"--calibration {path}: {name} is {x.dtype}{list(x.shape)}, the model's input "
                f"needs {np.dtype(dt)}[k, {', '.join(map(str, shape))}] with k >= 1 for every array"
            )
    return [{n: arrays[n][i : i + 1] for n in want} for i in range(k)]


def _calibration_feeds(ck: Any, opt: ExportOptions, fp32_dir: Path) -> tuple[dict[str, list], dict[str, Any]]:
    """Feeds for each graph: observations (simulator rollouts on seed 2000, or --calibration),
    and the flow head's inputs recorded while sampling over them."""
    from edge.bundle_policy import BundlePolicy
    from edge.sampler import legato_sample
    from export.parity import held_out_samples

    spec, norm = ck.spec, ck.norm
    if opt.calibration is not None:
        obs_feeds = load_calibration(opt.calibration, spec)
        desc = {"source": str(opt.calibration), "samples": len(obs_feeds)}
    else:
        seed = 2000  # neither the training seed (0) nor the held-out evaluation seed (1000)
        samples = held_out_samples(ck, opt.calibration_samples, seed=seed)
        obs_feeds = [
            {
                "image": s.obs.image,
                "tokens": s.obs.tokens.astype(np.int64),
                "state": s.obs.state.astype(np.float32),
            }
            for s in samples
        ]
        desc = {"source": "simulator rollouts of the torch policy", "seed": seed, "samples": len(obs_feeds)}
    pol = BundlePolicy(fp32_dir)
    prefix_feeds, head_feeds, fused_feeds = [], [], []
    rng = np.random.default_rng(0)
    for f in obs_feeds:
        st = norm.state(f["state"])
        prefix_feeds.append({"image": f["image"], "tokens": f["tokens"], "state": st})
        pre = pol.prefix_engine(prefix_feeds[-1])
        kv, mod, cond = pre["kv"], pre["mod"], pre["cond"]
        eps = rng.standard_normal((1, spec.horizon, spec.action_dim)).astype(np.float32)
        omega = np.zeros((1, spec.horizon), np.float32)

        def record(y, t, om, kv=kv, mod=mod, cond=cond):  # noqa: ANN001, ANN202
            head_feeds.append(
                {
                    "y": y.astype(np.float32),
                    "t": t.astype(np.float32),
                    "omega": om,
                    "kv": kv,
                    "mod": mod,
                    "cond": cond,
                }
            )
            return pol.head_engine(head_feeds[-1])["v"]

        legato_sample(record, eps, np.zeros_like(eps), omega, spec.num_steps)
        fused_feeds.append({**prefix_feeds[-1], "eps": eps, "a_ref": np.zeros_like(eps), "omega": omega})
    from export.precision import feeds_sha256

    desc["sha256"] = feeds_sha256(prefix_feeds)
    return {"prefix": prefix_feeds, "flow_head": head_feeds, "fused": fused_feeds}, desc


def export_bundle(opt: ExportOptions) -> Path:
    say = opt.progress
    out = Path(opt.out)
    t0 = time.perf_counter()

    def stage(i: int, text: str) -> None:
        say(f"[{i}/7 {time.perf_counter() - t0:6.1f}s] {text}")

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

    from legato.checkpoint import load
    from legato.runner import TorchPolicyRunner

    torch.set_num_threads(max(1, opt.threads))
    ck = load(opt.checkpoint)
    check_profile_fits(profile, ck.spec, precision)
    model_cfg = _model_config(ck)
    if opt.calibration is not None:
        load_calibration(opt.calibration, ck.spec)  # refuse a mismatch before minutes of work
    with tempfile.TemporaryDirectory(prefix="legato-export-") as work_s:
        work = Path(work_s)
        fp32_dir = work / "fp32"
        fp32_dir.mkdir()
        stage(3, "exporting fp32 graphs (prefix, flow_head, fused); onnx.checker + shape inference")
        from export.graphs import example_inputs, export_graph, modules

        policy = ck.model.eval()
        fused_attn = attention_kind(profile, opt.attention, precision) == "onnxruntime"
        mods, ex = modules(policy, fused_attn), example_inputs(policy)
        for name in GRAPHS:
            export_graph(
                mods[name], ex[name], name, fp32_dir / f"{name}.onnx", OPSET, fused_attention=fused_attn
            )
            check_graph(fp32_dir / f"{name}.onnx")
        write_manifest(fp32_dir, model_cfg, "fp32", dict.fromkeys(GRAPHS, "fp32"), {})
        stage(4, f"fp32 parity against torch on {opt.parity_samples} held-out observations")
        from edge.bundle_policy import BundlePolicy
        from export import parity

        samples = parity.held_out_samples(ck, opt.parity_samples)
        torch_pol = TorchPolicyRunner(ck, threads=opt.threads)
        fp32_pol = BundlePolicy(fp32_dir, threads=opt.threads)
        fp32_fused = BundlePolicy(fp32_dir, threads=opt.threads, fused=True)
        res = {
            "flow_head": parity.compare(torch_pol, fp32_pol, samples),
            "fused": parity.compare(torch_pol, fp32_fused, samples),
        }
        for g, r in res.items():
            if r["max_abs"] > parity.FP32_MAX_ABS:
                raise BundleError(
                    f"parity gate failed (fp32): graph {g} chunk max abs error {r['max_abs']:.3g} > "
                    f"{parity.FP32_MAX_ABS:g} in normalised units; no bundle written"
                )
        say(
            f"    fp32 chunk max abs error: prefix+flow_head {res['flow_head']['max_abs']:.2e}, "
            f"fused {res['fused']['max_abs']:.2e}"
        )
        parity_rec: dict[str, Any] = {
            "observations": len(samples),
            "seed": parity.held_out_seed(ck.train_seed),
            "reference": "torch (legato.runner.TorchPolicyRunner)",
            "fp32": res,
        }
        quant: dict[str, Any] = {"method": "none"}
        final_dir, graph_prec = fp32_dir, dict.fromkeys(GRAPHS, "fp32")
        if precision != "fp32":
            stage(5, f"{precision}: transforming graphs and checking their gates")
            final_dir = work / precision
            final_dir.mkdir()
            backend = profile.engine("flow_head").backend
            quant, graph_prec = _transform(ck, opt, precision, backend, fp32_dir, final_dir)
            for name in GRAPHS:
                check_graph(final_dir / f"{name}.onnx")
            write_manifest(final_dir, model_cfg, precision, graph_prec, {})
            q_pol = BundlePolicy(final_dir, threads=opt.threads)
            q_fused = BundlePolicy(final_dir, threads=opt.threads, fused=True)
            qres = {
                "flow_head": parity.compare(torch_pol, q_pol, samples),
                "fused": parity.compare(torch_pol, q_fused, samples),
            }
            parity_rec[precision] = qres
            for g, r in qres.items():
                if r["cosine_min"] < parity.COSINE_MIN:
                    raise BundleError(
                        f"parity gate failed ({precision}): graph {g} min chunk cosine "
                        f"{r['cosine_min']:.4f} < {parity.COSINE_MIN} (max abs error {r['max_abs']:.3g}); "
                        "no bundle written"
                    )
            say(
                f"    {precision} min chunk cosine: prefix+flow_head {qres['flow_head']['cosine_min']:.5f}, "
                f"fused {qres['fused']['cosine_min']:.5f}"
            )
        else:
            stage(5, "fp32: no precision transform")
        if opt.episodes > 0:
            stage(
                6,
                f"closed loop: {opt.episodes} held-out episodes, fp32 bundle"
                + (f" and {precision} bundle" if precision != "fp32" else ""),
            )
            s32 = parity.closed_loop(fp32_pol, ck, opt.episodes)
            loop = {"episodes": opt.episodes, "fp32_success": s32}
            if precision != "fp32":
                sq = parity.closed_loop(q_pol, ck, opt.episodes)
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
                "weights_sha256": sha256_file(Path(opt.checkpoint) / "model.safetensors"),
            },
            "profile": {"name": profile.name, "sha256": sha256_file(profile.path), "data": profile.to_dict()},
            "quantization": quant,
            "parity": parity_rec,
            "attention": "onnxruntime com.microsoft.MultiHeadAttention" if fused_attn else "standard ops",
        }
        with atomic_folder(out, "bundle", replace=opt.force, meta={"precision": precision}) as tmp:
            for name in GRAPHS:
                shutil.copyfile(final_dir / f"{name}.onnx", tmp / f"{name}.onnx")
            engines: dict[str, Any] = {}
            if opt.engines:
                engines = _engines(profile, tmp, say)
            data = write_manifest(tmp, model_cfg, precision, graph_prec, extra)
            if engines:
                data["engines"] = engines
                (tmp / MANIFEST).write_text(json.dumps(data, indent=1) + "\n")
            data["name"] = out.name
            (tmp / MANIFEST).write_text(json.dumps(data, indent=1) + "\n")
            verify(tmp)
    say(f"wrote {out} ({precision}, {time.perf_counter() - t0:.1f} s)")
    return out


def _transform(
    ck: Any, opt: ExportOptions, precision: str, backend: str, src: Path, dst: Path
) -> tuple[dict[str, Any], dict[str, str]]:
    from export import precision as prec

    if precision == "fp16":
        kept = []
        for name in GRAPHS:
            kept = prec.to_fp16(src / f"{name}.onnx", dst / f"{name}.onnx")
        return {"method": "fp16", "io": "float32", "keep_fp32": kept}, dict.fromkeys(GRAPHS, "fp16")
    if backend == "onnxruntime":
        if opt.calibration is not None:
            load_calibration(opt.calibration, ck.spec)
        for name in GRAPHS:
            prec.to_dynamic_int8(src / f"{name}.onnx", dst / f"{name}.onnx")
        return (
            {"method": "dynamic-int8", "per_channel": True, "ops": list(prec.QUANT_OPS), "calibration": None},
            dict.fromkeys(GRAPHS, "int8"),
        )
    feeds, desc = _calibration_feeds(ck, opt, src)
    for name in GRAPHS:
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
        dict.fromkeys(GRAPHS, "int8"),
    )


def _engines(profile: Profile, folder: Path, say: Callable[[str], None]) -> dict[str, Any]:
    from export.tensorrt_build import TensorRTUnavailable, build_engines

    try:
        return build_engines(profile, folder, say)
    except TensorRTUnavailable as e:
        say(f"    --engines: {e}")
        return {}

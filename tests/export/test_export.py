"""`legato export` on tiny checkpoints: graphs, gates, the manifest, and every refusal."""

from __future__ import annotations

import errno
import json
import shutil

import numpy as np
import onnx
import pytest

from edge.bundle import load_manifest, verify
from edge.errors import BundleError, LegatoError, OutputError, ProfileError, UsageError


def test_bundle_layout_manifest_and_verify(tiny_bundle):
    m = verify(tiny_bundle)
    assert sorted(p.name for p in tiny_bundle.iterdir()) == [
        ".legato-output.json",
        "flow_head.onnx",
        "fused.onnx",
        "manifest.json",
        "prefix.onnx",
        "tokenizer.json",
    ]
    assert m.precision == "fp32" and m.spec.method == "legato" and m.spec.num_steps == 5
    d = m.data
    for key in (
        "adapter",
        "model",
        "source",
        "profile",
        "sampler",
        "graphs",
        "quantization",
        "parity",
        "files",
        "engines",
    ):
        assert key in d, key
    assert d["sampler"]["omega_schedule"] == "linear" and d["sampler"]["d_max"] == m.spec.d_max
    assert d["parity"]["fp32"]["flow_head"]["max_abs"] <= 1e-4
    assert d["profile"]["name"] == "x86-cpu" and d["engines"] == {}
    assert d["format_version"] == 2 and d["adapter"]["name"] == "legato"
    assert d["adapter"]["observation"]["cameras"] == [
        {"name": "top", "input": "image", "height": 48, "width": 64}
    ]
    want = m.adapter.expected_io()
    for name, g in m.graphs.items():
        ins, outs = g.io()
        assert set(ins) == set(want[name][0]) and set(outs) == set(want[name][1])
        for k, v in {**want[name][0], **want[name][1]}.items():
            assert v is None or v == {**ins, **outs}[k]
    assert set(m.files) == {"prefix.onnx", "flow_head.onnx", "fused.onnx", "tokenizer.json"}
    for mode in (p.stat().st_mode & 0o777 for p in tiny_bundle.iterdir()):
        assert mode == 0o644


def test_graphs_have_no_random_ops_and_pass_checker(tiny_bundle):
    for name in ("prefix", "flow_head", "fused"):
        model = onnx.load(str(tiny_bundle / f"{name}.onnx"))
        onnx.checker.check_model(model, full_check=True)
        ops = {n.op_type for n in model.graph.node}
        assert not ops & {
            "RandomNormal",
            "RandomNormalLike",
            "RandomUniform",
            "RandomUniformLike",
            "Multinomial",
        }
        assert model.opset_import[0].version == 17


def _feeds(tiny_bundle, name):
    m = load_manifest(tiny_bundle)
    rng = np.random.default_rng(0)
    out = {}
    for t in m.graphs[name].inputs:
        if t.dtype == "uint8":
            out[t.name] = rng.integers(0, 255, t.shape).astype(np.uint8)
        elif t.dtype == "int64":
            out[t.name] = rng.integers(1, 10, t.shape).astype(np.int64)
        elif t.name == "t":
            out[t.name] = np.full(t.shape, 0.4, np.float32)  # on the grid k / N
        else:
            out[t.name] = rng.standard_normal(t.shape).astype(np.float32)
    return out


@pytest.mark.parametrize("name", ["prefix", "flow_head", "fused"])
def test_reference_evaluator_onnxruntime_and_torch_agree(tiny_checkpoints, tiny_standard_bundle, name):
    import onnxruntime as ort
    import torch
    from onnx.reference import ReferenceEvaluator

    from legato.adapters.reference import graph_names, section
    from legato.adapters.reference_graphs import modules
    from legato.checkpoint import load

    tiny_bundle = tiny_standard_bundle
    assert load_manifest(tiny_bundle).data["attention"] == "standard ops"
    feeds = _feeds(tiny_bundle, name)
    path = str(tiny_bundle / f"{name}.onnx")
    ref = ReferenceEvaluator(path).run(None, feeds)
    rt = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)
    ck = load(tiny_checkpoints["legato"])
    with torch.no_grad():
        th = modules(ck.model)[name](*(torch.from_numpy(feeds[k]) for k in graph_names(section(ck))[name][0]))
    th = th if isinstance(th, tuple) else (th,)
    for r, o, t in zip(ref, rt, th, strict=True):
        np.testing.assert_allclose(o, r, atol=2e-5, rtol=1e-4)
        np.testing.assert_allclose(o, t.numpy(), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("velocity_form", ["factored", "direct", "corrective"])
def test_rewritten_graphs_equal_the_original_model(tiny_checkpoints, velocity_form):
    """adaLN hoist + standard-op attention: the head's velocity is the original FlowHead's, for
    every velocity form (the corrective head's two outputs per token included)."""
    from dataclasses import replace

    import torch

    from legato.adapters.reference_graphs import FlowHeadGraph, PrefixGraph
    from legato.checkpoint import load
    from legato.model import Policy

    trained = load(tiny_checkpoints["legato"]).model
    torch.manual_seed(0)
    pol = Policy(replace(trained.cfg, velocity_form=velocity_form)).eval()
    cfg = pol.cfg
    g = torch.Generator().manual_seed(1)
    image = torch.randint(0, 255, (1, *cfg.image_hw, 3), dtype=torch.uint8, generator=g)
    tokens = torch.randint(1, cfg.vocab_size, (1, cfg.max_tokens), generator=g)
    state, y = (
        torch.randn(1, cfg.state_dim, generator=g),
        torch.randn(1, cfg.horizon, cfg.action_dim, generator=g),
    )
    omega = torch.rand(1, cfg.horizon, generator=g)
    with torch.no_grad():
        kv, mod, cond = PrefixGraph(pol)(image, tokens, state)
        for k in range(cfg.num_steps + 1):
            t = torch.full((1, cfg.horizon), k / cfg.num_steps)
            t[0, :2] = 1.0  # per-token time (training-time RTC's clean prefix)
            want = pol.head(y, t, omega, state, pol.prefix(image, tokens, state))
            got = FlowHeadGraph(pol)(y, t, omega, kv, mod, cond)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_bundle_runs_closed_loop_like_the_checkpoint(tiny_checkpoints, tiny_bundle):
    """The closed-loop parity gate's machinery: same episodes, same noise, same commands."""
    from edge.bundle_policy import BundlePolicy
    from edge.policy import ChunkRequest
    from legato.checkpoint import load
    from legato.rollout import rollout
    from legato.runner import TorchPolicyRunner
    from sim.episodes import sample_episodes

    ck = load(tiny_checkpoints["legato"])
    ep = sample_episodes(ck.task, 1000, 3)
    req = ChunkRequest(d=2, s=8, r=2)
    runs = [
        rollout(p, "legato", ck.task, ep.scenes, ep.template, req, seed=1000, max_steps=40)
        for p in (
            TorchPolicyRunner(ck, threads=1),
            BundlePolicy(tiny_bundle),
            BundlePolicy(tiny_bundle, fused=True),
        )
    ]
    for r in runs[1:]:
        np.testing.assert_allclose(r.commanded, runs[0].commanded, atol=1e-4)


@pytest.mark.parametrize(
    "precision,profile,method",
    [("int8", "x86-cpu", "dynamic-int8"), ("fp16", "x86-cuda", "fp16"), ("int8", "x86-cuda", "qdq-int8")],
)
def test_reduced_precisions_pass_their_gates(
    tiny_checkpoints, tmp_path, precision, profile, method, export_tiny
):
    out = export_tiny(tiny_checkpoints["legato"], tmp_path / "b", precision, profile)
    m = verify(out)
    assert m.precision == precision and m.data["quantization"]["method"] == method
    par = m.data["parity"]
    assert par[precision]["flow_head"]["cosine_min"] >= 0.99 and "success" in par["closed_loop"]
    if method == "qdq-int8":
        model = onnx.load(str(out / "flow_head.onnx"))
        assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in model.graph.node}
        assert m.data["quantization"]["calibration"]["samples"] == 4
    if precision == "fp16":
        model = onnx.load(str(out / "flow_head.onnx"))
        assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
        assert all(t.dtype == "float32" for t in m.graphs["flow_head"].inputs)


# --- refusals: one line, nothing written -------------------------------------------------------


def _refused(export_tiny, tmp_path, exc, match, *args, **kw):
    out = tmp_path / "bundle"
    with pytest.raises(exc, match=match) as e:
        export_tiny(*args, out=out, **kw)
    assert "\n" not in str(e.value)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]  # no temporaries left
    return str(e.value)


def test_missing_and_corrupt_checkpoint(tmp_path, tiny_checkpoints, export_tiny):
    _refused(export_tiny, tmp_path, LegatoError, "checkpoint not found", tmp_path / "nope")
    bad = tmp_path / "corrupt"
    shutil.copytree(tiny_checkpoints["legato"], bad)
    (bad / "model.safetensors").write_bytes(b"\x00garbage")
    _refused(export_tiny, tmp_path, LegatoError, "corrupt", bad)


def test_unknown_profile(tmp_path, tiny_checkpoints, export_tiny):
    _refused(
        export_tiny,
        tmp_path,
        ProfileError,
        "unknown profile 'orin-nanoo'",
        tiny_checkpoints["legato"],
        profile="orin-nanoo",
    )


def test_precision_the_target_cannot_run(tmp_path, tiny_checkpoints, export_tiny):
    msg = _refused(
        export_tiny, tmp_path, UsageError, "--precision fp16", tiny_checkpoints["legato"], precision="fp16"
    )
    assert "allowed: fp32, int8" in msg


def test_calibration_data_that_does_not_match(tmp_path, tiny_checkpoints, export_tiny):
    calib = tmp_path / "calib.npz"
    np.savez(
        calib,
        image=np.zeros((2, 32, 32, 3), np.uint8),
        tokens=np.ones((2, 6), np.int64),
        state=np.zeros((2, 6), np.float32),
    )
    _refused(
        export_tiny,
        tmp_path,
        UsageError,
        "image is uint8\\[2, 32, 32, 3\\]",
        tiny_checkpoints["legato"],
        precision="int8",
        profile="x86-cuda",
        calibration=calib,
    )
    np.savez(calib, image=np.zeros((2, 48, 64, 3), np.uint8), tokens=np.ones((2, 6), np.int64))
    _refused(
        export_tiny,
        tmp_path,
        UsageError,
        "lacks array 'state'",
        tiny_checkpoints["legato"],
        precision="int8",
        profile="x86-cuda",
        calibration=calib,
    )


def test_parity_failure_names_the_graph(tmp_path, tiny_checkpoints, export_tiny, monkeypatch):
    from export import parity

    monkeypatch.setattr(parity, "FP32_MAX_ABS", 1e-12)
    msg = _refused(export_tiny, tmp_path, BundleError, "parity gate failed", tiny_checkpoints["legato"])
    assert "graph flow_head" in msg and "no bundle written" in msg


def test_unwritable_output(tmp_path, tiny_checkpoints, export_tiny):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        export_tiny(tiny_checkpoints["legato"], tmp_path / "file" / "bundle")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not a bundle"):
        export_tiny(tiny_checkpoints["legato"], foreign, force=True)
    assert (foreign / "notes.txt").read_text() == "mine"
    with pytest.raises(OutputError, match="/proc is not writable"):  # refused at once, not after the work
        export_tiny(tiny_checkpoints["legato"], "/proc/legato-test/bundle")


def test_disk_full_mid_write_leaves_nothing(tmp_path, tiny_checkpoints, export_tiny, monkeypatch):
    import export.onnx_files as onnx_files  # every graph (and its external data) is copied there

    real, calls = shutil.copyfile, []

    def copy_then_fill(src, dst, *a, **kw):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(onnx_files.shutil, "copyfile", copy_then_fill)
    _refused(export_tiny, tmp_path, OutputError, "No space left on device", tiny_checkpoints["legato"])


def test_existing_bundle_needs_force(tmp_path, tiny_bundle, export_tiny):
    out = tmp_path / "copy"
    shutil.copytree(tiny_bundle, out)
    ck = load_manifest(out).data["source"]["checkpoint"]
    with pytest.raises(OutputError, match="--force"):
        export_tiny(ck, out, episodes=0)


# --- verify: corruption is found --------------------------------------------------------------


def test_verify_finds_corruption_and_inconsistency(tmp_path, tiny_bundle):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    data = bytearray((b / "flow_head.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (b / "flow_head.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="flow_head.onnx is corrupt"):
        verify(b)
    shutil.rmtree(b)
    shutil.copytree(tiny_bundle, b)
    (b / "prefix.onnx").unlink()
    with pytest.raises(BundleError, match="prefix.onnx is missing"):
        verify(b)
    shutil.rmtree(b)
    shutil.copytree(tiny_bundle, b)
    m = json.loads((b / "manifest.json").read_text())
    m["adapter"]["horizon"] = 12
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="adapter"):
        verify(b)
    with pytest.raises(BundleError, match="not a bundle"):
        verify(tmp_path)


@pytest.mark.parametrize("name", ["prefix", "flow_head", "fused"])
def test_cpu_fused_attention_matches_standard_ops(tiny_bundle, tiny_standard_bundle, name):
    """The x86-cpu bundle uses onnxruntime's MultiHeadAttention; it computes what the standard ops do."""
    import onnxruntime as ort

    ops = {n.op_type for n in onnx.load(str(tiny_bundle / f"{name}.onnx")).graph.node}
    assert "MultiHeadAttention" in ops and "Softmax" not in ops
    recorded = load_manifest(tiny_bundle).data
    assert "MultiHeadAttention" in recorded["onnxruntime_ops"][name]  # counted in the files
    assert "FastGelu" not in recorded["onnxruntime_ops"][name]  # the reference model's GELU is erf
    assert recorded["attention"] == "onnxruntime com.microsoft.MultiHeadAttention"
    feeds = _feeds(tiny_bundle, name)
    a, b = (
        ort.InferenceSession(str(d / f"{name}.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)
        for d in (tiny_bundle, tiny_standard_bundle)
    )
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, atol=2e-5, rtol=1e-4)


def test_verify_checks_engine_keys_and_plans(tmp_path, tiny_bundle):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    m = json.loads((b / "manifest.json").read_text())
    sha = m["graphs"]["flow_head"]["sha256"]
    key = {
        "tensorrt": "10.3.0",
        "cuda": "12.6",
        "gpu": "Orin",
        "compute_capability": "8.7",
        "l4t": "36.4.3",
        "jetpack": "6.1/6.2",
        "onnx_sha256": sha,
    }
    (b / "engines").mkdir()
    (b / "engines/flow_head.plan").write_bytes(b"PLAN")
    import hashlib

    m["engines"] = {
        "flow_head": {
            "file": "engines/flow_head.plan",
            "sha256": hashlib.sha256(b"PLAN").hexdigest(),
            "key": key,
        }
    }
    (b / "manifest.json").write_text(json.dumps(m))
    assert verify(b).engines["flow_head"]["key"]["gpu"] == "Orin"
    (b / "engines/flow_head.plan").write_bytes(b"PLAN2")
    with pytest.raises(BundleError, match="flow_head plan engines/flow_head.plan is corrupt"):
        verify(b)
    m["engines"]["flow_head"]["key"] = {**key, "onnx_sha256": "0" * 64}
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="built from another ONNX"):
        verify(b)
    del m["engines"]["flow_head"]["key"]["cuda"]
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="key lacks cuda"):
        verify(b)


def test_cli_export_progress_engines_line_and_one_line_errors(
    tmp_path, tiny_checkpoints, capsys, monkeypatch
):
    import sys

    from legato.cli import main

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # no TensorRT on this machine
    out = tmp_path / "b"
    rc = main(
        [
            "export",
            "--checkpoint",
            str(tiny_checkpoints["legato"]),
            "--profile",
            "x86-cuda",
            "--precision",
            "fp32",
            "--out",
            str(out),
            "--episodes",
            "0",
            "--parity-samples",
            "2",
            "--engines",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0 and verify(out).data["engines"] == {}
    assert [ln[:4] for ln in err.splitlines() if ln.startswith("[")] == [f"[{i}/7" for i in range(1, 8)]
    assert "--engines: TensorRT is not installed here; engines are built on the device at flash time" in err
    rc = main(
        [
            "export",
            "--checkpoint",
            str(tiny_checkpoints["legato"]),
            "--profile",
            "jetson-orin-nano-8gb",
            "--out",
            str(tmp_path / "c"),
            "--precision",
            "int8",
            "--episodes",
            "0",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith(
        "legato: error: --episodes 0: the int8 gate needs closed-loop episodes"
    )
    assert not (tmp_path / "c").exists()


# --- the gates run the robot's path; calibration sees what the robot's sampler makes -----------


def test_export_gates_run_the_robots_denoiser(tiny_checkpoints, tmp_path, export_tiny, monkeypatch):
    """Parity and closed loop run the bundle through edge.denoiser.denoiser_for (what `legato run`
    builds), stepwise and fused, not a second chunk assembly."""
    import edge.bundle_policy

    made = []
    real = edge.bundle_policy.denoiser_for

    def spy(adapter, engines, mode=None, source="the bundle"):
        den = real(adapter, engines, mode=mode, source=source)
        made.append((tuple(sorted(engines)), den))
        return den

    monkeypatch.setattr(edge.bundle_policy, "denoiser_for", spy)
    out = export_tiny(tiny_checkpoints["legato"], tmp_path / "b", episodes=2)
    kinds = {k for k, _ in made}
    assert ("flow_head", "prefix") in kinds and ("flow_head", "fused", "prefix") in kinds
    stepwise = sum(d.chunks for k, d in made if "fused" not in k)
    fused = sum(d.chunks for k, d in made if "fused" in k)
    assert fused >= 4 and stepwise >= 4 + 2 * 4  # parity samples + the closed loop's chunks
    assert "ChunkDenoiser" in load_manifest(out).data["parity"]["closed_loop"]["runs"]


def test_int8_calibration_feeds_are_the_deployed_samplers_continued_chunks(
    tiny_checkpoints, tiny_standard_bundle
):
    """The quantizer is calibrated on what the robot's sampler feeds the graphs: continued
    chunks with omega > 0 and a real (nonzero) reference, as well as first chunks."""
    from export.pipeline import ExportOptions, _calibration_feeds
    from legato import adapters

    lp = adapters.load(tiny_checkpoints["legato"])
    opt = ExportOptions(checkpoint=tiny_checkpoints["legato"], profile="x86-cuda", out="unused",
                        calibration_samples=4)  # fmt: skip
    feeds, desc = _calibration_feeds(lp, opt, tiny_standard_bundle)
    assert desc["samples"] == 4 and desc["continued_chunks"] >= 4 and desc["omega_max"] == 1.0
    head = feeds["flow_head"]
    assert len(head) == 5 * desc["chunks"] // 2  # N steps per stepwise chunk (half the chunks are fused)
    assert max(float(f["omega"].max()) for f in head) == 1.0
    assert any(((f["omega"] > 0) & (f["omega"] < 1)).any() for f in head)  # the ramp
    fused = feeds["fused"]
    assert any(float(np.abs(f["a_ref"]).max()) > 0 and float(f["omega"].max()) > 0 for f in fused)
    assert any(float(f["omega"].max()) == 0 for f in fused)  # first chunks too
    for f in head:  # every step's time on the grid k / N the sampler uses
        np.testing.assert_allclose(f["t"] * 5, np.round(f["t"] * 5), atol=1e-6)


def test_old_bundle_format_is_refused_with_the_fix(tmp_path, tiny_bundle):
    b = tmp_path / "old"
    shutil.copytree(tiny_bundle, b)
    m = json.loads((b / "manifest.json").read_text())
    m["format_version"] = 1
    del m["adapter"]
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="format_version 1 is not supported .* older bundle: re-export it"):
        verify(b)


def test_cli_attention_flag_reaches_the_export(tmp_path, tiny_checkpoints, capsys):
    """--attention is documented in docs/bundle.md: the CLI takes it and the bundle records it."""
    from legato.cli import main

    out = tmp_path / "std"
    argv = ["export", "--checkpoint", str(tiny_checkpoints["legato"]), "--out", str(out), "--episodes", "0",
            "--parity-samples", "2", "--attention", "standard"]  # fmt: skip
    assert main(argv) == 0
    assert load_manifest(out).data["attention"] == "standard ops"
    assert load_manifest(out).data["onnxruntime_ops"] == {}
    ops = {n.op_type for n in onnx.load(str(out / "flow_head.onnx")).graph.node}
    assert "MultiHeadAttention" not in ops and "Softmax" in ops
    with pytest.raises(SystemExit):
        main([*argv[:-1], "fused"])
    assert "--attention: invalid choice: 'fused'" in capsys.readouterr().err

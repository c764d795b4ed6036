"""`legato bundle verify` (edge.bundle.verify): the manifest's structure and types, the sampler
against the model, nothing unlisted, nothing outside, and one forward pass of every graph.
Each case was a finding of issue 19 (part 5): it verified, flashed or ran before."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edge.bundle import verify
from edge.errors import BundleError


def _copy(tiny_bundle, tmp_path, name="b"):
    b = tmp_path / name
    shutil.copytree(tiny_bundle, b)
    return b


def _edit(b, fn):
    m = json.loads((b / "manifest.json").read_text())
    fn(m)
    (b / "manifest.json").write_text(json.dumps(m))


def _rehash(b):
    """Make manifest.json agree with the files again (what a careless or malicious edit would do)."""

    def fn(m):
        for rel in m["files"]:
            m["files"][rel] = hashlib.sha256((b / rel).read_bytes()).hexdigest()
        for g in m["graphs"].values():
            g["sha256"] = m["files"][g["file"]]

    _edit(b, fn)


def test_a_files_list_is_one_line_not_a_traceback(tiny_bundle, tmp_path):
    b = _copy(tiny_bundle, tmp_path)
    _edit(b, lambda m: m.__setitem__("files", list(m["files"])))
    with pytest.raises(BundleError, match="'files' must be an object, got list"):
        verify(b)


@pytest.mark.parametrize(
    "path,value,match",
    [
        (("adapter", "horizon"), "16", r"adapter.horizon must be an integer, got str '16'"),
        (("adapter", "num_steps"), 5.0, r"adapter.num_steps must be an integer, got float 5.0"),
        (("adapter", "capabilities", "omega"), "yes", r"capabilities.omega must be true or false"),
        (("adapter", "observation", "cameras"), {"top": 1}, r"cameras must be a list"),
        (("graphs", "flow_head", "opset"), "17", r"graphs.flow_head.opset must be an integer"),
        (("precision",), 32, r"'precision' must be a string"),
    ],
)
def test_wrong_types_are_refused_not_coerced(tiny_bundle, tmp_path, path, value, match):
    b = _copy(tiny_bundle, tmp_path)

    def fn(m):
        d = m
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value

    _edit(b, fn)
    with pytest.raises(BundleError, match=match) as e:
        verify(b)
    assert "\n" not in str(e.value)


def test_the_sampler_section_must_be_what_the_model_was_trained_with(tiny_bundle, tmp_path, capsys):
    """N = 7 for a model trained with N = 5: refused by verify and by `legato run` (before the
    rig is built)."""
    from legato.cli import main

    b = _copy(tiny_bundle, tmp_path)
    _edit(b, lambda m: m["sampler"].__setitem__("num_steps", 7))
    with pytest.raises(
        BundleError, match=r"sampler.num_steps = 7, but the model was trained with num_steps = 5"
    ):
        verify(b)
    assert main(["run", "--bundle", str(b), "--sim", "--episodes", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("legato: error: ") and "sampler.num_steps = 7" in err[-1]
    b2 = _copy(tiny_bundle, tmp_path, "b2")
    _edit(b2, lambda m: m["sampler"].__setitem__("omega_schedule", "cosine"))
    with pytest.raises(BundleError, match="sampler.omega_schedule = 'cosine'"):
        verify(b2)


def test_files_the_manifest_does_not_list_are_refused(tiny_bundle, tmp_path):
    b = _copy(tiny_bundle, tmp_path)
    (b / "extra.onnx").write_bytes(b"not listed")
    with pytest.raises(BundleError, match="extra.onnx is not listed in the manifest's files"):
        verify(b)
    (b / "extra.onnx").unlink()
    (b / "engines").mkdir()
    (b / "engines/flow_head.plan").write_bytes(b"PLAN")  # an engine built on the device: named by engines
    with pytest.raises(BundleError, match="engines/flow_head.plan is not listed"):
        verify(b, load_graphs=False)
    key = {k: "x" for k in ("tensorrt", "cuda", "gpu", "compute_capability", "l4t", "jetpack")}

    def add_engine(m):
        key["onnx_sha256"] = m["graphs"]["flow_head"]["sha256"]
        m["engines"] = {"flow_head": {"file": "engines/flow_head.plan", "key": key}}

    _edit(b, add_engine)
    verify(b, load_graphs=False)
    (b / "profile.toml").write_text("# flashed")  # only a flashed release carries its profile
    with pytest.raises(BundleError, match="profile.toml is not listed"):
        verify(b, load_graphs=False)
    marker = json.loads((b / ".legato-output.json").read_text())
    (b / ".legato-output.json").write_text(json.dumps({**marker, "kind": "release"}))
    verify(b, load_graphs=False)


def test_a_manifest_symlinked_outside_is_refused_like_a_graph(tiny_bundle, tmp_path):
    b = _copy(tiny_bundle, tmp_path)
    outside = tmp_path / "elsewhere.json"
    shutil.move(b / "manifest.json", outside)
    (b / "manifest.json").symlink_to(outside)
    with pytest.raises(BundleError, match="manifest.json points outside the bundle"):
        verify(b)
    b2 = _copy(tiny_bundle, tmp_path, "b2")
    shutil.move(b2 / "flow_head.onnx", tmp_path / "head.onnx")
    (b2 / "flow_head.onnx").symlink_to(tmp_path / "head.onnx")
    with pytest.raises(BundleError, match="'flow_head.onnx' points outside the bundle"):
        verify(b2)


def _poison(b, graph, value):
    model = onnx.load(str(b / f"{graph}.onnx"))
    for i, t in enumerate(model.graph.initializer):
        w = numpy_helper.to_array(t)
        if w.dtype == np.float32 and w.size > 8:
            w = w.copy()
            w.flat[3] = value
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(w, t.name))
            break
    onnx.save(model, str(b / f"{graph}.onnx"))
    _rehash(b)


@pytest.mark.parametrize("graph,value", [("flow_head", np.nan), ("prefix", np.inf), ("fused", np.nan)])
def test_nan_or_inf_weights_are_refused_by_verify_flash_and_run(tiny_bundle, tmp_path, capsys, graph, value):
    """Before: such a bundle verified and flashed, and `legato run` held on every tick and exited 0."""
    from legato.cli import main

    b = _copy(tiny_bundle, tmp_path)
    _poison(b, graph, value)
    verify(b, load_graphs=False)  # every hash agrees: only running the graphs finds it
    with pytest.raises(BundleError, match=f"graph {graph} output .* is not finite on a fixed input"):
        verify(b)
    target = tmp_path / "flashed"
    assert main(["flash", "--bundle", str(b), "--profile", "x86-cpu", "--target", str(target)]) == 2
    assert not target.exists()
    assert main(["run", "--bundle", str(b), "--sim", "--episodes", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "is not finite on a fixed input" in err[-1] and err[-1].startswith("legato: error:")


@pytest.mark.parametrize(
    "checkpoint, bundle",
    [("legato", "legato-x86-cpu"), ("smolvla-reduced-legato", "smolvla-reduced-legato-x86-cpu")],
)
def test_the_committed_bundle_is_the_committed_checkpoints_export(checkpoint, bundle):
    """Not a re-read of the recorded numbers: verify the committed bundle fully (hashes, graphs,
    a forward pass) and recompute its parity against its checkpoint in torch on held-out samples
    (the reference model, and the reduced SmolVLA trained with Legato on the simulator)."""
    pytest.importorskip("torch")
    if checkpoint.startswith("smolvla"):
        pytest.importorskip("transformers", reason="the vla extra (transformers) is not installed")
    from pathlib import Path

    from edge.bundle_policy import BundlePolicy
    from export import parity
    from legato import adapters

    root = Path(__file__).resolve().parents[2]
    m = verify(root / "models" / bundle)
    lp = adapters.load(root / "models" / checkpoint)
    assert m.adapter.to_dict() == lp.spec.to_dict()  # the same declaration as exporting it now
    samples = lp.samples(3)
    for fused in (False, True)[: 1 + ("fused" in m.graphs)]:  # LeRobot bundles: stepwise only
        res = parity.compare(lp.reference_policy(threads=1), BundlePolicy(m, fused=fused), samples)
        assert res["max_abs"] <= parity.FP32_MAX_ABS, res

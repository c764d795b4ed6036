"""`legato replay FILE --bundle B`: the same bundle on the same backend reproduces every recorded
chunk bit for bit; through the int8 bundle of the same checkpoint the reported divergence is what
`legato export`'s int8 gate measured."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge.loop import CHUNK_BASE_COLS
from edge.recorder import Recorder, RecordOptions
from edge.recording import read_recording
from legato.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_the_same_bundle_replays_a_recorded_run_bit_for_bit(recorded_run, bundle, tmp_path, capsys):
    path, s = recorded_run
    out = tmp_path / "rep"
    assert main(["replay", str(path), "--bundle", str(bundle), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "identical: every replayed chunk equals the recorded one, bit for bit" in text
    rep = json.loads((out / "replay.json").read_text())
    assert rep["identical"] and rep["chunks"] == s["chunks"] and rep["max_abs_rad"] == 0.0
    assert rep["first_divergence"] is None and rep["cosine_min"] == pytest.approx(1.0)
    assert sum(r["continued"] for r in rep["per_chunk"]) >= s["chunks"] - 5  # continuation replayed too
    assert (out / "replay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the stepwise graphs are another implementation of the fused one: they part, and it says where
    assert (
        main(["replay", str(path), "--bundle", str(bundle), "--graph", "stepwise", "--tolerance", "1e-9"])
        == 0
    )
    text = capsys.readouterr().out
    assert "first divergence over 1e-09 rad: chunk #" in text and "joint" in text


def test_a_bundle_that_does_not_fit_the_recording_is_one_line(recorded_run, tmp_path, capsys):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(ROOT / "models" / "legato-x86-cpu", other)
    man = json.loads((other / "manifest.json").read_text())
    rec = read_recording(recorded_run[0])
    rec.meta["spec"]["action_dim"] = 4  # as if recorded on another arm
    from edge.errors import UsageError
    from edge.replay import load_for_replay

    with pytest.raises(UsageError, match="action_dim = 3, the recording .* was made with 4"):
        load_for_replay(rec, str(other), None, None, None)
    assert man["format"] == "legato-bundle"


def _gate_recording(path: Path, bundle: Path) -> int:
    """A recording of exactly what export's parity gate fed its samplers: its held-out
    observations (torch rollouts, seed 1000), the references it continued, its requests and its
    noise, with the chunks the fp32 bundle's denoiser (the robot's sampler) made from them."""
    from edge.assembly import load
    from export import parity
    from legato import adapters

    lp = adapters.load(ROOT / "models" / "legato", threads=1)
    samples = lp.samples(16)  # what the export drew: the held-out seed's torch rollouts
    _, _, den = load(str(bundle), "x86-cpu", fused=False)  # the gate's "flow_head" row: stepwise
    rng = np.random.default_rng(0)  # compare()'s noise, drawn in the same order
    meta = {
        "format": "legato-recording",
        "spec": {"horizon": 16, "action_dim": 3},
        "loop": {"rate_hz": 50.0},
        "profile": {"name": "x86-cpu"},
        "denoiser": {"mode": den.mode, "fused": False},
    }
    rec = Recorder(RecordOptions(str(path)), meta)
    names = den.stage_names
    for i, smp in enumerate(samples):
        _, req = parity.request(lp.spec.spec, i)
        eps = rng.standard_normal(den.noise_shape).astype(np.float32)
        o = smp.obs
        den.set_observation(o.image[0], o.tokens[0], o.state[0])
        tail = None if smp.prev is None else smp.prev[0, req.s :]
        plan = den.denoise(eps, tail, req).copy()
        row = np.zeros(len(CHUNK_BASE_COLS) + len(names))
        row[CHUNK_BASE_COLS.index("capture")] = row[CHUNK_BASE_COLS.index("ready")] = 1.0 + i
        frame = SimpleNamespace(image=o.image[0], tokens=o.tokens[0], state=o.state[0])
        rec.on_chunk(i, frame, req, den, tail, eps, plan, row, names)
    stats = rec.close()
    assert stats["record.dropped_chunks"] == 0
    return len(samples)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="the gate's samples need torch")
def test_int8_divergence_is_what_the_export_gate_measured(
    int8_bundle, bundle, recorded_run, tmp_path, capsys
):
    gate = json.loads((int8_bundle / "manifest.json").read_text())["parity"]["int8"]["flow_head"]
    n = _gate_recording(tmp_path / "gate.mcap", bundle)
    out = tmp_path / "rep"
    args = ["replay", str(tmp_path / "gate.mcap"), "--bundle", str(int8_bundle), "--graph", "stepwise"]
    assert main([*args, "--out", str(out)]) == 0
    rep = json.loads((out / "replay.json").read_text())
    # the gate compared int8 with torch, the replay compares int8 with the fp32 bundle (1.5e-6 apart)
    assert rep["chunks"] == n == gate["chunks"]
    assert rep["max_abs"] == pytest.approx(gate["max_abs"], abs=1e-4)
    assert rep["cosine_min"] == pytest.approx(gate["cosine_min"], abs=1e-6)
    assert rep["rms_mean"] == pytest.approx(gate["rms_mean"], rel=1e-3)
    # and a real recorded run through the int8 bundle diverges by the same order, not more
    capsys.readouterr()
    assert (
        main(["replay", str(recorded_run[0]), "--bundle", str(int8_bundle), "--out", str(tmp_path / "r8")])
        == 0
    )
    run = json.loads((tmp_path / "r8" / "replay.json").read_text())
    assert not run["identical"] and run["first_divergence"] is not None
    assert 0 < run["max_abs"] < 3 * gate["max_abs"] and run["cosine_min"] > 0.99

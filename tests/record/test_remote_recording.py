"""`legato run --remote URL --sim --record F`: a run whose policy is served by `legato serve` records
as a local one does (no local manifest: its hash null; no local graphs: fused null), and replays
through the served bundle here bit for bit (the robot sends its own noise, so the server and a
replay compute the same chunks)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "remote"))

from remote_helpers import BUNDLE, start_serve, stop  # noqa: E402

from edge.recording import read_recording  # noqa: E402
from legato.cli import main  # noqa: E402


def test_a_remote_run_records_and_replays_through_the_served_bundle(tmp_path, capsys):
    path, summ = tmp_path / "remote.mcap", tmp_path / "s.json"
    proc, port = start_serve("--quiet")
    try:
        args = ["run", "--remote", f"ws://127.0.0.1:{port}", "--sim", "--episodes", "1", "--quiet",
                "--record", str(path), "--summary-json", str(summ)]  # fmt: skip
        assert main(args) == 0, capsys.readouterr().err
    finally:
        stop(proc)
    s = json.loads(summ.read_text())
    assert s["record.chunks"] == s["chunks"] > 3 and s["record.stopped"] is None and s["record.errors"] == 0
    rec = read_recording(path)
    assert rec.complete and len(rec.chunks) == s["chunks"]
    assert rec.meta["bundle"]["manifest_sha256"] is None and rec.meta["denoiser"]["remote"] is True
    assert rec.meta["denoiser"]["fused"] is None  # the server chose its graph
    assert rec.meta["cameras"] == [{"name": "top", "height": 48, "width": 64}]  # named by the server
    assert rec.chunks[0].frame().shape == (48, 64, 3)
    capsys.readouterr()
    assert main(["replay", str(path), "--bundle", str(BUNDLE), "--out", str(tmp_path / "rep")]) == 0
    rep = json.loads((tmp_path / "rep" / "replay.json").read_text())
    assert rep["identical"] and rep["chunks"] == s["chunks"]

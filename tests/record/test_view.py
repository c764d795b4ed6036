"""`legato view FILE`: the picture and page of a recording (frames, plans over joint traces, chunk
boundaries, latency and delay, underruns and faults marked), and a Rerun recording with the extra."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from edge.loop import UNDERRUN
from edge.recording import read_recording
from edge.view import headline, plan_times, underrun_spans
from legato.cli import main


@pytest.fixture(scope="module")
def late_run(bundle, tmp_path_factory):
    """A recorded run whose chunks arrive too late (250 ms latency against 160 ms of slack):
    underruns, as a slow device would give."""
    d = tmp_path_factory.mktemp("late")
    args = [
        "run",
        "--bundle",
        str(bundle),
        "--sim",
        "--episodes",
        "1",
        "--quiet",
        "--latency-ms",
        "250",
        "--record",
        str(d / "late.mcap"),
        "--summary-json",
        str(d / "s.json"),
    ]
    assert main(args) == 0
    return d / "late.mcap", json.loads((d / "s.json").read_text())


def test_view_writes_a_picture_and_a_page_with_every_frame(recorded_run, tmp_path, capsys):
    path, s = recorded_run
    out = tmp_path / "view"
    assert main(["view", str(path), "--out", str(out), "--frames", "6"]) == 0
    assert "legato view: wrote" in capsys.readouterr().err
    assert (out / "view.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "view.html").read_text()
    assert page.count("<figure>") == s["chunks"]  # every frame the policy consumed
    assert f"{s['chunks']} chunks, {s['ticks']} ticks, {s['underruns']} underrun ticks" in page
    assert "manifest_sha256" in page and "&quot;episodes&quot;: 5" in page
    assert main(["view", str(path), "--out", str(out)]) == 2  # an existing view needs --force
    assert "--force" in capsys.readouterr().err


def test_underruns_are_marked_where_they_happened(late_run, tmp_path):
    path, s = late_run
    assert s["underruns"] > 0
    rec = read_recording(path)
    t0 = min(rec.ticks[0, 2], rec.chunks[0].capture_time)
    spans = underrun_spans(rec, t0)
    t = rec.ticks[:, 2] - t0
    under = rec.ticks[:, 4] == UNDERRUN
    inside = np.zeros(len(t), bool)
    for a, b in spans:
        inside |= (t >= a) & (t < b)
    assert under.sum() == s["underruns"] and np.array_equal(inside, under)  # shaded exactly there
    assert f"{s['underruns']} underrun ticks" in headline(rec)
    # each plan is drawn from where it took over: its first executed action is its swap index,
    # sent after the chunk was ready (one episode: chunk ids are unique)
    c = rec.chunks[3]
    mine = rec.ticks[(rec.ticks[:, 5] == c.chunk) & (rec.ticks[:, 4] == 0)]
    assert int(mine[0, 6]) == int(c.msg["start_index"]) and mine[0, 2] >= c.ready_time
    tp = plan_times(c, 0.0, 1 / 50.0)
    assert tp[int(c.msg["start_index"])] > c.ready_time
    assert main(["view", str(path), "--out", str(tmp_path / "v")]) == 0


def test_rerun_recording_with_the_extra(recorded_run, tmp_path):
    pytest.importorskip("rerun", reason="rerun-sdk (the rerun extra) is not installed")
    path, s = recorded_run
    out = tmp_path / "view"
    assert main(["view", str(path), "--out", str(out), "--rerun"]) == 0
    rrd = out / "view.rrd"
    assert rrd.read_bytes()[:4] == b"RRF2"
    cli = shutil.which("rerun")
    if cli is None:
        return
    text = subprocess.run([cli, "rrd", "print", str(rrd)], capture_output=True, text=True, timeout=120).stdout
    rows = {}
    for line in text.splitlines():
        if line.startswith("Chunk(") and " - /" in line:
            n = int(line.split(" with ")[1].split(" rows")[0])
            entity = line.split(" - /")[1].split(" - ")[0]
            rows[entity] = rows.get(entity, 0) + n
    assert rows["camera"] == s["chunks"] and rows["setpoint/joint0"] == s["ticks"]
    assert rows["plan/joint2"] == s["chunks"]


def test_rerun_without_the_extra_names_it(recorded_run, tmp_path, capsys, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_rerun(name, *a, **k):
        if name == "rerun" or name.startswith("rerun."):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_rerun)
    assert main(["view", str(recorded_run[0]), "--out", str(tmp_path / "v"), "--rerun"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'legato-edge[rerun]'" in err and err.count("\n") == 1
    assert not (tmp_path / "v").exists()
    assert np.isfinite(read_recording(recorded_run[0]).chunks[0].plan).all()

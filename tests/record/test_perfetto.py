"""trace.json of `legato profile` loads in Perfetto's real trace processor (its WebAssembly build,
run headless by Node: perfetto_wasm.py), and the slices it finds per thread are the ticks and
chunks the run recorded."""

from __future__ import annotations

import json

import pytest
from perfetto_wasm import WasmTraceProcessor, unavailable

from legato.cli import main

PER_THREAD = """
select t.name as thread, s.depth as depth, count(*) as n
from slice s join thread_track tt on s.track_id = tt.id join thread t using (utid)
group by t.name, s.depth order by t.name, s.depth
"""


@pytest.fixture(scope="module")
def profile_report(bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("prof") / "report"
    args = ["profile", "--bundle", str(bundle), "--sim", "--seconds", "2", "--graph", "stepwise"]
    args += ["--out", str(out), "--record", str(out.parent / "profiled.mcap")]
    assert main(args) == 0  # stepwise: prefix and N flow steps nest in each chunk
    return out


def test_trace_loads_in_perfetto_and_counts_ticks_and_chunks(profile_report):
    why = unavailable()
    if why:
        pytest.skip(f"Perfetto's trace processor cannot run here: {why}")
    s = json.loads((profile_report / "summary.json").read_text())
    assert s["records_dropped"] == 0 and s["ticks"] > 50 and s["chunks"] > 3
    assert s["record.chunks"] == s["chunks"] and s["record.ticks"] == s["ticks"]  # legato profile --record
    with WasmTraceProcessor(profile_report / "trace.json") as tp:
        rows = {(r.thread, r.depth): r.n for r in tp.query(PER_THREAD)}
        names = {r.name for r in tp.query("select distinct name from slice where depth = 1")}
        tracks = {r.name for r in tp.query("select name from counter_track")}
    # every tick is one top-level slice on the clock thread, every chunk one on the worker
    assert rows[("control clock", 0)] == s["ticks"]
    assert rows[("inference worker", 0)] == s["chunks"]
    assert ("control clock", 1) not in rows  # ticks have no children
    # each chunk's stages nest inside it: preprocess, prefix, N flow steps, blend
    steps = sum(1 for k in s if k.startswith("chunk.flow_step") and k.endswith(".p50"))
    assert rows[("inference worker", 1)] == s["chunks"] * (3 + steps)
    assert {"preprocess", "prefix", "step0", "blend"} <= names
    assert {"period error ms", "delay estimate d"} <= tracks  # Perfetto names a counter "name arg"


def test_a_truncated_trace_loads_nothing(tmp_path):
    """The processor really parses: JSON cut off mid-array gives no slice table to count."""
    why = unavailable()
    if why:
        pytest.skip(f"Perfetto's trace processor cannot run here: {why}")
    bad = tmp_path / "trace.json"
    bad.write_text('{"traceEvents": [{"ph": "X", "pid": 1, "tid": 1, "name": "tick", "ts": 0, "dur": 5},')
    with WasmTraceProcessor(bad) as tp, pytest.raises(RuntimeError, match="no such table: slice"):
        tp.query("select count(*) as n from slice")

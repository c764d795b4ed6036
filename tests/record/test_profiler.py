"""`legato profile`'s table and picture as a person reads them (issue 15 item 5, issue 19 part 5):
the numbers in the titles, a log count axis where one bar would hide the tail, no empty panel,
the same chunks in the picture as in the table, no table rows without samples."""

from __future__ import annotations

import io

import numpy as np
import pytest

from edge.loop import CHUNK_BASE_COLS, TICK_COLS, UNDERRUN
from edge.profiler import hides_tail, latency_summary, picture_series, print_table, stat_title, write_png

STAGES = ("prefix", "step0", "blend", "engines", "chunk")
PERIOD = 0.02


def ticks(n: int, late_ms: np.ndarray | None = None, underruns: tuple[int, ...] = ()) -> np.ndarray:
    t = np.zeros((n, len(TICK_COLS)))
    T = {c: i for i, c in enumerate(TICK_COLS)}  # noqa: N806
    t[:, T["tick"]] = np.arange(n)
    t[:, T["deadline"]] = np.arange(n) * PERIOD
    t[:, T["start"]] = t[:, T["deadline"]] + (late_ms if late_ms is not None else np.full(n, 0.05)) * 1e-3
    t[:, T["end"]] = t[:, T["start"]] + 1e-4
    t[list(underruns), T["mode"]] = UNDERRUN
    return t


def chunks(latencies_ms: list[float]) -> np.ndarray:
    C = {c: i for i, c in enumerate(CHUNK_BASE_COLS)}  # noqa: N806
    rows = np.zeros((len(latencies_ms), len(CHUNK_BASE_COLS) + len(STAGES)))
    for i, lat in enumerate(latencies_ms):
        rows[i, C["chunk"]] = i
        rows[i, C["capture"]] = i * 0.16
        rows[i, C["latency_s"]] = lat * 1e-3
        rows[i, C["ready"]] = i * 0.16 + lat * 1e-3
        rows[i, len(CHUNK_BASE_COLS) :] = np.array([0.4, 0.3, 0.1, 0.7, 0.8]) * lat * 1e-3
    return rows


def test_the_warmup_chunk_is_left_out_of_table_and_picture_alike():
    c = chunks([250.0, 10.0, 11.0, 12.0])  # the first carries the engines' warm-up
    s = latency_summary(ticks(100), c, STAGES, PERIOD)
    _, lat, comp, steady = picture_series(ticks(100), c, STAGES)
    assert s["chunk.latency_ms.n"] == len(lat) == len(comp) == 3
    assert s["chunk.latency_ms.max"] == pytest.approx(lat.max()) == pytest.approx(12.0)
    assert s["chunk.warmup_latency_ms"] == pytest.approx(250.0) and 250.0 not in lat
    out = io.StringIO()
    print_table(s, out)
    assert "warm-up: latency 250.0 ms, not in the rows above" in out.getvalue()


def test_table_has_no_rows_without_samples_and_unknown_counts_show_a_dash():
    s = latency_summary(ticks(50), chunks([5.0, 6.0]), STAGES, PERIOD)
    s.update({"telemetry.rtt_ms.p50": 1.5, "telemetry.rtt_ms.p99": 4.0})  # a bus's round trip: no n
    s.update(
        {
            "chunk.empty_ms.p50": None,
            "chunk.empty_ms.p90": None,
            "chunk.empty_ms.p99": None,
            "chunk.empty_ms.max": None,
            "chunk.empty_ms.n": 0,
        }
    )
    out = io.StringIO()
    print_table(s, out)
    lines = out.getvalue().splitlines()
    assert not any(line.split()[0] == "chunk.empty" for line in lines)
    rtt = next(line for line in lines if line.startswith("telemetry.rtt"))
    assert rtt.split() == ["telemetry.rtt", "1.500", "-", "4.000", "-", "-"]
    ratio = next(line for line in lines if line.startswith("chunk / engine calls"))
    assert ratio.split()[-1] == "1"  # its sample count, not 0
    assert not any(line.rstrip().endswith(" 0") and "." in line.split()[0] for line in lines)


def test_titles_carry_p50_p99_in_ms():
    x = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    t = stat_title("chunk compute", x)
    p50, p99 = np.percentile(x, (50, 99))
    assert f"p50 {p50:.3g}" in t and f"p99 {p99:.3g}" in t and "ms" in t and "(n 5)" in t
    assert "no samples" in stat_title("x", np.zeros(0))


def test_log_axis_exactly_where_a_bar_hides_the_tail():
    assert hides_tail(np.array([5000, 3, 0, 0, 1]))  # one late tick among thousands
    assert not hides_tail(np.array([10, 30, 25, 12, 4]))
    assert not hides_tail(np.zeros(5))


def test_picture_titles_log_axis_and_no_empty_panel(tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    late = np.abs(rng.normal(0.02, 0.005, 3000))
    late[1500] = 6.0  # one missed-ish tick: the tail that a linear axis would hide
    panels = write_png(tmp_path / "p.png", ticks(3000, late), chunks([200.0, 9.0, 10.0, 11.0]), STAGES)
    titles = [p[0] for p in panels]
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert titles[0].startswith("control period error: p50 ") and " ms (n 3000)" in titles[0]
    assert panels[0][1] is True  # log counts for the period error
    assert "p50 10 · p99 11" in titles[1] and "(n 3)" in titles[1]  # warm-up chunk not plotted
    assert panels[4][2] == "no underruns in 3000 ticks"
    assert "warm-up chunk (200.0 ms) left out" in titles[5]
    assert not any("--" in t or t.strip()[-1:] == ":" for t in titles)  # numbers, not line styles

    panels = write_png(tmp_path / "u.png", ticks(200, underruns=(50, 51, 52)), chunks([5.0]), STAGES)
    assert panels[4][0] == "underruns: 3 of 200 ticks" and panels[4][2] == ""
    panels = write_png(tmp_path / "s.png", np.zeros((0, len(TICK_COLS))), chunks([5.0, 6.0]), STAGES)
    assert "no control ticks" in panels[0][2] and panels[3][2] == "no control ticks"  # --synthetic


def test_fallback_png_without_matplotlib(tmp_path, monkeypatch):
    import builtins

    from edge.images import decode_png

    real = builtins.__import__

    def no_mpl(name, *a, **k):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    assert write_png(tmp_path / "f.png", ticks(100), chunks([9.0, 10.0]), STAGES) == []
    img = decode_png((tmp_path / "f.png").read_bytes())
    assert img.shape == (120, 720, 3) and (img != 255).any()

"""legato.cross_compare / `legato compare`: pairing cells of two reports of the same episodes."""

import json

import numpy as np
import pytest

from edge.errors import UsageError
from legato.cross_compare import cross_compare, load_report, parse_side, trade_off
from legato.episode_metrics import EPISODE_KEYS

TASK = {"name": "planar-reach", "obstacle": True}
S, C = EPISODE_KEYS.index("success"), EPISODE_KEYS.index("completion_s")
O = EPISODE_KEYS.index("overlap_rmse")


def _report(folder, cells, seed=1000, episodes=50, task=TASK):
    """A report folder as `legato eval` writes it: {(method, d, s): table}."""
    folder.mkdir(parents=True)
    rows = [{"method": m, "d": d, "s": s, "r": 0} for m, d, s in cells]
    cfg = {"seed": seed, "episodes": episodes, "checkpoints": []}
    (folder / "results.json").write_text(json.dumps({"config": cfg, "task": task, "cells": rows}))
    arrays = {f"{m}_d{d}_s{s}": t for (m, d, s), t in cells.items()}
    np.savez_compressed(folder / "episodes.npz", columns=np.array(EPISODE_KEYS), **arrays)
    return folder


def _table(success, completion):
    t = np.zeros((len(success), len(EPISODE_KEYS)))
    t[:, S], t[:, C] = success, completion
    return t


def test_a_new_checkpoint_pairs_with_another_reports_cells_episode_by_episode(tmp_path):
    rng = np.random.default_rng(0)
    base_succ = (rng.random(50) < 0.8).astype(float)
    rtc = _table(base_succ, np.where(base_succ > 0, 2.0, np.nan))
    new = base_succ.copy()
    new[np.flatnonzero(base_succ == 0)[:6]] = 1.0  # six more successes, the same episodes otherwise
    mine = _table(new, np.where(new > 0, 1.8, np.nan))
    a = load_report(_report(tmp_path / "new", {("legato", 2, 8): mine, ("legato", 3, 8): mine}))
    b = load_report(_report(tmp_path / "base", {("rtc", 2, 8): rtc, ("naive", 3, 8): rtc}))
    rows = cross_compare(a, "legato", b, "rtc", resamples=200)
    assert [(r["d"], r["s"]) for r in rows] == [(2, 8)]  # rtc ran only d = 2
    est, lo, hi = rows[0]["success"]
    assert est == pytest.approx(6 / 50) and lo > 0
    assert rows[0]["completion_s"][0] == pytest.approx(0.9)


def test_the_expert_pairs_with_every_delay(tmp_path):
    t = _table(np.ones(50), np.full(50, 1.0))
    a = load_report(_report(tmp_path / "a", {("legato", 2, 8): t, ("legato", 4, 8): t}))
    b = load_report(_report(tmp_path / "b", {("expert", 0, 8): t}))
    assert [r["d"] for r in cross_compare(a, "legato", b, "expert", resamples=100)] == [2, 4]


@pytest.mark.parametrize(
    "other, match",
    [({"seed": 1001}, "not the same episodes"), ({"episodes": 40}, "not the same episodes"),
     ({"task": {"name": "metaworld-push-wall"}}, "different tasks")],
)  # fmt: skip
def test_reports_of_other_episodes_are_refused(tmp_path, other, match):
    n = other.get("episodes", 50)
    a = load_report(_report(tmp_path / "a", {("legato", 2, 8): _table(np.ones(50), np.ones(50))}))
    b = load_report(_report(tmp_path / "b", {("rtc", 2, 8): _table(np.ones(n), np.ones(n))}, **other))
    with pytest.raises(UsageError, match=match):
        cross_compare(a, "legato", b, "rtc")


def test_a_report_of_a_checkpoint_from_before_task_names_pairs_with_todays(tmp_path):
    from sim.task import TaskConfig

    today = TaskConfig().to_dict()
    old = {k: v for k, v in today.items() if k != "name"}
    t = _table(np.ones(50), np.ones(50))
    a = load_report(_report(tmp_path / "a", {("legato", 2, 8): t}, task=today))
    b = load_report(_report(tmp_path / "b", {("rtc", 2, 8): t}, task=old))
    assert [r["d"] for r in cross_compare(a, "legato", b, "rtc", resamples=100)] == [2]


def test_no_common_cell_and_unfinished_reports_are_one_line_errors(tmp_path):
    t = _table(np.ones(50), np.ones(50))
    a = load_report(_report(tmp_path / "a", {("legato", 2, 8): t}))
    b = load_report(_report(tmp_path / "b", {("rtc", 4, 8): t}))
    with pytest.raises(UsageError, match="no \\(d, s\\) cell"):
        cross_compare(a, "legato", b, "rtc")
    (tmp_path / "half").mkdir()
    with pytest.raises(UsageError, match="not a finished"):
        load_report(tmp_path / "half")
    with pytest.raises(UsageError, match="REPORT:METHOD"):
        parse_side("reports/x")


def test_legato_compare_prints_the_paired_table(tmp_path, capsys):
    from legato.cli import main

    t = _table(np.ones(50), np.full(50, 2.0))
    _report(tmp_path / "new", {("legato", 2, 8): t})
    _report(tmp_path / "base", {("rtc", 2, 8): t, ("naive", 2, 8): t})
    assert main(["compare", f"{tmp_path}/new:legato", f"{tmp_path}/base:rtc", f"{tmp_path}/base:naive"]) == 0
    out = capsys.readouterr().out
    assert "| new:legato vs base:rtc | 8 | 2 | +0.000 [+0.000, +0.000] | 1.000" in out
    assert "new:legato vs base:naive" in out
    assert main(["compare", f"{tmp_path}/new:legato", f"{tmp_path}/nothing:rtc"]) == 2


def test_a_report_written_before_routes_were_recorded_still_pairs(tmp_path):
    old_keys = [k for k in EPISODE_KEYS if k != "route"]
    t = _table(np.ones(50), np.full(50, 2.0))
    folder = _report(tmp_path / "old", {("rtc", 2, 8): t})
    np.savez_compressed(folder / "episodes.npz", columns=np.array(old_keys),
                        rtc_d2_s8=np.delete(t, EPISODE_KEYS.index("route"), axis=1))  # fmt: skip
    b = load_report(folder)
    assert np.isnan(b.tables[("rtc", 2, 8)][:, EPISODE_KEYS.index("route")]).all()
    a = load_report(_report(tmp_path / "new", {("legato", 2, 8): _table(np.ones(50), np.full(50, 1.8))}))
    row = cross_compare(a, "legato", b, "rtc", resamples=100)[0]
    assert row["completion_s"][0] == pytest.approx(0.9)
    assert np.isnan(row["completion_same_route"][0])  # the old report never said which route
    np.savez_compressed(folder / "episodes.npz", columns=np.array(old_keys[1:]), rtc_d2_s8=t[:, 2:])
    with pytest.raises(UsageError, match="has columns"):
        load_report(folder)


def test_the_trade_off_is_each_cells_success_rate_and_mean_overlap_through_its_delays(tmp_path):
    t2, t4 = _table(np.r_[np.ones(40), np.zeros(10)], np.ones(50)), _table(np.ones(50), np.ones(50))
    t2[:, O] = np.r_[np.full(49, 0.02), np.nan]  # an episode with no overlap does not count
    t4[:, O] = 0.01
    r = load_report(_report(tmp_path / "a", {("legato", 4, 8): t4, ("legato", 2, 8): t2, ("rtc", 2, 8): t4}))
    rows = trade_off(r, "legato")
    assert [(x["s"], x["d"]) for x in rows] == [(8, 2), (8, 4)]
    assert rows[0]["success"] == pytest.approx(0.8) and rows[0]["overlap_rmse"] == pytest.approx(0.02)
    assert rows[1]["overlap_rmse"] == pytest.approx(0.01)
    with pytest.raises(UsageError, match="no sync cells"):
        trade_off(r, "sync")


def test_legato_compare_plots_the_trade_off_and_keeps_an_existing_plot(tmp_path, capsys):
    from legato.cli import main

    t = _table(np.ones(50), np.full(50, 2.0))
    t[:, O] = 0.01
    _report(tmp_path / "new", {("legato", 2, 8): t, ("legato", 4, 8): t})
    _report(tmp_path / "base", {("rtc", 2, 8): t, ("rtc", 4, 8): t})
    sides = [f"{tmp_path}/new:legato", f"{tmp_path}/base:rtc"]
    plot = tmp_path / "plots" / "trade-off.png"
    assert main(["compare", *sides, "--plot", str(plot)]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = plot.read_bytes()
    capsys.readouterr()
    assert main(["compare", *sides, "--plot", str(plot)]) == 2  # refused before any table is printed
    out, err = capsys.readouterr()
    assert "exists; pass --force" in err and "new:legato vs base:rtc" not in out
    assert plot.read_bytes() == before
    assert main(["compare", *sides, "--plot", str(plot), "--force"]) == 0


def test_held_out_sets_pool_part_by_part_into_one_paired_sample(tmp_path):
    from legato.cross_compare import check_paired_sets, pooled_report

    win, lose = _table(np.ones(50), np.full(50, 2.0)), _table(np.zeros(50), np.full(50, 2.0))
    a1 = load_report(_report(tmp_path / "a1", {("legato", 2, 8): win}))
    a2 = load_report(_report(tmp_path / "a2", {("legato", 2, 8): win}, seed=2000, episodes=50))
    b1 = load_report(_report(tmp_path / "b1", {("rtc", 2, 8): lose}))
    b2 = load_report(_report(tmp_path / "b2", {("rtc", 2, 8): win}, seed=2000, episodes=50))
    check_paired_sets([a1, a2], [b1, b2])
    pa, pb = pooled_report([a1, a2]), pooled_report([b1, b2])
    assert pa.episodes == pb.episodes == 100 and pa.tables[("legato", 2, 8)].shape[0] == 100
    assert pa.parts == pb.parts == (50, 50)
    row = cross_compare(pa, "legato", pb, "rtc", resamples=200)[0]
    # +1 on the first set, 0 on the second; every resample keeps 50 episodes of each set, so the
    # interval is exactly the estimate (an unstratified resample would spread it)
    assert row["success"] == pytest.approx([0.5, 0.5, 0.5])
    # the same seed and episode count, but one set of 100 against two of 50: refused on the split
    one = load_report(_report(tmp_path / "one", {("rtc", 2, 8): lose[np.r_[0:50, 0:50]]}, episodes=100))
    with pytest.raises(UsageError, match=r"sets of \[50, 50\] episodes, .* of \[100\]: not the same"):
        cross_compare(pa, "legato", one, "rtc")
    with pytest.raises(UsageError, match="not the same episodes"):
        check_paired_sets([a1, a2], [b2, b1])  # part i must be the same held-out set as part i
    with pytest.raises(UsageError, match="2 against 1"):
        check_paired_sets([a1, a2], [b1])


def test_a_pooled_side_names_one_method_and_legato_compare_prints_it(tmp_path, capsys):
    from legato.cli import main

    assert parse_side("r1:legato+r2:legato")[1] == "legato"
    with pytest.raises(UsageError, match="one method"):
        parse_side("r1:legato+r2:rtc")
    t = _table(np.ones(50), np.full(50, 2.0))
    for name, seed in (("n1", 1000), ("n2", 2000)):
        _report(tmp_path / name, {("legato", 2, 8): t}, seed=seed)
        _report(tmp_path / f"b{name}", {("rtc", 2, 8): t}, seed=seed)
    argv = ["compare", f"{tmp_path}/n1:legato+{tmp_path}/n2:legato", f"{tmp_path}/bn1:rtc+{tmp_path}/bn2:rtc"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Episodes: 100 (seed 1000, 2000)" in out and "| n1+n2:legato vs bn1+bn2:rtc | 8 | 2 |" in out

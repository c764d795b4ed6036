"""The evaluation harness end to end on tiny checkpoints (slow: `make test-slow`)."""

import json

import pytest

pytest.importorskip("torch")


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_harness_writes_results_table_and_plots(tiny_checkpoints, tmp_path, workers):
    from legato.evaluate import METRICS, EvalConfig, evaluate

    cfg = EvalConfig(
        checkpoints=tuple(str(p) for p in tiny_checkpoints.values()),
        methods=("naive", "sync", "rtc", "rtc-train", "legato", "expert"),
        delays=(0, 2),
        horizons=(4, 8),
        episodes=4,
        example=(2, 8),
        workers=workers,
        compute_repeats=3,
        compare=(("legato", "rtc"), ("naive", "expert")),
        resamples=100,
    )
    report = evaluate(cfg, tmp_path, progress=False)
    cells = report["cells"]
    assert len(cells) == 5 * 2 * 2 + 2  # the expert: one cell per s
    assert {c["method"] for c in cells} == {"naive", "sync", "rtc", "rtc-train", "legato", "expert"}
    for c in cells:
        assert 0.0 <= c["success_rate"] <= 1.0
        assert c["success_ci_low"] <= c["success_rate"] <= c["success_ci_high"]
        assert c["method"] == "expert" or c["chunk_ms"] > 0
    expert = [c for c in cells if c["method"] == "expert"]
    assert all(c["success_rate"] >= 0.75 and c["mode_switches"] == 0 for c in expert)
    assert all(0.0 <= c["left_route"] <= 1.0 for c in expert)  # the expert always commits to a side
    # paired comparisons at every (d, s): the expert's one cell pairs with each d
    pairs = {(p["a"], p["b"], p["d"], p["s"]) for p in report["paired"]}
    assert len(pairs) == 2 * 2 * 2
    for p in report["paired"]:
        est, lo, hi = p["success"]
        assert lo <= est <= hi
    import numpy as np

    with np.load(tmp_path / "episodes.npz") as z:
        assert z["legato_d2_s8"].shape == (4, len(z["columns"]))
    assert "Paired comparisons" in (tmp_path / "results.md").read_text()
    # RTC needs a backward pass per denoising step: it must cost more than the forward-only samplers.
    comp = report["chunk_compute"]
    assert comp["rtc"]["median_ms"] > comp["legato"]["median_ms"]
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["cells"] == json.loads(json.dumps(cells))
    table = (tmp_path / "results.md").read_text()
    assert "| legato | 2 |" in table and "s = 8" in table
    for key in METRICS:
        assert (tmp_path / f"{key}.png").stat().st_size > 1000
    assert (tmp_path / "example_episode.png").exists()


def test_eval_config_refuses_training_seeds():
    from legato.evaluate import EvalConfig

    with pytest.raises(ValueError, match="held-out"):
        EvalConfig(checkpoints=("x",), seed=0)

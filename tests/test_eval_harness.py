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
        delays=(0, 2),
        horizons=(4, 8),
        episodes=4,
        example=(2, 8),
        workers=workers,
        compute_repeats=3,
    )
    report = evaluate(cfg, tmp_path, progress=False)
    cells = report["cells"]
    assert len(cells) == 5 * 2 * 2
    assert {c["method"] for c in cells} == {"naive", "sync", "rtc", "rtc-train", "legato"}
    for c in cells:
        assert 0.0 <= c["success_rate"] <= 1.0
        assert c["success_ci_low"] <= c["success_rate"] <= c["success_ci_high"]
        assert c["chunk_ms"] > 0
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

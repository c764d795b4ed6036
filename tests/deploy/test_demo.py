"""The full-stack demo, shortened to a few episodes: the committed bundle through the emulated
controller on a pty and the simulator camera, then the summary and the report folder."""

from __future__ import annotations

import json

import pytest

from deploy import demo

pytestmark = pytest.mark.timeout(180)


def test_demo_runs_the_stack_and_writes_the_report(tmp_path, capsys):
    if not (demo.BUNDLE / "manifest.json").is_file():
        pytest.skip(f"{demo.BUNDLE} is not in this checkout")
    out = tmp_path / "demo"
    rc = demo.main(["--episodes", "3", "--out", str(out)])
    text = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 3 and summary["underruns"] == 0 and summary["shutdown"] == "completed"
    lo, hi = summary["success_ci95"]
    assert lo <= summary["success_rate"] <= hi
    assert rc == (0 if summary["evaluation_inside_ci"] else 1)
    for line in (
        "success      ",
        "completion   ",
        "smoothness   NSPARC",
        "delay        d = ",
        "underruns    0",
        "chunk.latency",
        "chunk.fused",  # the x86-cpu profile runs the fused graph ([control] graph)
    ):
        assert line in text, line
    trace = json.loads((out / "trace.json").read_text())
    assert trace["traceEvents"] if isinstance(trace, dict) else trace
    assert (out / "profile.png").stat().st_size > 0  # written without matplotlib too (the core install)
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # the robot's core install: the demo says what it skipped
        assert "no trajectories.png: pip install matplotlib" in text
    else:
        assert (out / "trajectories.png").stat().st_size > 0
    assert (out / ".legato-output.json").is_file()

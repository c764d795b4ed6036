"""Shared fixtures: a small demonstration set and a tiny checkpoint per method."""

from __future__ import annotations

import pytest

from legato import demos as demo_io
from sim.task import TaskConfig


@pytest.fixture(scope="session")
def demos_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "demos.npz"
    demo_io.save(demo_io.generate(TaskConfig(), seed=0, episodes=40), path)
    return path


TINY = dict(width=32, heads=2, prefix_layers=1, head_layers=1, mlp_ratio=2)


@pytest.fixture
def tiny():
    """A tiny PolicyConfig: enough to exercise every code path in seconds."""
    from legato.config import PolicyConfig

    return PolicyConfig(**TINY)


@pytest.fixture(scope="session")
def tiny_checkpoints(demos_path, tmp_path_factory):
    """{method: checkpoint folder}, each trained for a few steps with a tiny model."""
    pytest.importorskip("torch")
    from legato.config import PolicyConfig, TrainConfig
    from legato.train import train

    root = tmp_path_factory.mktemp("runs")
    out = {}
    for method in ("legato", "rtc-train", "plain"):
        cfg = TrainConfig(method=method, steps=4, batch_obs=4, draws=2, warmup=2, ckpt_every=100)
        out[method] = train(demos_path, root / method, cfg, PolicyConfig(**TINY), show_progress=False)
    return out


@pytest.fixture(autouse=True)
def _scheduling_left_as_found():
    """No test may leave the test process in another scheduling class: at SCHED_FIFO the rest of
    the suite runs above every control clock on the machine (SVT-AV1's encoder did that: FIFO 99).
    Restored, then reported as an error of that test."""
    import os

    if not hasattr(os, "sched_getscheduler"):
        yield
        return
    before = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)
    yield
    after = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)
    if after != before:
        os.sched_setscheduler(0, before[0], os.sched_param(before[1]))
        pytest.fail(f"the test left the process at scheduling class/priority {after}, it found {before}")

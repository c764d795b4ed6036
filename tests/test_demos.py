"""Demonstration datasets: round trip, validation, and atomic writes."""

import numpy as np
import pytest

from edge.outputs import atomic_file
from legato import demos as demo_io
from legato.demos import DatasetError


def test_dataset_round_trips(demos_path):
    d = demo_io.load(demos_path)
    assert d.num_episodes == 40
    assert d.offsets[-1] == len(d.q) == len(d.action)
    assert d.describe()["expert_success"] >= 0.95
    again = demo_io.generate(d.task, seed=0, episodes=40)
    np.testing.assert_array_equal(again.action, d.action)  # generation is deterministic


def test_missing_dataset_gets_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="not found.*legato sim demos"):
        demo_io.load(tmp_path / "nope.npz")


def test_corrupt_and_truncated_datasets_are_refused(tmp_path, demos_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(DatasetError, match="corrupt"):
        demo_io.load(junk)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(demos_path.read_bytes()[:5000])
    with pytest.raises(DatasetError, match="corrupt"):
        demo_io.load(cut)


def test_inconsistent_shapes_are_refused(tmp_path, demos_path):
    with np.load(demos_path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["action"] = arrays["action"][:, :2]
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(DatasetError, match="action has shape"):
        demo_io.load(bad)


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path):
    target = tmp_path / "out.npz"

    def explode(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_file(target, explode)
    assert list(tmp_path.iterdir()) == []


def test_demonstrations_carry_the_approach_past_the_tolerance_to_the_target(demos_path):
    from sim.arm import end_effector

    d = demo_io.load(demos_path)
    last = d.offsets[1:] - 1
    dist = np.linalg.norm(end_effector(d.task.arm, d.q[last].astype(float)) - d.scenes.goal, axis=-1)
    ok = d.success
    # Recording continues after success, so episodes end near the centre, not on the tolerance circle.
    assert np.median(dist[ok]) < 0.5 * d.task.scene.success_tol


def test_env_can_keep_stepping_after_success_for_recording():
    from sim.env import ReachEnv
    from sim.episodes import run_expert, sample_episodes
    from sim.task import TaskConfig

    task = TaskConfig()
    spec = sample_episodes(task, seed=2, count=3)
    stopped = run_expert(task, spec.scenes, spec.side, None)
    assert stopped.all_done and stopped.success.all()
    env = ReachEnv(task, spec.scenes, stop_on_success=False)
    from sim.expert import expert_actions

    acts = expert_actions(task.arm, spec.scenes, spec.side, task.max_steps, task.expert, None)
    for k in range(int(stopped.steps_to_success.max()) + 5):
        env.step(acts[:, k])
    assert env.success.all() and not env.done.any()
    np.testing.assert_array_equal(env.steps_to_success, stopped.steps_to_success)


def test_format_1_datasets_still_load(tmp_path, demos_path):
    """Format 1 kept the planar arm's state as q and qd; it loads as the same state array."""
    import json

    d = demo_io.load(demos_path)
    j = d.action.shape[1]
    with np.load(demos_path) as z:
        arrays = {k: z[k] for k in z.files if k not in ("meta", "state")}
    meta = json.loads(bytes(np.load(demos_path)["meta"]).decode())
    meta["format_version"] = 1
    old = tmp_path / "v1.npz"
    meta_bytes = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(old, meta=meta_bytes, q=d.state[:, :j], qd=d.state[:, j:], **arrays)
    again = demo_io.load(old)
    np.testing.assert_array_equal(again.state, d.state)
    np.testing.assert_array_equal(again.q, d.q)

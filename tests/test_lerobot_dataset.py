"""LeRobotDataset v3 reading (against a dataset LeRobot's own writer made) and writing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow", reason="the vla extra (pyarrow, av) is not installed")
pytest.importorskip("av", reason="the vla extra (pyarrow, av) is not installed")

from legato.lerobot_dataset import (  # noqa: E402
    EpisodeData,
    LeRobotDatasetError,
    open_dataset,
    write_dataset,
)

FIXTURE = Path(__file__).parent / "fixtures" / "lerobot" / "dataset"
FRAMES = Path(__file__).parent / "fixtures" / "lerobot" / "dataset_frames.npz"


def test_reads_what_lerobots_own_writer_wrote():
    ds = open_dataset(FIXTURE)
    rec = np.load(FRAMES)
    assert [e.length for e in ds.episodes] == [12, 9]
    assert ds.fps == 10 and ds.camera_keys == ["observation.images.top"]
    assert np.array_equal(ds.columns["observation.state"], rec["state"])
    assert np.array_equal(ds.columns["action"], rec["action"])
    assert [ds.task_of(0), ds.task_of(12)] == ["reach the red target", "reach the blue target"]
    frames = np.concatenate([ds.frames("observation.images.top", e) for e in ds.episodes])
    assert frames.shape == rec["image"].shape and frames.dtype == np.uint8
    # AV1 at LeRobot's default quality: lossy, close on average, and each frame its own.
    assert np.abs(frames.astype(float) - rec["image"]).mean() < 8
    assert (
        np.abs(frames[0].astype(float) - rec["image"][1]).mean()
        > np.abs(frames[0].astype(float) - rec["image"][0]).mean()
    )


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    shutil.copytree(FIXTURE, root)
    return root


def test_missing_video_is_refused_in_one_line(tmp_path):
    root = _copy(tmp_path)
    (root / "videos" / "observation.images.top" / "chunk-000" / "file-000.mp4").unlink()
    with pytest.raises(LeRobotDatasetError, match=r"episode 0 has no video for observation.images.top") as e:
        open_dataset(root)
    assert "\n" not in str(e.value)


def test_nan_in_a_state_column_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = _copy(tmp_path)
    path = root / "data" / "chunk-000" / "file-000.parquet"
    t = pq.read_table(path)
    state = np.stack(t.column("observation.state").to_numpy(zero_copy_only=False)).astype(np.float32)
    state[14, 2] = np.nan
    col = pa.FixedSizeListArray.from_arrays(pa.array(state.reshape(-1)), 6)
    pq.write_table(t.set_column(t.column_names.index("observation.state"), "observation.state", col), path)
    with pytest.raises(LeRobotDatasetError, match=r"NaN or inf in observation.state \(frame 14, episode 1\)"):
        open_dataset(root)


def test_column_shape_disagreeing_with_info_is_refused(tmp_path):
    root = _copy(tmp_path)
    info = json.loads((root / "meta" / "info.json").read_text())
    info["features"]["action"]["shape"] = [4]
    (root / "meta" / "info.json").write_text(json.dumps(info))
    with pytest.raises(
        LeRobotDatasetError, match=r"column action has shape \(3,\) per frame, info.json says \(4,\)"
    ):
        open_dataset(root)


def test_not_a_dataset(tmp_path):
    with pytest.raises(LeRobotDatasetError, match="has no meta/info.json"):
        open_dataset(tmp_path)


def test_write_then_read_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    feats = {
        "observation.images.cam": {
            "dtype": "video",
            "shape": [32, 48, 3],
            "names": ["height", "width", "channels"],
        },
        "observation.state": {"dtype": "float32", "shape": [4], "names": None},
        "action": {"dtype": "float32", "shape": [2], "names": None},
    }
    eps = []
    for n, task in ((7, "a"), (5, "b"), (6, "a")):
        yy, xx = np.mgrid[0:32, 0:48]
        frames = np.stack(
            [(120 + 80 * np.sin(xx * 0.2 + k + yy * 0.1))[..., None].repeat(3, -1) for k in range(n)]
        )
        eps.append(
            EpisodeData(
                task,
                {"observation.state": rng.normal(size=(n, 4)), "action": rng.normal(size=(n, 2))},
                {"observation.images.cam": frames.astype(np.uint8)},
            )
        )
    root = tmp_path / "out"
    root.mkdir()
    write_dataset(root, 20, feats, eps)
    ds = open_dataset(root)
    assert [e.length for e in ds.episodes] == [7, 5, 6] and ds.tasks == ["a", "b"]
    assert np.allclose(
        ds.columns["action"], np.concatenate([e.columns["action"] for e in eps]).astype(np.float32)
    )
    last = ds.frames("observation.images.cam", ds.episodes[2])
    assert np.abs(last.astype(float) - eps[2].videos["observation.images.cam"]).mean() < 8
    stats = json.loads((root / "meta" / "stats.json").read_text())
    assert np.allclose(stats["action"]["mean"], ds.columns["action"].mean(0), atol=1e-6)


def test_sim_demos_written_as_a_lerobot_dataset(tmp_path, capsys):
    from legato import demos as demo_io
    from legato.cli import main
    from sim.task import TaskConfig

    out = tmp_path / "sim-ds"
    # Seed 18's second expert episode clips the obstacle: only the other two are written.
    assert (
        main(["sim", "demos", "--episodes", "3", "--seed", "18", "--format", "lerobot", "--out", str(out)])
        == 0
    )
    assert "(2 successful ones written)" in capsys.readouterr().out
    ds = open_dataset(out)
    ref = demo_io.generate(TaskConfig(), seed=18, episodes=3)
    assert ref.success.tolist() == [True, False, True]
    keep = np.concatenate([np.arange(ref.offsets[e], ref.offsets[e + 1]) for e in (0, 2)])
    assert [e.length for e in ds.episodes] == [int(n) for n in np.diff(ref.offsets)[[0, 2]]]
    assert np.array_equal(ds.columns["action"], ref.action[keep])
    assert np.array_equal(ds.columns["observation.state"], np.concatenate([ref.q, ref.qd], -1)[keep])
    # The privileged scene state (the aux probe's target): the instructed goal and the obstacle.
    env = ds.columns["observation.environment_state"]
    first = ds.episodes[1].start
    assert np.allclose(env[first], np.concatenate([ref.scenes.goal[2], ref.scenes.obstacle[2]]), atol=1e-6)
    assert np.allclose(env[first], env[first + ds.episodes[1].length - 1])
    assert ds.frames("observation.images.top", ds.episodes[0]).shape == (ds.episodes[0].length, 48, 64, 3)
    # A foreign folder is never written into; our own is replaced only with --force.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    assert main(["sim", "demos", "--episodes", "1", "--format", "lerobot", "--out", str(foreign)]) == 2
    assert main(["sim", "demos", "--episodes", "1", "--format", "lerobot", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err


def test_writing_an_av1_video_leaves_the_threads_scheduling_as_it_was(tmp_path):
    """SVT-AV1 makes the thread that opens an encoder SCHED_FIFO 99 where it may (root) and leaves
    it so; the writer restores it. Encoded in a thread of its own, so a failure here does not leave
    the test process above every control clock on the machine."""
    import os
    import threading

    from legato.lerobot_dataset import encode_video

    if not hasattr(os, "sched_getscheduler"):
        pytest.skip("no scheduling classes on this platform")
    seen: dict[str, object] = {}

    def encode() -> None:
        seen["before"] = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)
        encode_video(tmp_path / "v.mp4", np.zeros((4, 48, 64, 3), np.uint8), 10)
        seen["after"] = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)

    t = threading.Thread(target=encode)
    t.start()
    t.join(60)
    assert (tmp_path / "v.mp4").stat().st_size > 0
    assert seen["after"] == seen["before"]

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
    assert (
        main(["sim", "demos", "--episodes", "3", "--seed", "5", "--format", "lerobot", "--out", str(out)])
        == 0
    )
    ds = open_dataset(out)
    ref = demo_io.generate(TaskConfig(), seed=5, episodes=3)
    assert [e.length for e in ds.episodes] == list(np.diff(ref.offsets))
    assert np.array_equal(ds.columns["action"], ref.action)
    assert np.array_equal(ds.columns["observation.state"], np.concatenate([ref.q, ref.qd], -1))
    assert ds.frames("observation.images.top", ds.episodes[0]).shape == (ds.episodes[0].length, 48, 64, 3)
    # A foreign folder is never written into; our own is replaced only with --force.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    assert main(["sim", "demos", "--episodes", "1", "--format", "lerobot", "--out", str(foreign)]) == 2
    assert main(["sim", "demos", "--episodes", "1", "--format", "lerobot", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err

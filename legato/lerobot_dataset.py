"""LeRobotDataset v3 folders, read and written without LeRobot (pyarrow + PyAV: the vla extra).

Layout (LeRobot 0.6's codebase_version v3.0, as its create / add_frame / save_episode / finalize
write it):
    meta/info.json                              fps, features (dtype, shape, names), path templates
    meta/stats.json                             per feature: min, max, mean, std, count, q01 ... q99
    meta/tasks.parquet                          task (string), task_index
    meta/episodes/chunk-NNN/file-NNN.parquet    per episode: length, dataset_from/to_index, and per
                                                video key its chunk/file and from/to_timestamp
    data/chunk-NNN/file-NNN.parquet             per frame: every non-video feature, timestamp,
                                                frame_index, episode_index, index, task_index
    videos/<key>/chunk-NNN/file-NNN.mp4         per camera, episodes concatenated in time
Frames come back as uint8 (n, H, W, 3), as a camera gives them. Every problem (a missing file,
a column whose shape disagrees with info.json, NaN in a state column) is a one-line DatasetError
raised while opening, before any training starts.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import LegatoError

CODEBASE_VERSION = "v3.0"
DEFAULT_KEYS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
EXTRA = "pip install 'legato-edge[vla]'"


class LeRobotDatasetError(LegatoError, ValueError):
    """A LeRobot dataset folder that is missing, incomplete or inconsistent."""


def _need(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise LegatoError(f"LeRobot datasets need {module.split('.')[0]}: {EXTRA}") from None


def is_lerobot_dataset(path: str | Path) -> bool:
    return (Path(path) / "meta" / "info.json").is_file()


@dataclass(frozen=True)
class Episode:
    index: int
    length: int
    start: int  # dataset_from_index: row of its first frame
    tasks: tuple[str, ...]
    videos: dict[str, tuple[Path, float]]  # camera key -> (mp4 file, from_timestamp in s)


@dataclass
class LeRobotDataset:
    """An opened dataset: metadata, every non-video column in memory, videos decoded on demand."""

    root: Path
    info: dict[str, Any]
    stats: dict[str, dict[str, np.ndarray]]
    tasks: list[str]  # by task_index
    episodes: list[Episode]
    columns: dict[str, np.ndarray]  # feature -> (T, *shape), rows in `index` order
    _decoded: dict[Path, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def fps(self) -> float:
        return float(self.info["fps"])

    @property
    def features(self) -> dict[str, dict[str, Any]]:
        return self.info["features"]

    @property
    def camera_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f["dtype"] in ("video", "image")]

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(int(x) for x in self.features[key]["shape"])

    @property
    def num_frames(self) -> int:
        return int(self.info["total_frames"])

    def frames(self, key: str, episode: Episode) -> np.ndarray:
        """One camera's frames of one episode: uint8 (length, H, W, 3)."""
        path, t0 = episode.videos[key]
        video = self._decoded.get(path)
        if video is None:
            video = self._decoded[path] = decode_video(path)
        first = int(round(t0 * self.fps))
        out = video[first : first + episode.length]
        if len(out) != episode.length:
            raise LeRobotDatasetError(
                f"{path}: {len(video)} frames, episode {episode.index} needs "
                f"{first}..{first + episode.length - 1}"
            )
        return out

    def task_of(self, row: int) -> str:
        return self.tasks[int(self.columns["task_index"][row])]

    def describe(self) -> dict[str, Any]:
        out = {
            "format": "lerobot-v3",
            "episodes": len(self.episodes),
            "frames": self.num_frames,
            "fps": self.fps,
            "cameras": self.camera_keys,
            "tasks": len(self.tasks),
        }
        # `legato sim demos --format lerobot` records its episode seed in its marker
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            out["seed"] = int(json.loads((self.root / ".legato-output.json").read_text())["seed"])
        return out


def decode_video(path: Path) -> np.ndarray:
    """Every frame of an mp4 as uint8 (n, H, W, 3) RGB (PyAV; AV1 through libdav1d)."""
    av = _need("av")
    try:
        with av.open(str(path)) as container:
            return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    except (OSError, ValueError, av.error.FFmpegError) as e:
        raise LeRobotDatasetError(f"{path}: cannot decode ({e})") from None


def _read_table(path: Path):
    pq = _need("pyarrow.parquet")
    if not path.is_file():
        raise LeRobotDatasetError(f"LeRobot dataset file missing: {path}")
    try:
        return pq.read_table(path)
    except Exception as e:  # pyarrow raises its own ArrowInvalid / OSError variants
        raise LeRobotDatasetError(f"{path}: unreadable parquet ({type(e).__name__}: {e})") from None


def _column(table, name: str) -> np.ndarray:
    """A parquet column as numpy: scalars (T,), list features stacked (T, *shape)."""
    col = table.column(name).combine_chunks()
    if str(col.type).startswith(("fixed_size_list", "list", "large_list")):
        pa = _need("pyarrow")
        values = col.to_pylist()
        try:
            return np.asarray(values, dtype=np.float32 if pa.types.is_floating(col.type.value_type) else None)
        except ValueError as e:
            raise LeRobotDatasetError(f"column {name}: ragged values ({e})") from None
    return col.to_numpy(zero_copy_only=False)


def open_dataset(root: str | Path) -> LeRobotDataset:
    """Open and check a LeRobotDataset v3 folder; every problem is one DatasetError line."""
    root = Path(root)
    info_path = root / "meta" / "info.json"
    if not info_path.is_file():
        raise LeRobotDatasetError(f"not a LeRobot dataset: {root} has no meta/info.json")
    try:
        info = json.loads(info_path.read_text())
        stats_raw = (
            json.loads((root / "meta" / "stats.json").read_text())
            if (root / "meta" / "stats.json").is_file()
            else {}
        )
    except (OSError, ValueError) as e:
        raise LeRobotDatasetError(f"{info_path.parent}: unreadable metadata ({e})") from None
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3"):
        raise LeRobotDatasetError(
            f"{root}: codebase_version {version!r}; this reader reads LeRobot v3 datasets "
            "(convert older ones with LeRobot's v30 conversion script)"
        )
    features = info.get("features", {})
    tasks_t = _read_table(root / "meta" / "tasks.parquet")
    order = np.argsort(_column(tasks_t, "task_index"))
    tasks = [str(x) for x in np.asarray(_column(tasks_t, "task"))[order]]
    episodes: list[Episode] = []
    ep_files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not ep_files:
        raise LeRobotDatasetError(f"{root}: no meta/episodes/chunk-*/file-*.parquet")
    cams = [k for k, f in features.items() if f.get("dtype") == "video"]
    for ep_file in ep_files:
        t = _read_table(ep_file)
        cols = {n: t.column(n).to_pylist() for n in t.column_names if not n.startswith("stats/")}
        for i in range(len(t)):
            videos = {}
            for cam in cams:
                ci, fi = cols[f"videos/{cam}/chunk_index"][i], cols[f"videos/{cam}/file_index"][i]
                path = root / info["video_path"].format(video_key=cam, chunk_index=ci, file_index=fi)
                if not path.is_file():
                    raise LeRobotDatasetError(
                        f"{root}: episode {cols['episode_index'][i]} has no video for "
                        f"{cam} ({path.relative_to(root)} is missing)"
                    )
                videos[cam] = (path, float(cols[f"videos/{cam}/from_timestamp"][i]))
            episodes.append(
                Episode(
                    int(cols["episode_index"][i]),
                    int(cols["length"][i]),
                    int(cols["dataset_from_index"][i]),
                    tuple(cols["tasks"][i]),
                    videos,
                )
            )
    episodes.sort(key=lambda e: e.index)
    data_files = sorted((root / "data").glob("chunk-*/file-*.parquet"))
    if not data_files:
        raise LeRobotDatasetError(f"{root}: no data/chunk-*/file-*.parquet")
    tables = [_read_table(p) for p in data_files]
    names = [k for k, f in features.items() if f.get("dtype") not in ("video", "image")]
    columns: dict[str, np.ndarray] = {}
    for name in names:
        if any(name not in t.column_names for t in tables):
            raise LeRobotDatasetError(f"{root}: feature {name} in info.json has no column in the data files")
        columns[name] = np.concatenate([_column(t, name) for t in tables])
    order = np.argsort(columns["index"])
    columns = {k: v[order] for k, v in columns.items()}
    total = len(columns["index"])
    for name in names:
        want = tuple(int(x) for x in features[name]["shape"])
        got = columns[name].shape[1:] or (1,)
        if got != want:
            raise LeRobotDatasetError(
                f"{root}: column {name} has shape {got} per frame, info.json says {want}"
            )
        if (
            name not in DEFAULT_KEYS
            and columns[name].dtype.kind == "f"
            and not np.isfinite(columns[name]).all()
        ):
            row = int(np.argwhere(~np.isfinite(columns[name].reshape(total, -1)))[0, 0])
            raise LeRobotDatasetError(
                f"{root}: NaN or inf in {name} (frame {row}, episode {int(columns['episode_index'][row])})"
            )
    if sum(e.length for e in episodes) != total:
        raise LeRobotDatasetError(
            f"{root}: episodes cover {sum(e.length for e in episodes)} frames, data has {total}"
        )
    stats = {k: {s: np.asarray(v, np.float32) for s, v in d.items()} for k, d in stats_raw.items()}
    return LeRobotDataset(root, info, stats, tasks, episodes, columns)


# ---------------------------------------------------------------- writing
def feature_stats(x: np.ndarray) -> dict[str, list]:
    """LeRobot's per-feature statistics over frames (axis 0): min, max, mean, std, count, quantiles."""
    x = np.asarray(x, np.float64)
    out = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([len(x)])}
    for q in (1, 10, 50, 90, 99):
        out[f"q{q:02d}"] = np.quantile(x, q / 100, axis=0)
    return {k: np.asarray(v).tolist() for k, v in out.items()}


def image_stats(frames: np.ndarray) -> dict[str, list]:
    """Per-channel statistics of uint8 frames (n, H, W, 3) in [0, 1], shaped (3, 1, 1) as LeRobot's."""
    x = frames.reshape(-1, 3).astype(np.float64) / 255.0
    s = feature_stats(x)
    return {
        k: (np.asarray(v).reshape(3, 1, 1).tolist() if k != "count" else [int(len(frames))])
        for k, v in s.items()
    }


@contextlib.contextmanager
def _scheduling_kept() -> Iterator[None]:
    """Restore the calling thread's scheduling class and priority on the way out. SVT-AV1 (PyAV's
    libsvtav1, v3.0) makes the thread that opens an encoder SCHED_FIFO 99 where it may (root,
    CAP_SYS_NICE) and leaves it there: a process that wrote one video then ran every later
    computation above every control clock on the machine (a test process at FIFO 99 took 47 % of
    a core and delayed a bare SCHED_FIFO 50 clock by 168 ms)."""
    import os

    if not hasattr(os, "sched_getscheduler"):
        yield
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):  # lowering needs no permission; a vanished policy is fine
            os.sched_setscheduler(0, policy, param)


def encode_video(path: Path, frames: np.ndarray, fps: int, codec: str = "libsvtav1") -> None:
    """uint8 (n, H, W, 3) -> mp4 (yuv420p), LeRobot's default codec (AV1) unless told otherwise."""
    av = _need("av")
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    with _scheduling_kept(), av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "libsvtav1":
            stream.options = {"g": "2", "crf": "30", "preset": "12"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@dataclass(frozen=True)
class EpisodeData:
    task: str
    columns: dict[str, np.ndarray]  # non-video features, (n, *shape)
    videos: dict[str, np.ndarray]  # camera key -> uint8 (n, H, W, 3)


def write_dataset(
    root: Path,
    fps: int,
    features: dict[str, dict[str, Any]],
    episodes: Iterable[EpisodeData],
    robot_type: str | None = None,
    codec: str = "libsvtav1",
) -> None:
    """Write episodes as one LeRobotDataset v3 (one data file, one video file per camera) into
    `root`, which the caller provides empty (edge.outputs.atomic_folder)."""
    pa, pq = _need("pyarrow"), _need("pyarrow.parquet")
    cams = [k for k, f in features.items() if f["dtype"] == "video"]
    rows: dict[str, list[np.ndarray]] = {}
    videos: dict[str, list[np.ndarray]] = {c: [] for c in cams}
    task_ids: dict[str, int] = {}
    ep_rows: list[dict[str, Any]] = []
    start, t_video = 0, 0.0
    for e, ep in enumerate(_as_iter(episodes)):
        n = len(next(iter(ep.columns.values())))
        tid = task_ids.setdefault(ep.task, len(task_ids))
        for k, v in ep.columns.items():
            rows.setdefault(k, []).append(np.asarray(v, np.float32).reshape(n, -1))
        rows.setdefault("timestamp", []).append((np.arange(n) / fps).astype(np.float32))
        rows.setdefault("frame_index", []).append(np.arange(n))
        rows.setdefault("episode_index", []).append(np.full(n, e))
        rows.setdefault("index", []).append(start + np.arange(n))
        rows.setdefault("task_index", []).append(np.full(n, tid))
        rec = {
            "episode_index": e,
            "tasks": [ep.task],
            "length": n,
            "data/chunk_index": 0,
            "data/file_index": 0,
            "dataset_from_index": start,
            "dataset_to_index": start + n,
        }
        for c in cams:
            videos[c].append(ep.videos[c])
            rec |= {
                f"videos/{c}/chunk_index": 0,
                f"videos/{c}/file_index": 0,
                f"videos/{c}/from_timestamp": t_video,
                f"videos/{c}/to_timestamp": t_video + n / fps,
            }
        rec |= {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
        ep_rows.append(rec)
        start += n
        t_video += n / fps
    if not ep_rows:
        raise LeRobotDatasetError("no episodes to write")
    data = {}
    for k, parts in rows.items():
        arr = np.concatenate(parts)
        if k in DEFAULT_KEYS:
            data[k] = pa.array(arr.astype(np.float32 if k == "timestamp" else np.int64))
        else:
            data[k] = pa.FixedSizeListArray.from_arrays(
                pa.array(arr.reshape(-1).astype(np.float32)), arr.shape[1]
            )
    (root / "data" / "chunk-000").mkdir(parents=True)
    pq.write_table(pa.table(data), root / "data" / "chunk-000" / "file-000.parquet")
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist(ep_rows), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    )
    tasks = sorted(task_ids, key=task_ids.get)
    # LeRobot reads tasks.parquet with pandas, the task string as the index: say so in the
    # schema's pandas metadata, as pandas itself writes it.
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": "task",
                "field_name": "task",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
    }
    tasks_table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks)})
    tasks_table = tasks_table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)})
    pq.write_table(tasks_table, root / "meta" / "tasks.parquet")
    stats: dict[str, Any] = {}
    for c in cams:
        frames = np.concatenate(videos[c])
        encode_video(root / "videos" / c / "chunk-000" / "file-000.mp4", frames, fps, codec)
        stats[c] = image_stats(frames)
    for k in rows:
        stats[k] = feature_stats(np.concatenate(rows[k]).reshape(start, -1))
    full = dict(features)
    for c in cams:
        h, w, ch = features[c]["shape"]
        full[c] = {
            **features[c],
            "info": {
                "video.height": h,
                "video.width": w,
                "video.codec": _codec_name(codec),
                "video.pix_fmt": "yuv420p",
                "video.fps": fps,
                "video.channels": ch,
                "has_audio": False,
                "is_depth_map": False,
            },
        }
    full |= {"timestamp": {"dtype": "float32", "shape": [1], "names": None}}
    full |= {k: {"dtype": "int64", "shape": [1], "names": None} for k in DEFAULT_KEYS[1:]}
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": len(ep_rows),
        "total_frames": start,
        "total_tasks": len(tasks),
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": fps,
        "splits": {"train": f"0:{len(ep_rows)}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": full,
    }
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    (root / "meta" / "stats.json").write_text(json.dumps(stats, indent=4))


def _codec_name(codec: str) -> str:
    return {"libsvtav1": "av1", "libaom-av1": "av1", "libx264": "h264", "libopenh264": "h264"}.get(
        codec, codec
    )


def _as_iter(episodes: Iterable[EpisodeData]) -> Iterator[EpisodeData]:
    yield from episodes

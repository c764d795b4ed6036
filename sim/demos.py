"""Demonstration datasets: expert episodes stored compactly, images re-rendered on load.

A dataset is one .npz file (no pickle) holding, per episode, the scene, the expert's side and
instruction template, and per step the joint state and the action label. The arm executes the
expert's plan plus correlated noise while the label is the clean plan (DART-style noise
injection), so the states cover the neighbourhood of each path and the labels lead back to it.
Images are not stored: they are a pure function of (scene, joint positions) and are rendered by
the data loader, which keeps a 2,000-episode set at ~5 MB instead of ~1.5 GB of frames.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import LegatoError
from edge.outputs import atomic_file
from sim.env import ReachEnv
from sim.episodes import sample_episodes
from sim.expert import expert_actions
from sim.scene import FIELDS, Scenes
from sim.task import TaskConfig

FORMAT_VERSION = 1


class DatasetError(LegatoError, ValueError):
    """A dataset file is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class Demos:
    """Episodes e = 0..E-1; step arrays are concatenated over episodes, episode e owning rows
    offsets[e]:offsets[e + 1]. q, qd (T, j) state before the step; action (T, j) joint targets."""

    task: TaskConfig
    seed: int
    scenes: Scenes
    side: np.ndarray  # (E,) +1 / -1
    template: np.ndarray  # (E,)
    success: np.ndarray  # (E,) bool
    offsets: np.ndarray  # (E + 1,)
    q: np.ndarray
    qd: np.ndarray
    action: np.ndarray

    @property
    def num_episodes(self) -> int:
        return len(self.side)

    def describe(self) -> dict:
        return {
            "episodes": self.num_episodes,
            "steps": int(self.offsets[-1]),
            "seed": self.seed,
            "left_fraction": float(np.mean(self.side > 0)),
            "expert_success": float(np.mean(self.success)),
        }


def generate(
    task: TaskConfig, seed: int, episodes: int, batch: int = 200, progress=None, settle: int = 25
) -> Demos:
    """Roll out the expert on `episodes` episodes of the set with this seed, recording each
    successful episode until `settle` control steps after its success."""
    parts = []
    for first in range(0, episodes, batch):
        count = min(batch, episodes - first)
        spec = sample_episodes(task, seed, count, first)
        # Recording goes on for `settle` steps after success, so the chunks of the last states
        # carry the rest of the approach to the target's centre and the hold, instead of the
        # action at the moment the tolerance was crossed repeated.
        env = ReachEnv(task, spec.scenes, spec.template, stop_on_success=False)
        # DART-style noise injection: the arm executes the noisy targets, the dataset records the
        # clean plan as the label, so off-path states are labelled with the way back to the path.
        executed = expert_actions(task.arm, spec.scenes, spec.side, task.max_steps, task.expert, spec.noise)
        actions = expert_actions(task.arm, spec.scenes, spec.side, task.max_steps, task.expert, None)
        qs, qds, acts, alive = [], [], [], []
        for k in range(task.max_steps):
            settled = env.success & (k >= env.steps_to_success + settle)
            alive.append(~env.done & ~settled)
            if not alive[-1].any():
                alive.pop()
                break
            qs.append(env.q.copy())
            qds.append(env.qd.copy())
            acts.append(actions[:, k])
            env.step(executed[:, k])
        alive_a = np.stack(alive, 1)  # (b, t)
        lengths = alive_a.sum(1)
        q_a, qd_a, act_a = (np.stack(x, 1) for x in (qs, qds, acts))
        parts.append((spec, env.success.copy(), lengths, q_a, qd_a, act_a))
        if progress is not None:
            progress(first + count)
    rows = [
        (p[3][i, : p[2][i]], p[4][i, : p[2][i]], p[5][i, : p[2][i]]) for p in parts for i in range(len(p[2]))
    ]
    lengths = np.array([len(r[0]) for r in rows])
    return Demos(
        task=task,
        seed=seed,
        scenes=Scenes.concat([p[0].scenes for p in parts]),
        side=np.concatenate([p[0].side for p in parts]).astype(np.int8),
        template=np.concatenate([p[0].template for p in parts]).astype(np.int64),
        success=np.concatenate([p[1] for p in parts]),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        q=np.concatenate([r[0] for r in rows]).astype(np.float32),
        qd=np.concatenate([r[1] for r in rows]).astype(np.float32),
        action=np.concatenate([r[2] for r in rows]).astype(np.float32),
    )


def save(demos: Demos, path: str | Path, replace: bool = True) -> None:
    """Write the dataset atomically (edge.outputs.atomic_file); `replace` allows overwriting."""
    meta = {"format_version": FORMAT_VERSION, "seed": demos.seed, "task": demos.task.to_dict()}
    arrays = {f"scene_{f}": getattr(demos.scenes, f) for f in FIELDS}
    arrays.update(
        side=demos.side, template=demos.template, success=demos.success, offsets=demos.offsets,
        q=demos.q, qd=demos.qd, action=demos.action,
    )  # fmt: skip
    atomic_file(
        path,
        lambda f: np.savez_compressed(f, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays),
        replace=replace,
        what="dataset",
        own=is_dataset,
    )


def is_dataset(path: str | Path) -> bool:
    """True if `path` is a readable .npz written by save() (so it may be replaced)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
        return isinstance(meta, dict) and meta.get("format_version") == FORMAT_VERSION
    except Exception:  # any unreadable file is foreign
        return False


def load(path: str | Path) -> Demos:
    """Load and validate a dataset; any problem raises DatasetError with a one-line reason."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset not found: {path} (make one with `legato sim demos --out {path}`)")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        meta = json.loads(bytes(data.pop("meta")).decode())
    except Exception as e:  # zipfile, json and numpy each raise their own types on corrupt files
        raise DatasetError(f"dataset {path} is unreadable or corrupt: {type(e).__name__}: {e}") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"dataset {path}: meta must be a JSON object, not {type(meta).__name__}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            f"dataset {path} has format {meta.get('format_version')}, expected {FORMAT_VERSION}"
        )
    need = [f"scene_{f}" for f in FIELDS] + ["side", "template", "success", "offsets", "q", "qd", "action"]
    missing = [k for k in need if k not in data]
    if missing:
        raise DatasetError(f"dataset {path} lacks arrays: {', '.join(missing)}")
    try:
        task = TaskConfig.from_dict(meta["task"])
        seed = int(meta["seed"])
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"dataset {path}: meta is invalid ({type(e).__name__}: {e})") from None
    offsets = data["offsets"]
    if offsets.ndim != 1 or offsets.dtype.kind not in "iu" or len(offsets) < 2 or offsets[0] != 0:
        raise DatasetError(
            f"dataset {path}: offsets must be integers starting at 0, one per episode plus one"
        )
    e, t, j = len(data["side"]), int(offsets[-1]), task.arm.num_joints
    for k in ("side", "template", "success"):
        if data[k].shape != (e,):
            raise DatasetError(f"dataset {path}: {k} has shape {data[k].shape}, expected {(e,)}")
    if data["template"].dtype.kind not in "iu" or data["success"].dtype != bool:
        raise DatasetError(f"dataset {path}: template must be integers and success booleans")
    for k in ("q", "qd", "action"):
        if data[k].shape != (t, j):
            raise DatasetError(f"dataset {path}: {k} has shape {data[k].shape}, expected {(t, j)}")
    if data["offsets"].shape != (e + 1,) or np.any(np.diff(data["offsets"]) <= 0):
        raise DatasetError(f"dataset {path}: episode offsets are inconsistent")
    if not all(np.all(np.isfinite(data[k])) for k in ("q", "qd", "action")):
        raise DatasetError(f"dataset {path}: non-finite values in states or actions")
    scenes = Scenes(*(data[f"scene_{f}"] for f in FIELDS))
    bad = [f for f in FIELDS if len(getattr(scenes, f)) != e]
    if bad:
        raise DatasetError(
            f"dataset {path}: scene arrays {', '.join(bad)} do not have one row per episode ({e})"
        )
    if np.any(scenes.instructed < 0) or np.any(scenes.instructed >= scenes.targets.shape[1]):
        raise DatasetError(f"dataset {path}: instructed target index out of range")
    return Demos(
        task=task, seed=seed, scenes=scenes, side=data["side"], template=data["template"],
        success=data["success"], offsets=data["offsets"], q=data["q"], qd=data["qd"], action=data["action"],
    )  # fmt: skip

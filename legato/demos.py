"""Demonstration datasets: expert episodes stored compactly, images re-rendered on load.

A dataset is one .npz file (no pickle) holding, per episode, the scene (the task's record of
it), the expert's side (route) and instruction template, and per step the policy's state and
the action label. The robot executes the expert's action plus correlated noise while the label
is the clean action (DART-style noise injection), so the states cover the neighbourhood of each
path and the labels lead back to it. Planar-arm images are not stored: they are a pure function
of (scene, joint positions) and are rendered by the data loader, which keeps a 2,000-episode set
at ~5 MB instead of ~1.5 GB of frames. Any registered task (sim.tasks) writes the same format.

Format 2 stores the state as one array (planar arm: joint positions then velocities, which is
what format 1 kept as q and qd); format 1 files still load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import LegatoError
from edge.outputs import atomic_file
from sim.env import ReachEnv
from sim.episodes import sample_episodes
from sim.errors import SimError
from sim.expert import expert_actions
from sim.scene import Scenes
from sim.tasks import PUSH_WALL, task_from_dict, task_name

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


class DatasetError(LegatoError, ValueError):
    """A dataset file is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class Demos:
    """Episodes e = 0..E-1; step arrays are concatenated over episodes, episode e owning rows
    offsets[e]:offsets[e + 1]. state (T, s) the policy's state before the step (planar arm:
    joint positions then velocities); action (T, a) the label (joint targets; push-wall: hand
    targets and gripper effort)."""

    task: Any  # a registered task's config (sim.tasks)
    seed: int
    scenes: Any  # the task's per-episode record (sim.scene.Scenes for the planar arm)
    side: np.ndarray  # (E,) +1 / -1: the expert's side or route
    template: np.ndarray  # (E,)
    success: np.ndarray  # (E,) bool
    offsets: np.ndarray  # (E + 1,)
    state: np.ndarray
    action: np.ndarray

    @property
    def num_episodes(self) -> int:
        return len(self.side)

    @property
    def q(self) -> np.ndarray:
        """(T, a): the state's first a entries, the quantities the actions command."""
        return self.state[:, : self.action.shape[1]]

    @property
    def qd(self) -> np.ndarray:
        """(T, j) joint velocities of the planar arm (the second half of its state)."""
        j = self.action.shape[1]
        return self.state[:, j : 2 * j]

    def describe(self) -> dict:
        return {
            "episodes": self.num_episodes,
            "steps": int(self.offsets[-1]),
            "seed": self.seed,
            "left_fraction": float(np.mean(self.side > 0)),
            "expert_success": float(np.mean(self.success)),
            "task": task_name(self.task),
        }


def generate(task: Any, seed: int, episodes: int, batch: int = 200, progress=None, settle: int = 25) -> Demos:
    """Roll out the expert on `episodes` episodes of the set with this seed, recording each
    successful episode until `settle` control steps after its success."""
    if task_name(task) == PUSH_WALL:
        from sim import pushwall

        fields = pushwall.generate(
            task, seed, episodes, batch=min(batch, 100), progress=progress, settle=settle
        )
        return Demos(task=task, seed=seed, **fields)
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
        state=np.concatenate([np.concatenate([r[0], r[1]], -1) for r in rows]).astype(np.float32),
        action=np.concatenate([r[2] for r in rows]).astype(np.float32),
    )


def save(demos: Demos, path: str | Path, replace: bool = True) -> None:
    """Write the dataset atomically (edge.outputs.atomic_file); `replace` allows overwriting."""
    meta = {"format_version": FORMAT_VERSION, "seed": demos.seed, "task": demos.task.to_dict()}
    arrays = {f"scene_{f}": getattr(demos.scenes, f) for f in type(demos.scenes).FIELDS}
    arrays.update(
        side=demos.side, template=demos.template, success=demos.success, offsets=demos.offsets,
        state=demos.state, action=demos.action,
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
        return isinstance(meta, dict) and meta.get("format_version") in READABLE_VERSIONS
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
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        raise DatasetError(
            f"dataset {path} has format {version}, expected one of {', '.join(map(str, READABLE_VERSIONS))}"
        )
    try:
        task = task_from_dict(meta["task"])
        seed = int(meta["seed"])
    except (KeyError, TypeError, ValueError, SimError) as e:
        raise DatasetError(f"dataset {path}: meta is invalid ({type(e).__name__}: {e})") from None
    scene_cls = _scenes_class(task)
    steps = ["q", "qd", "action"] if version == 1 else ["state", "action"]
    need = [f"scene_{f}" for f in scene_cls.FIELDS] + ["side", "template", "success", "offsets", *steps]
    missing = [k for k in need if k not in data]
    if missing:
        raise DatasetError(f"dataset {path} lacks arrays: {', '.join(missing)}")
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
    for k in steps:
        if data[k].ndim != 2 or len(data[k]) != t or (k != "state" and data[k].shape[1] != j):
            want = f"({t}, s)" if k == "state" else str((t, j))
            raise DatasetError(f"dataset {path}: {k} has shape {data[k].shape}, expected {want}")
    if data["offsets"].shape != (e + 1,) or np.any(np.diff(data["offsets"]) <= 0):
        raise DatasetError(f"dataset {path}: episode offsets are inconsistent")
    if not all(np.all(np.isfinite(data[k])) for k in steps):
        raise DatasetError(f"dataset {path}: non-finite values in states or actions")
    state = np.concatenate([data["q"], data["qd"]], -1) if version == 1 else data["state"]
    if state.shape[1] < j:
        raise DatasetError(f"dataset {path}: state has {state.shape[1]} entries, fewer than the {j} actions")
    scenes = scene_cls(*(data[f"scene_{f}"] for f in scene_cls.FIELDS))
    bad = [f for f in scene_cls.FIELDS if len(getattr(scenes, f)) != e]
    if bad:
        raise DatasetError(
            f"dataset {path}: scene arrays {', '.join(bad)} do not have one row per episode ({e})"
        )
    if scene_cls is Scenes and (
        np.any(scenes.instructed < 0) or np.any(scenes.instructed >= scenes.targets.shape[1])
    ):
        raise DatasetError(f"dataset {path}: instructed target index out of range")
    return Demos(
        task=task, seed=seed, scenes=scenes, side=data["side"], template=data["template"],
        success=data["success"], offsets=data["offsets"], state=state.astype(np.float32),
        action=data["action"],
    )  # fmt: skip


def _scenes_class(task: Any) -> type:
    if task_name(task) == PUSH_WALL:
        from sim.pushwall import PushWallScenes

        return PushWallScenes
    return Scenes

"""The task registry: one name per simulated task, and what training and evaluation ask of it.

Every task provides a frozen config (serialised into datasets and checkpoints, with its name)
and an environment with the interface of sim.env.ReachEnv: observe() -> (image, tokens,
state), step(targets), done / all_done / success / collided / steps_to_success /
rejected_actions, q (the commanded quantities as measured), end_effector(), and for the mode
metric decision_open() (the route is still open) and route_labels(chunk) (+1 / -1 / 0 per plan).

- planar-reach: the project's own 3-joint arm (sim.env), camera + instruction.
- metaworld-push-wall: MetaWorld's push-wall-v3 with a bimodal expert (sim.pushwall), state only
  by default; needs the `metaworld` extra.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.errors import UnknownTask
from sim.task import TaskConfig

PLANAR = "planar-reach"
PUSH_WALL = "metaworld-push-wall"
TASK_NAMES: tuple[str, ...] = (PLANAR, PUSH_WALL)


def default_task(name: str) -> Any:
    """The default config of a task by name."""
    if name == PLANAR:
        return TaskConfig()
    if name == PUSH_WALL:
        from sim.pushwall import PushWallConfig

        return PushWallConfig()
    raise UnknownTask(f"unknown task {name!r}; choose one of {', '.join(TASK_NAMES)}")


def task_name(task: Any) -> str:
    return str(getattr(task, "name", PLANAR))


def task_from_dict(d: dict[str, Any]) -> Any:
    """A task config from its JSON form (a dataset's or a checkpoint's); no name = planar-reach,
    the only task before the registry existed."""
    if not isinstance(d, dict):
        raise UnknownTask(f"task description must be an object, not {type(d).__name__}")
    name = d.get("name", PLANAR)
    if name == PLANAR:
        return TaskConfig.from_dict(d)
    if name == PUSH_WALL:
        from sim.pushwall import PushWallConfig

        return PushWallConfig.from_dict(d)
    raise UnknownTask(f"unknown task {name!r}; this version knows {', '.join(TASK_NAMES)}")


def canonical_task(d: dict[str, Any]) -> str:
    """A task's JSON form as one comparable string: checkpoints written before tasks had names
    (no "name" = planar-reach) compare equal to today's of the same task."""
    import json

    return json.dumps(task_from_dict(d).to_dict(), sort_keys=True)


def make_env(task: Any, scenes: Any, templates: np.ndarray | None = None, stop_on_success: bool = True):
    """A batched environment for b episodes of the task."""
    if task_name(task) == PUSH_WALL:
        from sim.pushwall import PushWallEnv

        return PushWallEnv(task, scenes, templates, stop_on_success=stop_on_success)
    from sim.env import ReachEnv

    return ReachEnv(task, scenes, templates, stop_on_success=stop_on_success)


def policy_io(task: Any) -> dict[str, Any]:
    """What a policy for the task takes and gives: action_dim, state_dim, image_hw, vocab_size,
    max_tokens (PolicyConfig fields)."""
    if task_name(task) == PUSH_WALL:
        cam = task.camera
        image_hw = (cam.height, cam.width) if cam.enabled else (0, 0)
        return {"action_dim": 4, "state_dim": 39, "image_hw": image_hw, "vocab_size": 2, "max_tokens": 1}
    from sim.language import MAX_TOKENS, VOCAB

    j = task.arm.num_joints
    return {"action_dim": j, "state_dim": 2 * j, "image_hw": (task.camera.height, task.camera.width),
            "vocab_size": len(VOCAB), "max_tokens": MAX_TOKENS}  # fmt: skip

"""The reach task as a batched environment: b arms stepped in lockstep at the control rate.

An episode ends on success (end effector within tolerance of the instructed target), on a
collision of any link with the obstacle (failure), or at max_steps (failure). Finished
episodes are frozen: later actions for them are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.arm import end_effector, motor_step
from sim.camera import Camera
from sim.language import instruction, tokenize
from sim.scene import COLORS, Scenes, collides, reached, side_of_path
from sim.task import TaskConfig


@dataclass(frozen=True)
class Observation:
    """What the policy sees: image (b, height, width, 3) uint8, instruction tokens (b, l) int64,
    proprio state (b, 2 j) float32 = joint positions (rad) then velocities (rad/s)."""

    image: np.ndarray
    tokens: np.ndarray
    state: np.ndarray


def instruction_tokens(scenes: Scenes, templates: np.ndarray) -> np.ndarray:
    """Token ids of each scene's instruction: (b, l) int64."""
    return np.stack(
        [tokenize(instruction(COLORS[k], int(t))) for k, t in zip(scenes.instructed, templates, strict=True)]
    )


class ReachEnv:
    def __init__(
        self,
        task: TaskConfig,
        scenes: Scenes,
        templates: np.ndarray | None = None,
        stop_on_success: bool = True,
    ) -> None:
        self.task, self.scenes = task, scenes
        self.stop_on_success = stop_on_success  # False: keep stepping after success (demo recording)
        self.camera = Camera(task.arm, task.scene, task.camera)
        templates = np.zeros(len(scenes), dtype=np.int64) if templates is None else templates
        self.tokens = instruction_tokens(scenes, templates)
        self.reset()

    def reset(self) -> None:
        b = len(self.scenes)
        self.q = self.scenes.q0.astype(np.float64).copy()
        self.qd = np.zeros_like(self.q)
        self.last_target = self.q.copy()
        self.t = 0
        self.success = np.zeros(b, dtype=bool)
        self.collided = np.zeros(b, dtype=bool)
        self.steps_to_success = np.full(b, -1, dtype=np.int64)
        self.rejected_actions = 0  # non-finite setpoints replaced by a hold

    @property
    def done(self) -> np.ndarray:
        finished = self.success & self.stop_on_success
        return finished | self.collided | (self.t >= self.task.max_steps)

    @property
    def all_done(self) -> bool:
        return bool(np.all(self.done))

    def state(self) -> np.ndarray:
        return np.concatenate([self.q, self.qd], -1).astype(np.float32)

    def observe(self) -> Observation:
        return Observation(self.camera.render(self.scenes, self.q), self.tokens, self.state())

    def end_effector(self) -> np.ndarray:
        return end_effector(self.task.arm, self.q)

    def decision_open(self) -> np.ndarray:
        """(b,) True while the arm has not passed the obstacle along the start -> goal line: a
        chunk planned now still chooses a side."""
        start = end_effector(self.task.arm, self.scenes.q0)
        axis = self.scenes.goal - start
        along = np.sum((self.end_effector() - start) * axis, -1)
        return along < np.sum((self.scenes.obstacle - start) * axis, -1)

    def route_labels(self, chunk: np.ndarray) -> np.ndarray:
        """(b,) the side of the obstacle each planned chunk (b, h, j) goes round: +1 left,
        -1 right, 0 undecided (sim.scene.side_of_path of its end-effector path)."""
        start = end_effector(self.task.arm, self.scenes.q0)
        plan = end_effector(self.task.arm, chunk.astype(np.float64))
        return side_of_path(start, self.scenes.goal, self.scenes.obstacle, plan)

    def step(self, action: np.ndarray) -> None:
        """Apply joint-position targets (b, j) rad for one control period."""
        arm = self.task.arm
        if action.shape != self.q.shape:
            raise ValueError(f"action shape {action.shape} != (b, j) = {self.q.shape}")
        finite = np.all(np.isfinite(action), axis=-1)
        self.rejected_actions += int(np.sum(~finite & ~self.done))
        # Safety: NaN never reaches a motor (hold instead); every target is clamped to limits.
        target = np.where(finite[:, None], np.nan_to_num(action), self.last_target)
        target = np.clip(target, arm.q_min, arm.q_max)
        active = ~self.done
        q, qd = motor_step(arm, self.q, self.qd, target)
        self.q = np.where(active[:, None], q, self.q)
        self.qd = np.where(active[:, None], qd, self.qd)
        self.last_target = np.where(active[:, None], target, self.last_target)
        self.t += 1
        hit = active & collides(arm, self.task.scene, self.scenes, self.q)
        ok = active & ~hit & ~self.success & reached(arm, self.task.scene, self.scenes, self.q)
        self.collided |= hit
        self.success |= ok
        self.steps_to_success = np.where(ok, self.t, self.steps_to_success)

"""Training batches from a demonstration set: observations rendered on the fly, action chunks
padded at episode ends by repeating the last action (the arm holds), everything normalised
(edge.normalize: actions relative to the state's commanded quantities, per chunk index).

What a task adds to the state (legato.data.TaskView): planar arm, the camera image rendered
from (scene, joint positions), the instruction's tokens, and the auxiliary targets (instructed
target and obstacle centres); push-wall (state only), an empty image, its one task token, and
the puck's and goal's (x, y) read from the state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.normalize import Normalizer
from legato.demos import Demos
from sim.tasks import PUSH_WALL, task_name


@dataclass(frozen=True)
class Batch:
    image: np.ndarray  # (b, H, W, 3) uint8
    tokens: np.ndarray  # (b, l) int64
    state: np.ndarray  # (b, s) normalised
    actions: np.ndarray  # (b, h, a) normalised chunk starting at the observation's step
    aux: np.ndarray  # (b, 4) auxiliary position targets (m), see TaskView
    rows: np.ndarray | None = None  # (b,) the dataset rows of the observations


class TaskView:
    """The task-specific half of a training observation, for dataset rows."""

    def __init__(self, demos: Demos) -> None:
        self.demos = demos
        self.push_wall = task_name(demos.task) == PUSH_WALL
        if self.push_wall:
            if demos.task.camera.enabled:
                raise ValueError("push-wall camera datasets are not supported for training yet (state only)")
            self.tokens = np.ones((demos.num_episodes, 1), np.int64)
        else:
            from sim.camera import Camera
            from sim.env import instruction_tokens

            self.camera = Camera(demos.task.arm, demos.task.scene, demos.task.camera)
            self.tokens = instruction_tokens(demos.scenes, demos.template)  # (E, l)

    def image(self, ep: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if self.push_wall:
            return np.zeros((len(rows), 0, 0, 3), np.uint8)
        return self.camera.render(self.demos.scenes.select(ep), self.demos.q[rows].astype(np.float64))

    def aux(self, ep: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if self.push_wall:  # puck (x, y) and goal (x, y) from MetaWorld's observation
            st = self.demos.state[rows]
            return np.concatenate([st[:, 4:6], st[:, 36:38]], -1).astype(np.float32)
        scenes = self.demos.scenes.select(ep)
        return np.concatenate([scenes.goal, scenes.obstacle], -1).astype(np.float32)


class ChunkSampler:
    """Uniformly samples (episode, step) pairs of successful expert episodes (the noisy expert
    occasionally clips the obstacle; those episodes are not imitated). Owns its RNG so each
    DDP rank draws differently."""

    def __init__(self, demos: Demos, norm: Normalizer | None, horizon: int, seed: int) -> None:
        self.demos, self.norm, self.horizon = demos, norm, horizon
        self.rng = np.random.default_rng(seed)
        self.view = TaskView(demos)
        self.tokens = self.view.tokens
        lengths = np.diff(demos.offsets)
        self.episode_of = np.repeat(np.arange(demos.num_episodes), lengths)  # (T,)
        last = demos.offsets[1:][self.episode_of] - 1  # (T,) last row of each row's episode
        rows = np.arange(len(self.episode_of))
        self.chunk_rows = np.minimum(rows[:, None] + np.arange(horizon)[None], last[:, None])  # (T, h)
        self.usable = np.flatnonzero(demos.success[self.episode_of])  # rows of successful episodes
        if len(self.usable) == 0:
            raise ValueError("the dataset has no successful expert episode to learn from")
        self.norm = norm if norm is not None else self.fit_normalizer()

    def states(self, rows: np.ndarray) -> np.ndarray:
        """Raw proprio state (b, s) of dataset rows."""
        return self.demos.state[rows]

    def chunks(self, rows: np.ndarray) -> np.ndarray:
        """Raw action chunks (b, h, a) starting at dataset rows."""
        return self.demos.action[self.chunk_rows[rows]]

    def fit_normalizer(self) -> Normalizer:
        """Statistics over every usable row of the set."""
        return Normalizer.fit(self.states(self.usable), self.chunks(self.usable))

    def sample(self, batch: int) -> Batch:
        rows = self.usable[self.rng.integers(len(self.usable), size=batch)]
        ep = self.episode_of[rows]
        state = self.states(rows)
        image, aux = self.view.image(ep, rows), self.view.aux(ep, rows)
        norm = self.norm
        return Batch(
            image, self.tokens[ep], norm.state(state), norm.action(self.chunks(rows), state), aux, rows
        )

    def observation(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image, tokens, normalised state) of dataset rows, as the policy sees them."""
        ep = self.episode_of[rows]
        return self.view.image(ep, rows), self.tokens[ep], self.norm.state(self.states(rows))

    def earlier(self, rows: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows - s clipped to each episode's first row, whether that is a full s earlier)."""
        first = self.demos.offsets[self.episode_of[rows]]
        prev = np.maximum(rows - s, first)
        return prev, prev == rows - s

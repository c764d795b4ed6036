"""Training batches from a demonstration set: observations rendered on the fly, action chunks
padded at episode ends by repeating the last action (the arm holds), everything normalised
(edge.normalize: actions relative to the current joint positions, per chunk index).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.normalize import Normalizer
from sim.camera import Camera
from sim.demos import Demos
from sim.env import instruction_tokens


@dataclass(frozen=True)
class Batch:
    image: np.ndarray  # (b, H, W, 3) uint8
    tokens: np.ndarray  # (b, l) int64
    state: np.ndarray  # (b, s) normalised
    actions: np.ndarray  # (b, h, a) normalised chunk starting at the observation's step
    aux: np.ndarray  # (b, 4) instructed target and obstacle centres (m): auxiliary targets


class ChunkSampler:
    """Uniformly samples (episode, step) pairs of successful expert episodes (the noisy expert
    occasionally clips the obstacle; those episodes are not imitated). Owns its RNG so each
    DDP rank draws differently."""

    def __init__(self, demos: Demos, norm: Normalizer | None, horizon: int, seed: int) -> None:
        self.demos, self.norm, self.horizon = demos, norm, horizon
        self.rng = np.random.default_rng(seed)
        self.camera = Camera(demos.task.arm, demos.task.scene, demos.task.camera)
        self.tokens = instruction_tokens(demos.scenes, demos.template)  # (E, l)
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
        """Raw proprio state (b, 2 j) of dataset rows."""
        return np.concatenate([self.demos.q[rows], self.demos.qd[rows]], -1)

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
        image = self.camera.render(self.demos.scenes.select(ep), self.demos.q[rows].astype(np.float64))
        norm = self.norm
        scenes = self.demos.scenes.select(ep)
        aux = np.concatenate([scenes.goal, scenes.obstacle], -1).astype(np.float32)
        return Batch(image, self.tokens[ep], norm.state(state), norm.action(self.chunks(rows), state), aux)

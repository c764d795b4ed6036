"""Training batches from a demonstration set: observations rendered on the fly, action chunks
padded at episode ends by repeating the last action (the arm holds), everything normalised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.camera import Camera
from sim.demos import Demos
from sim.env import instruction_tokens


@dataclass(frozen=True)
class Normalizer:
    """Per-dimension affine normalisation x_n = (x - mean) / std, stored with every checkpoint."""

    state_mean: np.ndarray  # (s,)
    state_std: np.ndarray
    action_mean: np.ndarray  # (a,)
    action_std: np.ndarray

    @staticmethod
    def fit(demos: Demos) -> Normalizer:
        state = np.concatenate([demos.q, demos.qd], -1)
        floor = 1e-2  # keeps near-constant dimensions from blowing up
        return Normalizer(
            state.mean(0), np.maximum(state.std(0), floor),
            demos.action.mean(0), np.maximum(demos.action.std(0), floor),
        )  # fmt: skip

    def state(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.state_mean) / self.state_std).astype(np.float32)

    def action(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.action_mean) / self.action_std).astype(np.float32)

    def unaction(self, x: np.ndarray) -> np.ndarray:
        return (x * self.action_std + self.action_mean).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        return {k: np.asarray(getattr(self, k), dtype=np.float64).tolist() for k in self.__dataclass_fields__}

    @staticmethod
    def from_dict(d: dict[str, list[float]]) -> Normalizer:
        return Normalizer(**{k: np.asarray(v, dtype=np.float32) for k, v in d.items()})


@dataclass(frozen=True)
class Batch:
    image: np.ndarray  # (b, H, W, 3) uint8
    tokens: np.ndarray  # (b, l) int64
    state: np.ndarray  # (b, s) normalised
    actions: np.ndarray  # (b, h, a) normalised chunk starting at the observation's step


class ChunkSampler:
    """Uniformly samples (episode, step) pairs of successful expert episodes (the noisy expert
    occasionally clips the obstacle; those episodes are not imitated). Owns its RNG so each
    DDP rank draws differently."""

    def __init__(self, demos: Demos, norm: Normalizer, horizon: int, seed: int) -> None:
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

    def sample(self, batch: int) -> Batch:
        rows = self.usable[self.rng.integers(len(self.usable), size=batch)]
        ep = self.episode_of[rows]
        d = self.demos
        state = np.concatenate([d.q[rows], d.qd[rows]], -1)
        image = self.camera.render(d.scenes.select(ep), d.q[rows].astype(np.float64))
        return Batch(
            image, self.tokens[ep], self.norm.state(state), self.norm.action(d.action[self.chunk_rows[rows]])
        )

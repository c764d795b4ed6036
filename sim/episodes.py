"""Episode generation: validated scenes, expert rollouts, and the per-episode seeding rule.

Seeding: episode i of a set with seed S draws everything (scene, side, template, noise) from
np.random.default_rng([S, i]), so an episode depends only on (S, i) and sets with different
seeds never share an episode. Training sets use seed 0 by default; evaluation uses 1000+.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.env import ReachEnv
from sim.expert import expert_actions
from sim.language import TEMPLATES
from sim.scene import Scenes, sample_scene
from sim.task import TaskConfig


@dataclass(frozen=True)
class EpisodeSpec:
    """Everything that defines a batch of b episodes."""

    scenes: Scenes  # the task's per-episode record (sim.pushwall.PushWallScenes for push-wall)
    side: np.ndarray  # (b,) +1 left / -1 right: the expert's choice
    template: np.ndarray  # (b,) instruction template index
    noise: np.ndarray  # (b, max_steps, a) white noise for the expert's actions


def run_expert(task: TaskConfig, scenes: Scenes, side: np.ndarray, noise: np.ndarray | None) -> ReachEnv:
    """Roll the expert out in a fresh environment; returns the finished environment."""
    env = ReachEnv(task, scenes)
    actions = expert_actions(task.arm, scenes, side, task.max_steps, task.expert, noise)
    for k in range(task.max_steps):
        env.step(actions[:, k])
        if env.all_done:
            break
    return env


def feasible_both_sides(task: TaskConfig, scenes: Scenes) -> np.ndarray:
    """(b,) bool: the noise-free expert succeeds going left and going right."""
    b = len(scenes)
    both = Scenes.concat([scenes, scenes])
    side = np.concatenate([np.ones(b), -np.ones(b)])
    ok = run_expert(task, both, side, None).success
    return ok[:b] & ok[b:]


def sample_episodes(task: TaskConfig, seed: int, count: int, first: int = 0) -> EpisodeSpec:
    """Episodes first..first+count-1 of the set with this seed, on scenes feasible both ways.
    Any registered task (sim.tasks): push-wall's episodes follow the same (seed, index) rule."""
    if getattr(task, "name", "planar-reach") == "metaworld-push-wall":
        from sim.pushwall import sample_episodes as push_wall_episodes

        return push_wall_episodes(task, seed, count, first)  # type: ignore[arg-type]
    rngs = [np.random.default_rng([seed, i]) for i in range(first, first + count)]
    chosen: list[Scenes | None] = [None] * count
    pending = list(range(count))
    for _ in range(50):
        if not pending:
            break
        cand = Scenes.concat([sample_scene(rngs[i], task.arm, task.scene) for i in pending])
        ok = feasible_both_sides(task, cand)
        for slot, i in enumerate(pending):
            if ok[slot]:
                chosen[i] = cand.select(np.array([slot]))
        pending = [i for i in pending if chosen[i] is None]
    if pending:
        raise RuntimeError(f"{len(pending)} scenes stayed infeasible after 50 draws: check the task config")
    j = task.arm.num_joints
    side = np.array([rng.choice([-1.0, 1.0]) for rng in rngs])
    template = np.array([rng.integers(len(TEMPLATES)) for rng in rngs])
    noise = np.stack([rng.standard_normal((task.max_steps, j)) for rng in rngs])
    return EpisodeSpec(Scenes.concat(chosen), side, template, noise)  # type: ignore[arg-type]

"""Closed-loop rollouts with a simulated inference delay (RTC's protocol), batched.

Timeline (t in control steps). Inference for chunk c starts at T_c and sees the observation
at T_c; chunk index i corresponds to time origin_c + i.
- Asynchronous methods (naive, rtc, rtc-train, legato): origin_c = T_c; the old chunk keeps
  executing for d steps, the new chunk takes over at index d (time T_c + d); the next
  inference starts at T_c + s, when the active chunk has reached index s, so the reference
  for the next chunk is active[s:]. Each chunk executes indices d..s+d-1.
- Synchronous: the arm holds its last target for d steps while the chunk is computed, then
  executes indices 0..s-1 (origin_c = T_c + d); the next inference starts at origin_c + s.
- The first chunk of every method is synchronous (no previous chunk to continue): the arm
  holds its start posture for d steps, then executes indices 0..s+d-1 (async) or 0..s-1.
All episodes of a batch share the schedule, so one batched inference serves them all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from edge.policy import ChunkPolicy, ChunkRequest
from sim.scene import Scenes
from sim.task import TaskConfig
from sim.tasks import make_env


@dataclass
class ChunkRecord:
    origin: int  # time of chunk index 0
    start: int  # time the chunk took over
    chunk: np.ndarray  # (b, h, a) raw joint targets
    alive: np.ndarray  # (b,) episodes still running when inference started
    ee_start: np.ndarray  # (b, k) end effector at inference start
    route_open: np.ndarray  # (b,) the route was still to be chosen when inference started
    route: np.ndarray  # (b,) the side or route the chunk's plan takes (+1 / -1 / 0 undecided)


@dataclass
class RolloutResult:
    method: str
    d: int
    s: int
    r: int
    success: np.ndarray  # (b,)
    collided: np.ndarray  # (b,)
    steps_to_success: np.ndarray  # (b,) -1 where not reached
    commanded: np.ndarray  # (b, T, a) executed joint targets, NaN after the episode ended
    joints: np.ndarray  # (b, T + 1, j) joint positions (push-wall: hand xyz and gripper)
    ee: np.ndarray  # (b, T + 1, k) end-effector positions
    scenes: Scenes | None = None
    chunks: list[ChunkRecord] = field(default_factory=list)
    infer_seconds: list[float] = field(default_factory=list)  # wall time of each batched inference
    rejected_actions: int = 0


def rollout(
    runner: ChunkPolicy,
    method: str,
    task: TaskConfig,
    scenes: Scenes,
    templates: np.ndarray,
    req: ChunkRequest,
    seed: int,
    max_steps: int | None = None,
    progress: bool = False,
) -> RolloutResult:
    """Run b episodes of any registered task in lockstep (scenes: the task's episode record);
    progress=True shows a bar of control steps on stderr."""
    env = make_env(task, scenes, templates)
    b, a, h = len(scenes), runner.spec.action_dim, runner.spec.horizon
    noise_dim = runner.adapter.action_pad  # the policy's own noise shape (padded action dims: LeRobot's)
    steps = max_steps or task.max_steps
    rng = np.random.default_rng(seed)
    d, s = req.d, req.s
    commanded = np.full((b, steps, a), np.nan, dtype=np.float32)
    joints = np.full((b, steps + 1, env.q.shape[1]), np.nan)
    ee = np.full((b, steps + 1, env.end_effector().shape[1]), np.nan)
    joints[:, 0], ee[:, 0] = env.q, env.end_effector()
    result = RolloutResult(
        method, d, s, req.r, env.success, env.collided, env.steps_to_success, commanded, joints, ee, scenes
    )

    # The hold before the first chunk is the env's own hold command, not q: on push-wall q[3] is
    # the gripper's measured opening (1.0 = open), which as a command is effort +1 (close).
    last_cmd = env.last_target.astype(np.float32).copy()
    active: ChunkRecord | None = None
    pending: ChunkRecord | None = None
    next_infer = 0

    def take_over(t: int, active: ChunkRecord | None, pending: ChunkRecord | None):
        if pending is not None and t == pending.start:
            result.chunks.append(pending)
            return pending, None
        return active, pending

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc=f"rollout {method} d={d}", unit="step", leave=False)
    for t in range(steps):
        if bar is not None:
            bar.update(1)
            bar.set_postfix(done=f"{int(env.done.sum())}/{b}")
        if env.all_done:
            break
        # Take over before and after inference: with d == s a chunk becomes active at the very
        # step the next inference starts (which continues from it); with d == 0 the chunk
        # computed at t is executed from t.
        active, pending = take_over(t, active, pending)
        if t == next_infer:
            obs = env.observe()
            eps = rng.standard_normal((b, h, noise_dim)).astype(np.float32)
            first = active is None
            prev = None if first or method == "sync" else active.chunk
            tic = time.perf_counter()
            new = runner.chunk(method, obs, prev, req, eps)
            result.infer_seconds.append(time.perf_counter() - tic)
            origin = t + d if (first or method == "sync") else t
            pending = ChunkRecord(origin, t + d, new, ~env.done, env.end_effector(), env.decision_open(),
                                  env.route_labels(new))  # fmt: skip
            next_infer = origin + s
            if method == "sync":
                active = None  # hold while computing
        active, pending = take_over(t, active, pending)
        if active is not None:
            last_cmd = active.chunk[:, t - active.origin]
        alive = ~env.done
        commanded[alive, t] = last_cmd[alive]
        env.step(last_cmd.astype(np.float64))
        joints[alive, t + 1], ee[alive, t + 1] = env.q[alive], env.end_effector()[alive]
    if bar is not None:
        bar.close()
    result.success, result.collided = env.success.copy(), env.collided.copy()
    result.steps_to_success = env.steps_to_success.copy()
    result.rejected_actions = env.rejected_actions
    return result


def summarize(res: RolloutResult, control_hz: float) -> dict[str, float]:
    """Success rate and completion time (control steps and seconds, over successes)."""
    ok = res.success
    steps = res.steps_to_success[ok]
    return {
        "episodes": len(ok),
        "success_rate": float(ok.mean()),
        "collision_rate": float(res.collided.mean()),
        "completion_steps": float(steps.mean()) if len(steps) else float("nan"),
        "completion_s": float(steps.mean() / control_hz) if len(steps) else float("nan"),
    }


def expert_rollout(task: TaskConfig, spec, max_steps: int | None = None) -> RolloutResult:
    """The task's scripted expert, noise-free, on the episodes of `spec` (sim.episodes): the
    reference the methods' hesitation and completion time are read against. No chunks."""
    from sim.tasks import PUSH_WALL, task_name

    env = make_env(task, spec.scenes, spec.template)
    b = len(spec.scenes)
    steps = max_steps or task.max_steps
    a = env.q.shape[1]
    commanded = np.full((b, steps, a), np.nan, dtype=np.float32)
    joints = np.full((b, steps + 1, a), np.nan)
    ee = np.full((b, steps + 1, env.end_effector().shape[1]), np.nan)
    joints[:, 0], ee[:, 0] = env.q, env.end_effector()
    if task_name(task) == PUSH_WALL:
        from sim.pushwall import experts

        pols = experts()
        plan = None
    else:
        from sim.expert import expert_actions

        plan = expert_actions(task.arm, spec.scenes, spec.side, steps, task.expert, None)
    for t in range(steps):
        if env.all_done:
            break
        target = env.to_target(env.expert_actions(spec.side, pols)) if plan is None else plan[:, t]
        alive = ~env.done
        commanded[alive, t] = target[alive]
        env.step(np.asarray(target, dtype=np.float64))
        joints[alive, t + 1], ee[alive, t + 1] = env.q[alive], env.end_effector()[alive]
    outcome = (env.success.copy(), env.collided.copy(), env.steps_to_success.copy())
    return RolloutResult("expert", 0, 0, 0, *outcome, commanded, joints, ee, spec.scenes,
                         rejected_actions=env.rejected_actions)  # fmt: skip

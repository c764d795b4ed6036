"""Implementations of the simulator, checkpoint and demo subcommands of `legato`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from legato.errors import MethodError
from sim.task import TaskConfig


def sim_demos(a: argparse.Namespace) -> int:
    from tqdm import tqdm

    from sim import demos

    if a.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {a.episodes}")
    with tqdm(total=a.episodes, desc="expert episodes", unit="ep") as bar:
        data = demos.generate(TaskConfig(), a.seed, a.episodes, progress=lambda n: bar.update(n - bar.n))
    demos.save(data, a.out)
    desc = data.describe()
    print(f"wrote {a.out}: {desc['episodes']} episodes, {desc['steps']} steps, "
          f"expert success {desc['expert_success']:.3f}, left {desc['left_fraction']:.3f}")  # fmt: skip
    return 0


def default_ramp(ck, d: int, s: int) -> int:
    """The ramp that fills the overlap with the previous chunk: H - s - d, capped at r_max."""
    return max(0, min(ck.train_cfg.r_max, ck.policy_cfg.horizon - s - d))


def default_method(ck) -> str:
    return {"plain": "naive", "rtc-train": "rtc-train", "legato": "legato"}[ck.method]


def check_held_out(ck, seed: int) -> None:
    train_seed = ck.meta.get("data", {}).get("seed")
    if train_seed is not None and int(train_seed) == seed:
        raise MethodError(
            f"episode seed {seed} is the training set's seed: evaluate on held-out seeds (e.g. 1000)"
        )


def run_rollout(ck, method: str, episodes: int, d: int, s: int, r: int | None, seed: int):
    from legato.rollout import rollout
    from legato.runner import ChunkRequest, TorchPolicyRunner, check_request
    from sim.episodes import sample_episodes

    check_held_out(ck, seed)
    req = ChunkRequest(d=d, s=s, r=default_ramp(ck, d, s) if r is None else r)
    # One intra-op thread: the batches are small, and two threads contending with any other
    # torch process on a 2-core machine ran 6x slower in our measurements.
    runner = TorchPolicyRunner(ck, threads=1)
    check_request(method, ck, req)  # refuse before sampling episodes
    spec = sample_episodes(ck.task, seed, episodes)
    return rollout(runner, method, ck.task, spec.scenes, spec.template, req, seed=seed)


def sim_rollout(a: argparse.Namespace) -> int:
    from legato import checkpoint
    from legato.rollout import summarize

    ck = checkpoint.load(a.checkpoint)
    method = a.method or default_method(ck)
    res = run_rollout(ck, method, a.episodes, a.delay, a.horizon, a.ramp, a.seed)
    out = summarize(res, ck.task.arm.control_hz)
    print(json.dumps({"checkpoint": str(a.checkpoint), "method": method, "delay": a.delay,
                      "horizon": a.horizon, "ramp": res.r, "seed": a.seed, **out}))  # fmt: skip
    return 0


def checkpoint_info(a: argparse.Namespace) -> int:
    from legato import checkpoint

    ck = checkpoint.load(a.path)
    print(json.dumps({"path": str(ck.path), "method": ck.method, "policy": ck.policy_cfg.__dict__,
                      "schedule": {"d_max": ck.train_cfg.d_max, "r_max": ck.train_cfg.r_max},
                      **ck.meta}, indent=1, default=str))  # fmt: skip
    return 0


def checkpoint_publish(a: argparse.Namespace) -> int:
    from legato import checkpoint

    dst = checkpoint.publish(a.path, a.to)
    size = sum(f.stat().st_size for f in Path(dst).iterdir())
    print(f"published {a.path} -> {dst} ({size / 1e6:.2f} MB)")
    return 0


def demo(a: argparse.Namespace) -> int:
    from legato import checkpoint
    from legato.rollout import summarize

    ck = checkpoint.load(a.checkpoint)
    s, hz = 8, ck.task.arm.control_hz
    print(f"legato demo: {ck.path} ({ck.method}, H={ck.policy_cfg.horizon}, N={ck.policy_cfg.num_steps}), "
          f"{a.episodes} held-out episodes, simulated inference delay d={a.delay} steps "
          f"({1000 * a.delay / hz:.0f} ms at {hz:.0f} Hz), s={s}")  # fmt: skip
    res = run_rollout(ck, default_method(ck), a.episodes, a.delay, s, None, 1000)
    out = summarize(res, ck.task.arm.control_hz)
    per_chunk_ms = 1000 * np.median(res.infer_seconds) / a.episodes
    print(f"success {out['success_rate']:.1%}  collisions {out['collision_rate']:.1%}  "
          f"completion {out['completion_s']:.2f} s ({out['completion_steps']:.0f} steps)  "
          f"inference {per_chunk_ms:.2f} ms per chunk (batched over episodes, torch CPU)")  # fmt: skip
    try:
        from legato.plots import plot_episode
    except ImportError:
        return 0
    path = plot_episode(res, ck.task, 0, Path(a.out) / "episode.png", title=f"{ck.method}, d={a.delay}")
    print(f"example episode plot: {path}")
    return 0

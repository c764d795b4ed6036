"""The training-side subcommands of `legato`: train, sim, checkpoint.

``register`` is torch-free (argparse only); each command imports its heavy modules when it
runs. Every output goes through edge.outputs (refuse foreign targets, replace own ones only
with --force, swap atomically); every numeric option is range-checked while parsing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge.cliargs import int_in
from edge.errors import LegatoError, UsageError
from edge.policy import INFERENCE_METHODS, ChunkRequest, default_method, default_ramp
from sim.seeds import HELD_OUT_SEED
from sim.tasks import TASK_NAMES

EVAL_SEED = HELD_OUT_SEED  # held-out episodes: training sets use other seeds (sim/seeds.py)
MAX_EPISODES = 100_000


class PolicyFailure(LegatoError):
    """A run that produced nonsense (non-finite actions the simulator rejected)."""


def register(sub: argparse._SubParsersAction) -> None:
    from legato.train_args import add_arguments

    p = sub.add_parser("train", help="train a flow policy: legato | rtc-train | plain")
    add_arguments(p)
    p.set_defaults(func=_lazy("legato.train", "run"))

    p = sub.add_parser("sim", help="the simulated arm: demonstrations and closed-loop rollouts")
    ss = p.add_subparsers(dest="sim_cmd", required=True, metavar="{demos,rollout}")
    d = ss.add_parser("demos", help="write an expert demonstration dataset (.npz)")
    d.add_argument("--task", default="planar-reach", choices=list(TASK_NAMES),
                   help="simulated task (metaworld-push-wall needs the metaworld extra)")  # fmt: skip
    d.add_argument("--episodes", type=int_in(1, MAX_EPISODES), default=2000, help="expert episodes")
    d.add_argument(
        "--seed", type=int_in(0), default=0, help=f"episode set seed (evaluation uses {EVAL_SEED}+)"
    )
    d.add_argument("--out", required=True, help="dataset file (.npz), or folder with --format lerobot")
    d.add_argument("--format", choices=["npz", "lerobot"], default="npz",
                   help="npz (compact, images re-rendered on load) or lerobot (a LeRobotDataset v3 folder "
                        "with mp4 videos; needs the vla extra)")  # fmt: skip
    d.add_argument("--force", action="store_true", help="replace an existing dataset file")
    d.set_defaults(func=sim_demos)
    r = ss.add_parser("rollout", help="run a checkpoint in the simulator with a simulated inference delay")
    r.add_argument("--checkpoint", required=True, help="checkpoint folder")
    r.add_argument("--episodes", type=int_in(1, MAX_EPISODES), default=100, help="held-out episodes")
    _add_chunking(r)
    r.add_argument("--method", default=None, choices=list(INFERENCE_METHODS),
                   help="inference method (default: the checkpoint's own)")  # fmt: skip
    r.add_argument("--seed", type=int_in(0), default=EVAL_SEED, help="held-out episode set seed")
    r.add_argument("--out", default=None, help="also write a report folder (summary.json + episode plot)")
    r.add_argument("--force", action="store_true", help="replace an existing rollout report at --out")
    r.set_defaults(func=sim_rollout)

    p = sub.add_parser("checkpoint", help="inspect or publish checkpoints")
    ss = p.add_subparsers(dest="ck_cmd", required=True, metavar="{info,publish}")
    i = ss.add_parser("info", help="print a checkpoint's method, sizes and training statistics")
    i.add_argument("path", help="checkpoint or training-run folder")
    i.set_defaults(func=checkpoint_info)
    pub = ss.add_parser("publish", help="copy weights + config (no optimizer state) to a verified folder")
    pub.add_argument("path", help="checkpoint or training-run folder")
    pub.add_argument("--to", required=True,
                     help="destination checkpoint folder, e.g. models/my-legato (models/legato is the "
                          "reference that `make demo` runs)")  # fmt: skip
    pub.add_argument("--force", action="store_true", help="replace an existing checkpoint at --to")
    pub.set_defaults(func=checkpoint_publish)


def _add_chunking(p: argparse.ArgumentParser) -> None:
    p.add_argument("--delay", type=int_in(0), default=0, help="inference delay d in control steps")
    p.add_argument("--horizon", type=int_in(1), default=8, help="execution horizon s")
    p.add_argument(
        "--ramp", type=int_in(0), default=None, help="Legato ramp r (default: H - s - d, capped at r_max)"
    )


def _lazy(module: str, func: str):
    def call(args: argparse.Namespace) -> int:
        import importlib

        return getattr(importlib.import_module(module), func)(args)

    return call


def sim_demos(a: argparse.Namespace) -> int:
    from tqdm import tqdm

    from edge.outputs import check_file_target
    from legato import demos
    from sim.tasks import default_task

    task = default_task(getattr(a, "task", "planar-reach"))
    lerobot = getattr(a, "format", "npz") == "lerobot"
    if lerobot and a.task != "planar-reach":
        raise UsageError(
            f"--format lerobot writes the planar arm's demonstrations; --task {a.task} writes npz only"
        )
    if lerobot:  # a LeRobotDataset v3 folder (sim.lerobot_format, the lerobot engineer's hook)
        from edge.outputs import check_target

        check_target(a.out, "dataset", replace=a.force)
    else:
        check_file_target(
            a.out, replace=a.force, what="dataset", own=demos.is_dataset
        )  # before minutes of work
    with tqdm(total=a.episodes, desc="expert episodes", unit="ep") as bar:
        data = demos.generate(task, a.seed, a.episodes, progress=lambda n: bar.update(n - bar.n))
    if lerobot:
        from edge.outputs import atomic_folder
        from sim import lerobot_format

        with atomic_folder(a.out, "dataset", replace=a.force, meta={"seed": a.seed}) as tmp:
            lerobot_format.write(data, tmp)
    else:
        demos.save(data, a.out, replace=a.force)
    desc = data.describe()
    kept = f" ({int(data.success.sum())} successful ones written)" if lerobot else ""
    print(f"wrote {a.out}: {desc['episodes']} episodes{kept}, {desc['steps']} steps, "
          f"expert success {desc['expert_success']:.3f}, left {desc['left_fraction']:.3f}")  # fmt: skip
    return 0


def run_rollout(
    ck, method: str, episodes: int, d: int, s: int, r: int | None, seed: int, progress: bool = False
):
    """Closed-loop rollout of a checkpoint on held-out episodes; refuses before any work."""
    from edge.policy import check_held_out, check_request
    from legato.rollout import rollout
    from legato.runner import TorchPolicyRunner
    from sim.episodes import sample_episodes

    check_held_out(ck.train_seed, seed, str(ck.path))
    req = ChunkRequest(d=d, s=s, r=default_ramp(ck.spec, d, s) if r is None else r)
    check_request(method, ck.spec, req, source=str(ck.path))  # refuse before sampling episodes
    # One intra-op thread: the batches are small, and two threads contending with any other
    # torch process on a 2-core machine ran 6x slower in our measurements.
    if hasattr(ck, "policy"):  # a LeRobot policy folder (legato/adapters/lerobot_runner.py)
        from legato.adapters.lerobot_runner import LeRobotChunkRunner

        runner = LeRobotChunkRunner(ck, seed=seed, threads=1)
    else:
        runner = TorchPolicyRunner(ck, threads=1)
    spec = sample_episodes(ck.task, seed, episodes)
    return rollout(runner, method, ck.task, spec.scenes, spec.template, req, seed=seed, progress=progress)


def load_any_checkpoint(path: str):
    """A legato checkpoint, or a LeRobot policy folder (SmolVLA / pi0.5, needs the vla extra)."""
    from legato import checkpoint
    from legato.adapters.lerobot_files import is_lerobot_policy

    if is_lerobot_policy(path):
        from legato.adapters import lerobot_runner

        return lerobot_runner.load(path)
    return checkpoint.load(path)


def refuse_rejected(res, what: str) -> None:
    """A rollout whose actions the simulator had to reject ends non-zero, in one line."""
    if res.rejected_actions:
        raise PolicyFailure(
            f"{what}: the policy produced {res.rejected_actions} non-finite actions that the simulator "
            "rejected (held instead); the model's weights or statistics are broken"
        )


def sim_rollout(a: argparse.Namespace) -> int:
    from edge.outputs import atomic_folder, check_target
    from legato.rollout import summarize

    if a.out:
        check_target(a.out, "rollout", replace=a.force)
    ck = load_any_checkpoint(a.checkpoint)
    method = a.method or default_method(ck.spec)
    res = run_rollout(
        ck, method, a.episodes, a.delay, a.horizon, a.ramp, a.seed, progress=sys.stderr.isatty()
    )
    out = {"checkpoint": str(a.checkpoint), "method": method, "delay": a.delay, "horizon": a.horizon,
           "ramp": res.r, "seed": a.seed, "rejected_actions": res.rejected_actions,
           **summarize(res, ck.task.arm.control_hz)}  # fmt: skip
    print(json.dumps(out))
    if a.out:
        with atomic_folder(a.out, "rollout", replace=a.force) as tmp:
            (tmp / "summary.json").write_text(json.dumps(out, indent=1) + "\n")
            _episode_plot(res, ck, tmp / "episode.png", f"{method}, d={a.delay}")
        print(f"wrote {a.out}/summary.json and episode.png", file=sys.stderr)
    refuse_rejected(res, f"rollout of {a.checkpoint}")
    return 0


def _episode_plot(res, ck, path: Path, title: str) -> Path | None:
    try:
        from legato.plots import plot_episode
    except ImportError:  # matplotlib is in the train extra; the numbers stand without it
        return None
    return plot_episode(res, ck.task, 0, path, title=title)


def checkpoint_info(a: argparse.Namespace) -> int:
    from legato import checkpoint

    ck = checkpoint.load(a.path)
    print(json.dumps({"path": str(ck.path), "method": ck.method, "policy": ck.policy_cfg.__dict__,
                      "schedule": {"d_max": ck.train_cfg.d_max, "r_max": ck.train_cfg.r_max},
                      **ck.meta}, indent=1, default=str))  # fmt: skip
    return 0


def checkpoint_publish(a: argparse.Namespace) -> int:
    from legato import checkpoint
    from legato.adapters.lerobot_files import is_lerobot_policy

    if is_lerobot_policy(a.path):  # a LeRobot policy run (legato train --policy)
        from legato.adapters.lerobot_train import publish

        dst = publish(a.path, a.to, replace=a.force)
    else:
        dst = checkpoint.publish(a.path, a.to, replace=a.force)
    size = sum(f.stat().st_size for f in Path(dst).rglob("*") if f.is_file())
    print(f"published {a.path} -> {dst} ({size / 1e6:.2f} MB, verified)")
    return 0

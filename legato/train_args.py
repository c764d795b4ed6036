"""Command-line arguments of `legato train`, kept free of torch so `legato --help` stays light."""

from __future__ import annotations

import argparse
from dataclasses import fields

from edge.cliargs import float_in, int_in
from legato.config import METHODS, REGIMES, PolicyConfig, TrainConfig

AUGMENTATION_OPTIONS = (  # (flag, help, type); each flag names a TrainConfig field and takes its default
    ("--p-no-prefix", "fraction of examples trained with no reference (d = r = 0)", float_in(0.0, 1.0)),
    ("--prefix-noise", "std (rad) of the offset on a perturbed reference; 0 = off", float_in(0.0, 10.0)),
    ("--p-prefix-noise", "fraction of examples with a perturbed reference", float_in(0.0, 1.0)),
    ("--recovery", "steps over which a perturbed target returns to the expert's chunk", int_in(1, 1000)),
    (
        "--p-own-reference",
        "recover: fraction of examples whose reference is the model's own chunk",
        float_in(0.0, 1.0),
    ),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument("--data", required=True,
                   help="demonstration dataset: .npz from `legato sim demos`, or a LeRobotDataset v3 folder "
                        "(with --policy smolvla|pi05)")  # fmt: skip
    # LeRobot policies (legato/adapters/lerobot_train.py; the lerobot engineer's hook): the same
    # objectives, schedule and run folder rules on a SmolVLA / pi0.5 expert.
    p.add_argument(
        "--policy",
        default="reference",
        choices=["reference", "smolvla", "pi05"],
        help="reference (this project's model) or a LeRobot policy (needs the vla extra)",
    )
    p.add_argument("--action-norm", default="lerobot", choices=["lerobot", "state-relative"],
                   help="with --policy smolvla: the policy's own action statistics (LeRobot's MEAN_STD), "
                        "or actions relative to the joint state with per-index statistics (as the "
                        "reference model; recorded in legato.json)")  # fmt: skip
    p.add_argument("--init", default=None,
                   help="with --policy smolvla|pi05: a LeRobot policy folder to fine-tune, or a policy "
                        "config JSON for a fresh model (e.g. configs/smolvla-reduced.json)")  # fmt: skip
    p.add_argument("--method", default=d.method, choices=METHODS, help="training objective")
    p.add_argument("--out", required=True, help="run folder, e.g. runs/legato")
    p.add_argument(
        "--steps",
        type=int_in(1, 10_000_000),
        default=d.steps,
        help="optimizer steps (total, also with --resume)",
    )
    p.add_argument("--batch-obs", type=int_in(1, 4096), default=d.batch_obs, help="observations per step")
    p.add_argument("--draws", type=int_in(1, 64), default=d.draws, help="flow draws per observation")
    p.add_argument("--lr", type=float_in(0.0, 1.0, lo_open=True), default=d.lr, help="peak learning rate")
    p.add_argument("--regime", default="short", choices=list(REGIMES),
                   help="chunking regime: sets --horizon, --d-max and --r-max unless given "
                        "(short: H 16, d <= 4; paper: H 48, d <= 10, r <= 36)")  # fmt: skip
    p.add_argument(
        "--horizon", type=int_in(2, 1024), default=None, help="chunk length H (default: the regime's)"
    )
    p.add_argument("--width", type=int_in(8, 4096), default=PolicyConfig().width,
                   help="model width c (token width of both encoders; a multiple of 4 heads)")  # fmt: skip
    p.add_argument(
        "--d-max", type=int_in(0, 64), default=None, help="largest training delay (default: the regime's)"
    )
    p.add_argument(
        "--r-max", type=int_in(0, 1024), default=None, help="largest Legato ramp (default: the regime's)"
    )
    p.add_argument(
        "--t-sampling", default=d.t_sampling, choices=["grid", "continuous"], help="flow time draws"
    )
    p.add_argument(
        "--loss-weighting", default=d.loss_weighting, choices=["omega2", "mean"], help="loss weights"
    )
    p.add_argument(
        "--aux-weight",
        type=float_in(0.0),
        default=d.aux_weight,
        help="auxiliary position loss weight (LeRobot policies: "
        "predicting the dataset's observation.environment_state, where it has one)",
    )
    for flag, text, kind in AUGMENTATION_OPTIONS:
        default = getattr(d, flag[2:].replace("-", "_"))
        p.add_argument(flag, type=kind, default=default, help=f"legato: {text}")
    p.add_argument("--reference-target", default=d.reference_target, choices=["reference", "recover"],
                   help="legato: a perturbed reference's target rejoins the expert after the ramp "
                        "(reference) or right after the executed prefix (recover)")  # fmt: skip
    p.add_argument(
        "--velocity-form",
        default=PolicyConfig().velocity_form,
        choices=["factored", "direct", "corrective"],
        help="flow head output: A - eps times Legato's known factor, or the whole target",
    )
    p.add_argument("--ema-decay", type=float_in(0.0, 0.99999), default=d.ema_decay,
                   help="save an exponential moving average of the weights with this decay per step "
                        "(e.g. 0.999; 0 = the last step's weights)")  # fmt: skip
    p.add_argument("--device", default="cpu", help="torch device for the model, e.g. cuda (default cpu)")
    p.add_argument("--seed", type=int_in(0), default=d.seed, help="training seed")
    p.add_argument("--ckpt-every", type=int_in(1), default=d.ckpt_every, help="steps between checkpoints")
    p.add_argument(
        "--threads", type=int_in(0, 256), default=d.threads, help="torch threads; 0 = torch's default"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    mode.add_argument("--force", action="store_true", help="replace an existing run or checkpoint at --out")


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    """Every TrainConfig field the command line exposes (same name, dashes for underscores)."""
    regime = REGIMES[getattr(a, "regime", "short")]
    given = {**vars(a)}
    for name in ("d_max", "r_max"):
        if given.get(name) is None:
            given[name] = getattr(regime, name)
    return TrainConfig(**{f.name: given[f.name] for f in fields(TrainConfig) if f.name in given})


def horizon_from_args(a: argparse.Namespace) -> int:
    """The chunk length H: --horizon, or the regime's."""
    h = getattr(a, "horizon", None)
    return h if h is not None else REGIMES[getattr(a, "regime", "short")].horizon

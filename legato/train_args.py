"""Command-line arguments of `legato train`, kept free of torch so `legato --help` stays light."""

from __future__ import annotations

import argparse
from dataclasses import fields

from legato.config import METHODS, PolicyConfig, TrainConfig

AUGMENTATION_OPTIONS = (  # (flag, help); each flag names a TrainConfig field and takes its default
    ("--p-no-prefix", "fraction of examples trained with no reference (d = r = 0)"),
    ("--prefix-noise", "std (rad) of the offset on a perturbed reference; 0 = off"),
    ("--p-prefix-noise", "fraction of examples with a perturbed reference"),
    ("--recovery", "steps over which a perturbed target returns to the expert's chunk"),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument("--data", required=True, help="demonstration dataset (.npz from `legato sim demos`)")
    p.add_argument("--method", default=d.method, choices=METHODS)
    p.add_argument("--out", required=True, help="run folder, e.g. runs/legato")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-obs", type=int, default=d.batch_obs)
    p.add_argument("--draws", type=int, default=d.draws)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--d-max", type=int, default=d.d_max)
    p.add_argument("--r-max", type=int, default=d.r_max)
    p.add_argument("--t-sampling", default=d.t_sampling, choices=["grid", "continuous"])
    p.add_argument("--loss-weighting", default=d.loss_weighting, choices=["omega2", "mean"])
    p.add_argument("--aux-weight", type=float, default=d.aux_weight, help="auxiliary position loss weight")
    for flag, text in AUGMENTATION_OPTIONS:
        default = getattr(d, flag[2:].replace("-", "_"))
        p.add_argument(flag, type=type(default), default=default, help=f"legato: {text}")
    p.add_argument(
        "--velocity-form",
        default=PolicyConfig().velocity_form,
        choices=["factored", "direct"],
        help="flow head output: A - eps times Legato's known factor, or the whole target",
    )
    p.add_argument("--device", default="cpu", help="torch device for the model, e.g. cuda (default cpu)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--ckpt-every", type=int, default=d.ckpt_every)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    """Every TrainConfig field the command line exposes (same name, dashes for underscores)."""
    given = vars(a)
    return TrainConfig(**{f.name: given[f.name] for f in fields(TrainConfig) if f.name in given})

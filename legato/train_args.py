"""Command-line arguments of `legato train`, kept free of torch so `legato --help` stays light."""

from __future__ import annotations

import argparse

from legato.config import METHODS, TrainConfig


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
    p.add_argument(
        "--p-no-prefix",
        type=float,
        default=d.p_no_prefix,
        help="legato: fraction of examples trained with no reference (d = r = 0)",
    )
    p.add_argument(
        "--prefix-noise",
        type=float,
        default=d.prefix_noise,
        help="legato: std (rad) of the offset on a perturbed reference; 0 = off",
    )
    p.add_argument(
        "--p-prefix-noise",
        type=float,
        default=d.p_prefix_noise,
        help="legato: fraction of examples with a perturbed reference",
    )
    p.add_argument(
        "--recovery",
        type=int,
        default=d.recovery,
        help="legato: steps over which a perturbed target returns to the expert's chunk",
    )
    p.add_argument(
        "--velocity-form",
        default="factored",
        choices=["factored", "direct"],
        help="flow head output: A - eps times Legato's known factor, or the whole target",
    )
    p.add_argument("--device", default="cpu", help="torch device for the model, e.g. cuda (default cpu)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--ckpt-every", type=int, default=d.ckpt_every)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        method=a.method, steps=a.steps, batch_obs=a.batch_obs, draws=a.draws, lr=a.lr, d_max=a.d_max,
        r_max=a.r_max, t_sampling=a.t_sampling, loss_weighting=a.loss_weighting,
        aux_weight=a.aux_weight, p_no_prefix=a.p_no_prefix, prefix_noise=a.prefix_noise,
        p_prefix_noise=a.p_prefix_noise, recovery=a.recovery, seed=a.seed,
        ckpt_every=a.ckpt_every, threads=a.threads,
    )  # fmt: skip

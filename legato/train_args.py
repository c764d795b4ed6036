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
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--ckpt-every", type=int, default=d.ckpt_every)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        method=a.method, steps=a.steps, batch_obs=a.batch_obs, draws=a.draws, lr=a.lr, d_max=a.d_max,
        r_max=a.r_max, t_sampling=a.t_sampling, loss_weighting=a.loss_weighting,
        aux_weight=a.aux_weight, seed=a.seed,
        ckpt_every=a.ckpt_every, threads=a.threads,
    )  # fmt: skip

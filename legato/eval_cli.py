"""`legato eval`: the argument parser (torch-free); the harness lives in legato.evaluate."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.cliargs import int_in, int_list, name_list
from edge.policy import INFERENCE_METHODS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="compare chunking methods across inference delays (tables and plots)")
    p.add_argument("--checkpoints", nargs="+", default=["models/legato", "models/rtc-train", "models/plain"],
                   help="checkpoint folders; each inference method uses the one trained for it")  # fmt: skip
    p.add_argument("--methods", type=name_list(INFERENCE_METHODS), default=tuple(INFERENCE_METHODS),
                   help="inference methods")  # fmt: skip
    p.add_argument("--delays", type=int_list(0, 64), default=(0, 1, 2, 3, 4), help="inference delays d")
    p.add_argument("--horizons", type=int_list(1, 1024), default=(4, 8), help="execution horizons s")
    p.add_argument("--episodes", type=int_in(1, 100_000), default=200, help="held-out episodes per cell")
    p.add_argument("--seed", type=int_in(1000), default=1000, help="held-out episode set")
    p.add_argument("--ramp", type=int_in(0, 1024), default=None,
                   help="Legato ramp r (default H - s - d, capped at r_max)")  # fmt: skip
    p.add_argument("--no-final-blend", action="store_true", help="ablation: skip Legato's final blend")
    p.add_argument("--workers", type=int_in(1, 64), default=2, help="worker processes")
    p.add_argument(
        "--threads", type=int_in(0, 256), default=0, help="torch threads per worker (0: cores / workers)"
    )
    p.add_argument("--out", required=True, help="report folder, e.g. reports/main")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--force", action="store_true", help="replace an existing report at --out")
    mode.add_argument(
        "--resume", action="store_true", help="keep the cells an interrupted run of the same setup finished"
    )
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from legato.evaluate import EvalConfig, evaluate

    cfg = EvalConfig(
        checkpoints=tuple(a.checkpoints), methods=a.methods, delays=a.delays, horizons=a.horizons,
        episodes=a.episodes, seed=a.seed, ramp=a.ramp, final_blend=not a.no_final_blend, workers=a.workers,
        threads=a.threads,
    )  # fmt: skip
    report = evaluate(cfg, a.out, replace=a.force, resume=a.resume)
    print(Path(a.out, "results.md").read_text())
    resumed = (
        f" ({report['resumed_cells']} cells kept from the interrupted run)" if report["resumed_cells"] else ""
    )
    print(f"wrote {a.out}/results.json, results.md and plots in {report['wall_s']:.0f} s{resumed}")
    return 0

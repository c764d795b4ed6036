"""`legato eval`: the argument parser (torch-free); the harness lives in legato.evaluate."""

from __future__ import annotations

import argparse
from pathlib import Path


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="compare chunking methods across inference delays (tables and plots)")
    p.add_argument("--checkpoints", nargs="+", default=["models/legato", "models/rtc-train", "models/plain"],
                   help="checkpoint folders; each inference method uses the one trained for it")  # fmt: skip
    p.add_argument("--methods", type=_names, default=("naive", "sync", "rtc", "rtc-train", "legato"))
    p.add_argument("--delays", type=_ints, default=(0, 1, 2, 3, 4))
    p.add_argument("--horizons", type=_ints, default=(4, 8), help="execution horizons s")
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--seed", type=int, default=1000, help="held-out episode set (>= 1000)")
    p.add_argument(
        "--ramp", type=int, default=None, help="Legato ramp r (default H - s - d, capped at r_max)"
    )
    p.add_argument("--no-final-blend", action="store_true", help="ablation: skip Legato's final blend")
    p.add_argument("--workers", type=int, default=2, help="worker processes")
    p.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: cores / workers)")
    p.add_argument("--out", required=True, help="report folder, e.g. reports/main")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from legato.evaluate import EvalConfig, evaluate

    cfg = EvalConfig(
        checkpoints=tuple(a.checkpoints), methods=a.methods, delays=a.delays, horizons=a.horizons,
        episodes=a.episodes, seed=a.seed, ramp=a.ramp, final_blend=not a.no_final_blend, workers=a.workers,
        threads=a.threads,
    )  # fmt: skip
    report = evaluate(cfg, a.out)
    print(Path(a.out, "results.md").read_text())
    print(f"wrote {a.out}/results.json, results.md and plots in {report['wall_s']:.0f} s")
    return 0

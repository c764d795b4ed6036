"""`legato eval`: the argument parser (torch-free); the harness lives in legato.evaluate."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.cliargs import int_in, int_list, name_list
from edge.policy import INFERENCE_METHODS
from legato.config import REGIMES
from sim.seeds import HELD_OUT_SEED

EVAL_METHODS = (*INFERENCE_METHODS, "expert")  # "expert": the task's scripted expert, no checkpoint


def pair_list(text: str) -> tuple[tuple[str, str], ...]:
    """ "a:b,c:d" -> (("a", "b"), ("c", "d")), each name an evaluation method."""
    pairs = []
    for part in (x.strip() for x in text.split(",") if x.strip()):
        a, sep, b = part.partition(":")
        if not sep or a not in EVAL_METHODS or b not in EVAL_METHODS or a == b:
            raise argparse.ArgumentTypeError(
                f"expected pairs A:B of two methods from {', '.join(EVAL_METHODS)}, got {part!r}"
            )
        pairs.append((a, b))
    return tuple(pairs)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="compare chunking methods across inference delays (tables and plots)")
    p.add_argument("--checkpoints", nargs="+", default=["models/legato", "models/rtc-train", "models/plain"],
                   help="checkpoint folders; each inference method uses the one trained for it")  # fmt: skip
    p.add_argument("--methods", type=name_list(EVAL_METHODS), default=tuple(INFERENCE_METHODS),
                   help="inference methods (and 'expert', the task's scripted expert)")  # fmt: skip
    p.add_argument("--regime", default="short", choices=list(REGIMES),
                   help="default delays, horizons: short (0-4; s 4, 8), paper (0-10 by 2; s 12)")  # fmt: skip
    p.add_argument(
        "--delays", type=int_list(0, 64), default=None, help="inference delays d (default: the regime's)"
    )
    p.add_argument("--horizons", type=int_list(1, 1024), default=None,
                   help="execution horizons s (default: the regime's)")  # fmt: skip
    p.add_argument("--episodes", type=int_in(1, 100_000), default=200, help="held-out episodes per cell")
    p.add_argument("--seed", type=int_in(HELD_OUT_SEED), default=HELD_OUT_SEED, help="held-out episode set")
    p.add_argument("--ramp", type=int_in(0, 1024), default=None,
                   help="Legato ramp r (default H - s - d, capped at r_max)")  # fmt: skip
    p.add_argument("--no-final-blend", action="store_true", help="ablation: skip Legato's final blend")
    p.add_argument("--compare", type=pair_list, default=(("legato", "rtc"),),
                   help="paired comparisons A:B on the same episodes, with bootstrap intervals")  # fmt: skip
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
    c = sub.add_parser("compare", help="paired comparisons across two eval reports of the same episodes")
    c.add_argument(
        "a", metavar="REPORT:METHOD",
        help="method A and the report it ran in, e.g. reports/new:legato; R1:legato+R2:legato pools "
        "held-out sets (the i-th report of each side pairs with the i-th of A's)",
    )  # fmt: skip
    c.add_argument("b", nargs="+", metavar="REPORT:METHOD", help="one or more methods B to compare A against")
    c.add_argument(
        "--resamples", type=int_in(100, 1_000_000), default=4000, help="paired bootstrap resamples"
    )
    c.add_argument(
        "--plot", type=Path, metavar="FILE.png",
        help="also draw success against overlap inconsistency of every method named, through its delays",
    )  # fmt: skip
    c.add_argument("--force", action="store_true", help="replace an existing --plot file")
    c.set_defaults(func=run_compare)


def run_compare(a: argparse.Namespace) -> int:
    """Print A against each B, paired on the same episodes (legato.cross_compare)."""
    from edge.outputs import atomic_file, check_file_target
    from legato.cross_compare import (
        ReportCells,
        check_paired_sets,
        cross_compare,
        load_report,
        parse_side,
        pooled_report,
        trade_off,
    )
    from legato.report import paired_table

    if a.plot is not None:  # a target that cannot be written fails before the bootstrap runs
        check_file_target(a.plot, replace=a.force, what="plot")
    paths_a, method_a = parse_side(a.a)
    parts_a = [load_report(p) for p in paths_a]
    rep_a, label_a = pooled_report(parts_a), _side_label(paths_a, method_a)
    rows: list[dict] = []
    lines: dict[str, tuple[ReportCells, str]] = {}
    for side in a.b:
        paths_b, method_b = parse_side(side)
        parts_b = [load_report(p) for p in paths_b]
        check_paired_sets(parts_a, parts_b)
        rep_b, label_b = pooled_report(parts_b), _side_label(paths_b, method_b)
        rows += cross_compare(rep_a, method_a, rep_b, method_b, a.resamples, label_a=label_a, label_b=label_b)
        lines.setdefault(label_b, (rep_b, method_b))
    seeds = ", ".join(str(p.seed) for p in parts_a)
    print(f"Episodes: {rep_a.episodes} (seed {seeds}), paired across reports")
    print(paired_table(rows))
    if a.plot is not None:
        from legato.plots import plot_trade_off  # matplotlib only when a plot is asked for

        drawn = {label_a: trade_off(rep_a, method_a)}
        drawn.update({label: trade_off(r, m) for label, (r, m) in lines.items() if label not in drawn})
        atomic_file(a.plot, plot_trade_off(drawn), replace=a.force, what="plot")
        print(f"wrote {a.plot}")
    return 0


def _side_label(paths: list[Path], method: str) -> str:
    """ "round6-seed1000+round6-seed2000:legato": the folder names of one side's reports."""
    return f"{'+'.join(p.name for p in paths)}:{method}"


def run(a: argparse.Namespace) -> int:
    import sys

    from legato.evaluate import EvalConfig, EvalInterrupted, evaluate

    regime = REGIMES[a.regime]
    horizons = a.horizons or ((4, 8) if regime.name == "short" else (regime.s,))
    compare = tuple(p for p in a.compare if p[0] in a.methods and p[1] in a.methods)
    cfg = EvalConfig(
        checkpoints=tuple(a.checkpoints), methods=a.methods, delays=a.delays or regime.delays,
        horizons=horizons,
        episodes=a.episodes, seed=a.seed, ramp=a.ramp, final_blend=not a.no_final_blend, workers=a.workers,
        threads=a.threads, compare=compare, example=(3 if regime.name == "short" else 6, max(horizons)),
    )  # fmt: skip
    try:
        report = evaluate(cfg, a.out, replace=a.force, resume=a.resume)
    except EvalInterrupted as e:  # Ctrl-C: say how to finish, exit as an interrupted command does
        print(f"legato: {e}", file=sys.stderr)
        return 130
    print(Path(a.out, "results.md").read_text())
    resumed = (
        f" ({report['resumed_cells']} cells kept from the interrupted run)" if report["resumed_cells"] else ""
    )
    print(f"wrote {a.out}/results.json, results.md and plots in {report['wall_s']:.0f} s{resumed}")
    return 0

"""The `legato` command line: one entry point, subcommands imported lazily.

Heavy modules (torch, matplotlib) load only inside the subcommand that needs them, so
`legato --help`, `legato firmware ...` and the robot-side commands work without torch.
Known errors print one line (`legato: error: ...`) and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable

EVAL_SEED = 1000  # held-out episodes: training sets use other seeds (see sim.episodes)


def _lazy(module: str, func: str) -> Callable[[argparse.Namespace], int]:
    def call(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), func)(args)

    return call


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a flow policy: legato | rtc-train | plain")
    from legato.train_args import add_arguments

    add_arguments(p)
    p.set_defaults(func=_lazy("legato.train", "run"))


def _add_sim(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sim", help="the simulated arm: demonstrations and closed-loop rollouts")
    ss = p.add_subparsers(dest="sim_cmd", required=True)
    d = ss.add_parser("demos", help="write an expert demonstration dataset (.npz)")
    d.add_argument("--episodes", type=int, default=2000)
    d.add_argument("--seed", type=int, default=0, help="episode set seed (evaluation uses 1000+)")
    d.add_argument("--out", required=True)
    d.set_defaults(func=_lazy("legato.commands", "sim_demos"))
    r = ss.add_parser("rollout", help="run a checkpoint in the simulator with a simulated inference delay")
    r.add_argument("--checkpoint", required=True)
    r.add_argument("--episodes", type=int, default=100)
    r.add_argument("--delay", type=int, default=0, help="inference delay d in control steps")
    r.add_argument("--horizon", type=int, default=8, help="execution horizon s")
    r.add_argument(
        "--ramp", type=int, default=None, help="Legato ramp r (default: H - s - d, capped at r_max)"
    )
    r.add_argument("--method", default=None, help="inference method (default: the checkpoint's own)")
    r.add_argument("--seed", type=int, default=EVAL_SEED, help="held-out episode set seed")
    r.set_defaults(func=_lazy("legato.commands", "sim_rollout"))


def _add_checkpoint(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("checkpoint", help="inspect or publish checkpoints")
    ss = p.add_subparsers(dest="ck_cmd", required=True)
    i = ss.add_parser("info", help="print a checkpoint's method, sizes and training statistics")
    i.add_argument("path")
    i.set_defaults(func=_lazy("legato.commands", "checkpoint_info"))
    pub = ss.add_parser("publish", help="copy weights + config (no optimizer state) to a verified folder")
    pub.add_argument("path")
    pub.add_argument("--to", required=True)
    pub.set_defaults(func=_lazy("legato.commands", "checkpoint_publish"))


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the committed Legato checkpoint in the simulator with a delay")
    p.add_argument("--checkpoint", default="models/legato")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--delay", type=int, default=2)
    p.add_argument("--out", default="reports/demo")
    p.set_defaults(func=_lazy("legato.commands", "demo"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="legato", description="Legato action-chunking policies, from training to motors"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_sim(sub)
    _add_checkpoint(sub)
    _add_demo(sub)
    for part in ("legato.eval_cli", "firmware_bridge.cli"):
        if importlib.util.find_spec(part) is not None:  # parts of the stack land one by one
            importlib.import_module(part).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from legato.errors import KNOWN_ERRORS

    try:
        return int(args.func(args) or 0)
    except KNOWN_ERRORS as e:
        if os.environ.get("LEGATO_DEBUG"):
            raise
        print(f"legato: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("legato: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

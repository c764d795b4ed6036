"""The `legato` command line: one entry point, one command table, one error format.

Each part of the stack registers its own subcommands (``register(subparsers)``) from a module
that imports nothing heavy: torch and matplotlib load only inside the command that needs them,
so `legato --help` and every robot-side command run with the core install only (no torch).
Known failures (edge.errors.LegatoError, the firmware bridge's errors) print one line,
``legato: error: ...``, and exit 2; LEGATO_DEBUG=1 shows the traceback. Anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

from edge.cliargs import Parser

# The command table: modules with register(subparsers), in the order `legato --help` lists them.
# A module that fails to import is an error, never silently skipped.
COMMANDS: tuple[str, ...] = (
    "legato.commands",  # train, sim, checkpoint
    "legato.eval_cli",  # eval
    "firmware_bridge.cli",  # firmware
    "deploy.cli",  # demo, flash, service, doctor
    "export.cli",  # export (torch), profiles, bundle (robot side)
    "edge.cli",  # run, profile (robot side)
    "edge.record_cli",  # replay, view (robot side)
    "edge.servo_cli",  # servo: ping, scan, calibrate (LeRobot's calibration file)
    "edge.remote.cli",  # serve (robot side: no torch)
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("legato-edge")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> Parser:
    parser = Parser(prog="legato", description="Legato action-chunking policies, from training to motors")
    parser.add_argument("--version", action="version", version=f"legato-edge {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        importlib.import_module(module).register(sub)
    return parser


def known_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad input or a failed device, printed as one line."""
    from edge.errors import LegatoError
    from firmware_bridge import errors as fw
    from sim.errors import SimError

    bridge = tuple(
        v
        for v in vars(fw).values()
        if isinstance(v, type) and issubclass(v, Exception) and v.__module__ == fw.__name__
    )
    return (LegatoError, SimError, *bridge)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        rc = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return rc
    except BrokenPipeError:
        # `legato ... | head`: the reader left. Whatever the command drove has already been shut
        # down by its own finally blocks; quiet exit, and the interpreter's final flush of stdout
        # must not raise again, so point stdout at /dev/null (Python's documented recipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell tool killed by the pipe reports
    except known_errors() as e:
        if os.environ.get("LEGATO_DEBUG"):
            raise
        print(f"legato: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("legato: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

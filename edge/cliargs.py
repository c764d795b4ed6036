"""Command-line plumbing shared by every `legato` subcommand (torch-free, robot-safe).

- :class:`Parser`: argparse whose errors are one line, ``legato: error: ...``, exit 2.
- Range-checked value types (:func:`int_in`, :func:`float_in`, :func:`int_list`,
  :func:`name_list`): a bad value is refused while parsing, before any work, in the words of
  the flag the user typed; each type knows its range, and the help shows it with the default.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """One-line errors and help that states every option's range and default."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", RangeHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        sub = self.prog.split(" ", 1)[1] + ": " if " " in self.prog else ""
        print(f"legato: error: {sub}{message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


class RangeHelpFormatter(argparse.HelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            action.help is argparse.SUPPRESS
            or action.option_strings == []
            or "--help" in action.option_strings
        ):
            return text
        extra = []
        valid = getattr(action.type, "valid", None)
        if valid:
            extra.append(valid)
        elif action.choices:
            extra.append("one of " + ", ".join(map(str, action.choices)))
        d = action.default
        if d is not None and d is not argparse.SUPPRESS and d is not False and "default" not in text:
            extra.append(f"default {','.join(map(str, d)) if isinstance(d, tuple | list) else d}")
        return f"{text} [{'; '.join(extra)}]" if extra else text


class _Typed:
    """An argparse `type` that also describes its valid values (shown in --help)."""

    valid: str

    def __repr__(self) -> str:  # argparse names the type in some messages
        return self.valid


def _range_text(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"{lo}..{hi}"
    return f">= {lo}" if lo is not None else f"<= {hi}"


class int_in(_Typed):  # noqa: N801 (used like a type)
    """An integer in [lo, hi] (either bound optional)."""

    def __init__(self, lo: int | None = None, hi: int | None = None) -> None:
        self.lo, self.hi = lo, hi
        self.valid = "integer " + _range_text(lo, hi)

    def __call__(self, text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
            raise argparse.ArgumentTypeError(f"must be an integer {_range_text(self.lo, self.hi)}, got {v}")
        return v


class float_in(_Typed):  # noqa: N801
    """A finite float in [lo, hi] (or (lo, hi] with lo_open)."""

    def __init__(self, lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> None:
        self.lo, self.hi, self.lo_open = lo, hi, lo_open
        if lo_open:  # "0.0..10.0" would read as if 0 were allowed
            self.valid = f"number > {lo}" + (f" and <= {hi}" if hi is not None else "")
        else:
            self.valid = "number " + _range_text(lo, hi)

    def __call__(self, text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        bad_lo = self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo)
        if not math.isfinite(v) or bad_lo or (self.hi is not None and v > self.hi):
            raise argparse.ArgumentTypeError(f"must be a {self.valid}, got {text}")
        return v


class int_list(_Typed):  # noqa: N801
    """Comma-separated integers, each in [lo, hi]; at least one; no duplicates."""

    def __init__(self, lo: int | None = None, hi: int | None = None) -> None:
        self.item = int_in(lo, hi)
        self.valid = f"comma-separated integers {_range_text(lo, hi)}"

    def __call__(self, text: str) -> tuple[int, ...]:
        parts = [x.strip() for x in text.split(",") if x.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"expected {self.valid}, got {text!r}")
        out = tuple(self.item(x) for x in parts)
        if len(set(out)) != len(out):
            raise argparse.ArgumentTypeError(f"values repeat in {text!r}")
        return out


class name_list(_Typed):  # noqa: N801
    """Comma-separated names, each one of `choices`; at least one; no duplicates."""

    def __init__(self, choices: Sequence[str]) -> None:
        self.choices = tuple(choices)
        self.valid = "comma-separated, from " + ", ".join(self.choices)

    def __call__(self, text: str) -> tuple[str, ...]:
        names = [x.strip() for x in text.split(",") if x.strip()]
        if not names:
            raise argparse.ArgumentTypeError(
                f"expected at least one of {', '.join(self.choices)}, got {text!r}"
            )
        bad = [n for n in names if n not in self.choices]
        if bad:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(map(repr, bad))}; choose from {', '.join(self.choices)}"
            )
        if len(set(names)) != len(names):
            raise argparse.ArgumentTypeError(f"names repeat in {text!r}")
        return tuple(names)

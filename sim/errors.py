"""Known failures of the simulators (bad input or a missing optional dependency, never a bug).

sim/ sits below edge/ and legato/ and imports neither; the `legato` CLI prints these as one line
like edge.errors.LegatoError (legato.cli.known_errors).
"""

from __future__ import annotations


class SimError(Exception):
    """Base of the simulators' user-facing failures."""


class MissingExtra(SimError):
    """A task needs an optional dependency that is not installed (the message names the extra)."""


class UnknownTask(SimError, ValueError):
    """A task name or task description that no registered task matches."""

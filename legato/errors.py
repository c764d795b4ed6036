"""Errors that mean bad input, not a bug: the CLI prints them as one line."""

from __future__ import annotations

from sim.demos import DatasetError


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not match its config."""


class MethodError(ValueError):
    """An inference request that the checkpoint or the chunking constraints do not allow."""


KNOWN_ERRORS: tuple[type[BaseException], ...] = (
    DatasetError,
    CheckpointError,
    MethodError,
    ValueError,
    OSError,
    FloatingPointError,  # a diverged training run
)

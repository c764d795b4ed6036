"""Errors that mean bad input, not a bug: the CLI prints them as one line.

Every known failure derives from edge.errors.LegatoError (torch-free, shared with the robot
side; legato.cli.known_errors lists what prints as one line); anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

from edge.errors import LegatoError, MethodError, OutputError, UsageError
from legato.demos import DatasetError

__all__ = ["CheckpointError", "DatasetError", "MethodError", "OutputError", "TrainingDiverged", "UsageError"]


class CheckpointError(LegatoError):
    """A checkpoint is missing, corrupt, or does not match its config."""


class TrainingDiverged(LegatoError):
    """The loss became non-finite."""

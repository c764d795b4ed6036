"""Known failures of the robot-side code: bad input, never a bug.

The `legato` CLI prints any :class:`LegatoError` as one line (`legato: error: ...`) and exits 2;
anything else is a bug and keeps its traceback. Every message names the bad value and, where
there is one, the flag or file that fixes it.
"""

from __future__ import annotations


class LegatoError(Exception):
    """Base of every known, user-facing failure."""


class OutputError(LegatoError):
    """An output target that must not be touched (foreign, wrong type) or cannot be written."""


class MethodError(LegatoError, ValueError):
    """An inference request that the model or the chunking constraints do not allow."""


class BundleError(LegatoError):
    """A bundle that is missing, corrupt, fails to verify, or does not match the request."""


class ProfileError(LegatoError):
    """A device profile that does not load: unknown key, wrong type, impossible combination."""


class UsageError(LegatoError, ValueError):
    """A command-line value outside its valid range, named by the flag the user typed."""


class PortLost(LegatoError):
    """The serial port vanished and did not come back in time (motors left in the controller's hold)."""


class FaultStop(LegatoError):
    """The loop held for a fault on ``max_fault_ticks`` consecutive ticks and the run stopped."""


class ChunkUnavailable(LegatoError):
    """No chunk this time (a remote policy's timeout or dropped link): the worker counts it, the
    clock holds, and the next request is made as usual (the first chunk after a gap longer than
    d_max with omega = 0). Never raised for a bug."""

"""The part of every :class:`~firmware_bridge.interface.MotorBus` that does not depend on the wire:
setpoint validation (shape, finite, limits) and its counters.

A bus subclasses :class:`BusBase` and implements only ``_store_target_impl`` (in the way
Polygraphy's runners implement ``*_impl`` behind one base class that checks inputs once), so the
firmware bridge and the vendor buses clamp and refuse in exactly the same way.
"""

from __future__ import annotations

import numpy as np

from firmware_bridge.config import JointLimits


class BusBase:
    """Validates and clamps setpoints, then hands them to ``_store_target_impl``."""

    def __init__(self, limits: JointLimits) -> None:
        self.limits = limits
        self._n = limits.n_joints
        # float32, exactly the values a controller receives, so both sides clamp identically
        self._lo = np.asarray(limits.position_min, dtype=np.float32)
        self._hi = np.asarray(limits.position_max, dtype=np.float32)
        self.setpoints_rejected = 0
        self.setpoints_clamped = 0
        self._a = np.empty(self._n, np.float32)  # scratch, reused every call
        self._c = np.empty(self._n, np.float32)
        self._finite = np.empty(self._n, bool)

    @property
    def n_joints(self) -> int:
        return self._n

    def send_setpoint(self, positions: np.ndarray) -> None:
        """Store ``positions`` (a,) rad, clamped to the limits, for the next period.

        A wrong shape is a programming error (ValueError). A non-finite value is a runtime event:
        the setpoint is refused, counted, and the previous target keeps being sent (hold).

        The checks run in preallocated buffers; the one allocation is the immutable tuple
        handed to the sender thread (so it never reads a target while it is being written)."""
        shape = np.shape(positions)
        if shape != (self._n,):
            raise ValueError(f"positions must have shape ({self._n},), got {shape}")
        a, c = self._a, self._c
        a[...] = positions  # float32, exactly what a controller receives
        if not np.isfinite(a, out=self._finite).all():
            self.setpoints_rejected += 1
            return
        np.clip(a, self._lo, self._hi, out=c)
        if not np.array_equal(a, c):
            self.setpoints_clamped += 1
        self._store_target_impl(tuple(c.tolist()))

    def _store_target_impl(self, target: tuple[float, ...]) -> None:
        """Keep ``target`` (clamped, finite, float32 values) for the sender; must not block."""
        raise NotImplementedError

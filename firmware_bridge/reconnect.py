"""One owner of a port that can vanish, for every bus: open, lose, reopen with backoff.

The shape is pyserial's ``serial.threaded`` protocol: the bus is told ``connection_made(port)``
once a port is open and ``connection_lost(exc)`` when it is gone. Exactly one thread uses a
bus's port (the firmware link's reader, the servo bus's cycle); it asks the keeper for the port
with :meth:`PortKeeper.acquire` and reports a :class:`TransportError` with :meth:`PortKeeper.lost`.

- ``acquire()`` returns the open port, or opens one when the backoff has passed and hands it to
  ``connection_made`` (a handshake, a servo setup). A failed open, or a ``connection_made`` that
  raises TransportError or LinkError, is one failed attempt: the next waits ``min_s``, doubling
  up to ``max_s``.
- ``lost(port, exc)`` closes the port and clears ``connected`` at once (so health says
  "disconnected" the moment the owner sees the error), then calls ``connection_lost``. The first
  reopen attempt after a loss is immediate: a replugged adapter is back within a period.
- ``generation`` counts connections: a changed value means "configure the device again".

A bug in the owner's callbacks (any other exception) is not a lost port: it propagates.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from firmware_bridge.errors import LinkError, TransportError


class ClosablePort(Protocol):
    def close(self) -> None: ...


P = TypeVar("P", bound=ClosablePort)
P_contra = TypeVar("P_contra", bound=ClosablePort, contravariant=True)


class PortOwner(Protocol[P_contra]):
    def connection_made(self, port: P_contra) -> None:
        """The port is open: configure the device. Raise TransportError or LinkError to refuse it."""
        ...

    def connection_lost(self, exc: BaseException | None) -> None:
        """The port is gone (``exc`` says why; None on close())."""
        ...


class PortKeeper(Generic[P]):
    """Opens ``open_port()`` for ``owner`` and reopens it after a loss, with exponential backoff."""

    def __init__(
        self,
        open_port: Callable[[], P],
        owner: PortOwner[P],
        *,
        min_s: float,
        max_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < min_s <= max_s:
            raise ValueError(f"backoff needs 0 < min_s <= max_s, got {min_s}, {max_s}")
        self._open = open_port
        self._owner = owner
        self._min, self._max = min_s, max_s
        self._clock = clock
        self._lock = threading.Lock()
        self._port: P | None = None
        self._connected = threading.Event()
        self._backoff = min_s
        self._next_try = -float("inf")
        self.generation = 0  # +1 on every successful connection_made
        self.disconnects = 0  # ports lost after a successful connection
        self.failed_attempts = 0  # opens (or setups) that failed
        self.last_error: BaseException | None = None

    @property
    def port(self) -> P | None:
        return self._port

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float | None) -> bool:
        return self._connected.wait(timeout_s)

    def retry_in(self) -> float:
        """Seconds until ``acquire()`` tries to open again (0 when it would now)."""
        return 0.0 if self._port is not None else max(0.0, self._next_try - self._clock())

    def acquire(self) -> P | None:
        """The open port, or None while the port is gone and the backoff has not passed."""
        port = self._port
        if port is not None:
            return port
        if self._clock() < self._next_try:
            return None
        try:
            port = self._open()
        except TransportError as exc:
            self._failed(exc)
            return None
        with self._lock:
            self._port = port
            self.generation += 1
        try:
            self._owner.connection_made(port)
        except (TransportError, LinkError) as exc:
            self._drop(port)
            self._failed(exc)
            return None
        except BaseException:
            self._drop(port)
            raise
        self._backoff = self._min
        self.last_error = None
        self._connected.set()
        return port

    def lost(self, port: P, exc: BaseException) -> None:
        """``port`` failed with ``exc``: close it, say so at once, reopen on the next acquire()."""
        if not self._drop(port):
            return  # already dropped (close() raced with the failing call)
        self.disconnects += 1
        self.last_error = exc
        self._next_try = self._clock()
        self._owner.connection_lost(exc)

    def close(self) -> None:
        """Release the port for good (no callback for a port that never connected). Idempotent."""
        port = self._port
        if port is not None and self._drop(port):
            self._owner.connection_lost(None)

    def _drop(self, port: P) -> bool:
        with self._lock:
            if self._port is not port:
                return False
            self._port = None
            self._connected.clear()
        port.close()
        return True

    def _failed(self, exc: BaseException) -> None:
        self.failed_attempts += 1
        self.last_error = exc
        self._next_try = self._clock() + self._backoff
        self._backoff = min(2 * self._backoff, self._max)

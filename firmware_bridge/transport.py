"""Byte transports: the only code that touches a port.

A transport moves bytes and nothing else: no framing, no retries. It raises only
:class:`TransportError` (port missing, busy, unplugged, closed). Two implementations:

- :class:`SerialTransport` - the host side, on pyserial, opened with ``exclusive=True`` so a
  second process (or a second bridge in this one) cannot interleave frames on the same port.
- :class:`FdTransport` - a raw file descriptor (the emulator's pty master), non-blocking so a
  host that stops reading can never stall the controller loop: what does not fit is dropped
  and counted, as a UART with a full DMA buffer would.

Both write one whole frame per ``write`` call, which is what lets :mod:`faults` act per frame.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import threading
import time
from typing import Protocol

from firmware_bridge.errors import TransportError
from firmware_bridge.portcheck import explain_open_failure


class Transport(Protocol):
    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        """Up to ``max_bytes``; b"" when nothing arrived within ``timeout_s``."""
        ...

    def write(self, data: bytes) -> None:
        """Write all of ``data`` (one frame) or raise TransportError."""
        ...

    def cancel_read(self) -> None:
        """Wake a blocked ``read`` early (used by close())."""
        ...

    def close(self) -> None:
        """Release the port; idempotent, never raises."""
        ...


class SerialTransport:
    """pyserial port opened exclusively; pyserial errors become TransportError."""

    def __init__(self, port: str, baudrate: int = 1_000_000, write_timeout_s: float = 0.05) -> None:
        import serial  # lazy: keeps `import firmware_bridge` cheap for the CLI

        self._serial_mod = serial
        self._timeout = 0.02
        self._write_timeout_s = write_timeout_s
        try:
            # write_timeout=0: pyserial's own timed write raises "Write timeout" after a write that
            # went out whole whenever its thread was preempted past the timeout (its expiry check
            # follows os.write): on a loaded machine a false lost port. write() waits itself.
            self._ser = serial.Serial(port, baudrate, timeout=self._timeout, write_timeout=0, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise explain_open_failure(port, exc) from exc
        self.port = port

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        try:
            if timeout_s != self._timeout:  # why: setting the timeout reconfigures the tty (a syscall)
                self._ser.timeout = self._timeout = timeout_s
            waiting = self._ser.in_waiting
            return self._ser.read(min(max(1, waiting), max_bytes))
        except (self._serial_mod.SerialException, OSError, TypeError, AttributeError) as exc:
            # TypeError/AttributeError: pyserial's internals after the fd was closed under it
            raise TransportError(f"read from {self.port!r} failed: {exc}") from exc

    def write(self, data: bytes) -> None:
        """All of ``data``, or TransportError when the port has had no room for what is left
        within ``write_timeout_s`` of the call (a port that stopped draining: unplugged, or a
        device that stopped reading). The fd is non-blocking (pyserial opens it so)."""
        view, deadline = memoryview(data), time.monotonic() + self._write_timeout_s
        try:
            fd = self._ser.fileno()
            while True:
                with contextlib.suppress(BlockingIOError):  # no room at all right now: wait below
                    view = view[os.write(fd, view) :]
                if not view:
                    return
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([], [fd], [], left)[1]:
                    raise TransportError(
                        f"write to {self.port!r} failed: no room for {len(view)} of {len(data)} bytes "
                        f"within {self._write_timeout_s * 1e3:.0f} ms (the port stopped draining)"
                    )
        except (self._serial_mod.SerialException, OSError, TypeError, AttributeError, ValueError) as exc:
            # ValueError: select on a closed fd (-1); the others as in read()
            raise TransportError(f"write to {self.port!r} failed: {exc}") from exc

    def cancel_read(self) -> None:
        # a port that is already gone has nothing left to wake
        with contextlib.suppress(self._serial_mod.SerialException, OSError, TypeError, AttributeError):
            self._ser.cancel_read()

    def close(self) -> None:
        # closing a vanished port fails; the fd is released either way
        with contextlib.suppress(self._serial_mod.SerialException, OSError, TypeError, AttributeError):
            self._ser.close()


class FdTransport:
    """Non-blocking raw fd (a pty master). Writes that do not fit within ``write_wait_s`` are
    dropped (whole frame if nothing went out, else the tail) and counted."""

    def __init__(self, fd: int, write_wait_s: float = 0.002, owns_fd: bool = True) -> None:
        self._fd = fd
        self._owns = owns_fd
        self._write_wait_s = write_wait_s
        self._closed = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(fd, False)
        os.set_blocking(self._wake_r, False)
        self.dropped_writes = 0

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        if self._closed.is_set():
            raise TransportError("transport closed")
        try:
            ready, _, _ = select.select([self._fd, self._wake_r], [], [], max(0.0, timeout_s))
            if self._wake_r in ready:
                os.read(self._wake_r, 64)
            if self._fd not in ready:
                return b""
            data = os.read(self._fd, max_bytes)
        except BlockingIOError:
            return b""
        except (OSError, ValueError) as exc:
            raise TransportError(f"read failed: {exc}") from exc
        if not data:
            raise TransportError("end of file: peer closed")
        return data

    def write(self, data: bytes) -> None:
        if self._closed.is_set():
            raise TransportError("transport closed")
        view = memoryview(data)
        deadline = time.monotonic() + self._write_wait_s
        while view:
            try:
                n = os.write(self._fd, view)
                view = view[n:]
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.dropped_writes += 1
                    return
                select.select([], [self._fd], [], remaining)
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise TransportError(f"write failed: {exc}") from exc

    def cancel_read(self) -> None:
        # pipe full or closed: a wake-up is already pending or nobody is reading
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self.cancel_read()
        fds = [self._wake_r, self._wake_w] + ([self._fd] if self._owns else [])
        for fd in fds:
            with contextlib.suppress(OSError):  # already closed
                os.close(fd)

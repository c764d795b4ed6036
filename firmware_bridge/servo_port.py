"""The byte port of a servo bus: request out, replies in, every wait bounded by a monotonic deadline.

pyserial opens and configures the port (exclusively: a second process cannot interleave packets
on a half-duplex bus); reads then go straight to the file descriptor with ``select`` until a
deadline on ``time.monotonic()``, so waiting for a reply costs no per-call timeout reconfiguration
(a termios syscall in pyserial) and never depends on the wall clock.

Only the bus thread uses a port; it raises only :class:`TransportError` (open failures as
:class:`~firmware_bridge.portcheck.PortError`, which says why).
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from typing import Protocol

from firmware_bridge.errors import TransportError
from firmware_bridge.portcheck import explain_open_failure


class BytePort(Protocol):
    def write(self, data: bytes, deadline: float) -> None:
        """Write all of ``data`` before ``deadline`` (monotonic s) or raise TransportError."""
        ...

    def read(self, deadline: float) -> bytes:
        """What has arrived, waiting until ``deadline`` for the first byte; b"" if nothing came."""
        ...

    def discard_input(self) -> int:
        """Drop bytes already received (late replies of an earlier cycle); how many."""
        ...

    def close(self) -> None: ...


class ServoPort:
    """A serial port opened exclusively with pyserial, read and written through its descriptor."""

    def __init__(self, port: str, baudrate: int) -> None:
        import serial  # lazy: importing the package stays cheap

        try:
            self._ser = serial.Serial(port, baudrate, timeout=0, write_timeout=0, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise explain_open_failure(port, exc) from exc
        self.port = port
        self._fd = self._ser.fileno()
        os.set_blocking(self._fd, False)

    def write(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._fd, view)
                view = view[n:]
                continue
            except BlockingIOError:
                pass
            except OSError as exc:
                raise TransportError(f"write to {self.port} failed: {exc}") from exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransportError(f"write to {self.port} did not finish by its deadline")
            select.select([], [self._fd], [], remaining)

    def read(self, deadline: float) -> bytes:
        remaining = max(0.0, deadline - time.monotonic())
        try:
            ready, _, _ = select.select([self._fd], [], [], remaining)
            if not ready:
                return b""
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return b""
        except (OSError, ValueError) as exc:
            raise TransportError(f"read from {self.port} failed: {exc}") from exc
        if not data:
            raise TransportError(f"{self.port}: end of file (adapter unplugged?)")
        return data

    def discard_input(self) -> int:
        n = 0
        while True:
            try:
                data = os.read(self._fd, 4096)
            except BlockingIOError:
                return n
            except OSError as exc:
                raise TransportError(f"read from {self.port} failed: {exc}") from exc
            if not data:
                return n
            n += len(data)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # a vanished port fails to close; the fd is gone either way
            self._ser.close()

"""A pseudo-terminal that looks like a serial port, plus a stable symlink name for it.

The controller side keeps the master; the host opens the slave path with pyserial exactly as a
real UART. The slave is put in raw mode at once, so nothing (echo, CR/LF translation, ^C) touches
the bytes before pyserial configures the port itself. A symlink (``link``) gives the port a name
that survives an emulated unplug/replug, as a udev rule does for a real USB adapter.
"""

from __future__ import annotations

import contextlib
import os
import tty
from dataclasses import dataclass


@dataclass
class Pty:
    master: int  # controller side
    slave: int  # kept open so the master never sees EIO while no host is attached
    path: str  # the slave's device path, e.g. /dev/pts/7

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):  # already closed
                os.close(fd)


def open_pty() -> Pty:
    master, slave = os.openpty()
    tty.setraw(slave)
    return Pty(master, slave, os.ttyname(slave))


def point_link(link: str, target: str) -> None:
    """Atomically make ``link`` a symlink to ``target`` (replacing an existing link)."""
    tmp = f"{link}.tmp{os.getpid()}"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def remove_link(link: str) -> None:
    if os.path.lexists(link):
        os.unlink(link)

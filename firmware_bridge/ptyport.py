"""A pseudo-terminal that looks like a serial port, plus a stable symlink name for it.

The controller side keeps the master; the host opens the slave path with pyserial exactly as a
real UART. The slave is put in raw mode at once, so nothing (echo, CR/LF translation, ^C) touches
the bytes before pyserial configures the port itself. A symlink (:class:`LinkGuard`) gives the
port a name that survives an emulated unplug/replug, as a udev rule does for a real USB adapter.

The link path is the user's: it is never allowed to destroy anything there. A missing path gets
the link; a dangling link to a vanished pty (an emulator that died) is taken over atomically;
anything else (a file, a folder, a link to a live pty of another emulator, a link elsewhere) is
refused with :class:`LinkPathError`. On exit the link is removed only while it still points at
this emulator's own pty.
"""

from __future__ import annotations

import contextlib
import os
import tty
from dataclasses import dataclass

PTY_DIR = "/dev/pts/"


class LinkPathError(ValueError):
    """The ``--link`` path holds something that is not ours to replace."""


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


def _refusal(path: str) -> str | None:
    """Why ``path`` must not be replaced by our link; None when it may (absent or a stale link)."""
    if not os.path.lexists(path):
        return None
    if not os.path.islink(path):
        kind = "folder" if os.path.isdir(path) else "file"
        return f"--link {path}: a {kind} exists there; refusing to replace it (choose another path)"
    target = os.readlink(path)
    if os.path.exists(path):
        if target.startswith(PTY_DIR):
            return f"--link {path} points at {target}, the live pty of another emulator; stop that one first"
        return f"--link {path} is a link to {target}, not an emulator's; refusing to replace it"
    if not target.startswith(PTY_DIR):
        return f"--link {path} is a dangling link to {target}, not an emulator's; refusing to replace it"
    return None  # a dangling link to a pty that is gone: an emulator that died left it


class LinkGuard:
    """Owns the symlink ``path`` -> this emulator's pty while it lives."""

    def __init__(self, path: str, target: str) -> None:
        self.path = path
        self.target: str | None = None
        self.claim(target)

    def claim(self, target: str) -> None:
        """Point ``path`` at ``target`` (a new pty after a replug) or raise LinkPathError."""
        path = self.path
        if self.target is not None and _points_at(path, self.target):
            self._replace(target)
            return
        why = _refusal(path)
        if why:
            raise LinkPathError(why)
        if not os.path.lexists(path):
            try:
                os.symlink(target, path)  # atomic, and never overwrites: a racing emulator loses here
            except FileExistsError:
                why = _refusal(path)
                if why:
                    raise LinkPathError(why) from None
                self._replace(target)
            except OSError as exc:
                raise LinkPathError(f"--link {path}: cannot create the link: {exc.strerror}") from None
        else:
            self._replace(target)
        self.target = target

    def _replace(self, target: str) -> None:
        tmp = f"{self.path}.tmp{os.getpid()}"
        try:
            os.symlink(target, tmp)
            why = _refusal(self.path) if not _points_at(self.path, self.target) else None
            if why:
                raise LinkPathError(why)
            os.replace(tmp, self.path)
        except OSError as exc:
            raise LinkPathError(f"--link {self.path}: cannot point it at {target}: {exc.strerror}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)  # gone after a successful replace; never left dangling after a failure
        self.target = target

    def release(self) -> None:
        """Remove the link if it still points at our pty; leave anything else alone."""
        if self.target is not None and _points_at(self.path, self.target):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self.target = None


def _points_at(path: str, target: str | None) -> bool:
    try:
        return target is not None and os.readlink(path) == target
    except OSError:
        return False

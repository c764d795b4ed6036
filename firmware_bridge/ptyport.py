"""A pseudo-terminal that looks like a serial port, plus a stable symlink name for it.

The controller side keeps the master; the host opens the slave path with pyserial exactly as a
real UART. The slave is put in raw mode at once, so nothing (echo, CR/LF translation, ^C) touches
the bytes before pyserial configures the port itself. A symlink (:class:`LinkGuard`) gives the
port a name that survives an emulated unplug/replug, as a udev rule does for a real USB adapter.

The link path is the user's: it is never allowed to destroy anything there. A missing path gets
the link; a link left by an emulator that was killed is taken over atomically: it dangles (its
pty vanished with it), or it names the very pty this emulator just opened (Linux hands out the
lowest free pty number, so the next emulator usually gets the dead one's). Anything else (a file,
a folder, a link to a pty another live process drives, named with its pid, a link elsewhere) is
refused with :class:`LinkPathError`. On exit the link is removed only while it still
points at this emulator's own pty.
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


def _refusal(path: str, ours: str | None = None) -> str | None:
    """Why ``path`` must not be replaced by our link to ``ours``; None when it may (absent, a stale
    link, or one that already names our own pty)."""
    if not os.path.lexists(path):
        return None
    if not os.path.islink(path):
        kind = "folder" if os.path.isdir(path) else "file"
        return f"--link {path}: a {kind} exists there; refusing to replace it (choose another path)"
    target = os.readlink(path)
    if ours is not None and target == ours:
        return None  # a killed emulator's link, and its pty number is the one we were just given
    if os.path.exists(path):
        if not target.startswith(PTY_DIR):
            return f"--link {path} is a link to {target}, not an emulator's; refusing to replace it"
        holders = master_holders(target)
        if holders:
            who = ", ".join(f"pid {pid} ({_cmdline(pid)})" for pid in holders)
            return f"--link {path} points at {target}, the live pty of {who}; stop that one first"
        return None  # the pty's controller side is gone (a killed emulator): stale
    if not target.startswith(PTY_DIR):
        return f"--link {path} is a dangling link to {target}, not an emulator's; refusing to replace it"
    return None  # a dangling link to a pty that is gone: an emulator that died left it


def _cmdline(pid: int) -> str:
    from firmware_bridge.portcheck import _cmdline as cmdline

    return cmdline(pid)


def master_holders(slave: str) -> list[int]:
    """PIDs holding the controller (master) side of the pty ``slave`` (/dev/pts/N): an fd on
    /dev/ptmx whose /proc fdinfo says ``tty-index: N``. Other users' processes are not readable
    (a pty of theirs then looks free: the link is only a name in the user's own folder)."""
    try:
        index = int(slave[len(PTY_DIR) :])
    except ValueError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    if not os.readlink(f"/proc/{entry}/fd/{fd}").endswith("ptmx"):
                        continue
                    with open(f"/proc/{entry}/fdinfo/{fd}") as f:
                        if any(line.split() == ["tty-index:", str(index)] for line in f):
                            pids.append(int(entry))
                            break
    return sorted(set(pids))


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
        why = _refusal(path, target)
        if why:
            raise LinkPathError(why)
        if not os.path.lexists(path):
            try:
                os.symlink(target, path)  # atomic, and never overwrites: a racing emulator loses here
            except FileExistsError:
                why = _refusal(path, target)
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
            why = _refusal(self.path, target) if not _points_at(self.path, self.target) else None
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

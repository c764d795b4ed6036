"""Why a serial port cannot be opened, in words a user can act on.

The failures users hit (field notes): the port is missing (unplugged, wrong name, ModemManager
renamed it), busy ("port is in use" after a Ctrl-C left a process holding it), not a serial port
at all, or not permitted (the user is not in the ``dialout`` group; permissions lost on replug
without a udev rule). :func:`check_port` opens the path the way pyserial will (read-write, no
controlling tty, an exclusive ``flock``) and turns each failure into a :class:`PortError` whose
message names the fix; for a busy port it names the process holding it where ``/proc`` tells.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os

from firmware_bridge.errors import TransportError

PERMISSION_HINT = (
    "add your user to the dialout group (sudo usermod -aG dialout $USER, then log in again) or install "
    'the udev rule in docs/protocol.md section 1 (SUBSYSTEM=="tty", MODE="0660", GROUP="dialout")'
)


class PortError(TransportError):
    """A port that cannot be used. ``kind``: missing, busy, not_tty, permission, other."""

    KINDS = ("missing", "busy", "not_tty", "permission", "other")

    def __init__(self, kind: str, port: str, message: str) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown PortError kind {kind!r}; allowed: {self.KINDS}")
        self.kind = kind
        self.port = port
        super().__init__(message)


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            parts = f.read().split(b"\0")
    except OSError:
        return "?"
    return " ".join(p.decode(errors="replace") for p in parts if p)[:120] or "?"


def _lockers(st: os.stat_result) -> list[int]:
    """PIDs holding a lock on the file ``st`` according to /proc/locks."""
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = []
    with contextlib.suppress(OSError), open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            # "1: FLOCK  ADVISORY  WRITE 1234 00:19:7 0 EOF" (blocked waiters have "->" first)
            if len(fields) >= 6 and fields[1] != "->" and fields[5] == key:
                with contextlib.suppress(ValueError):
                    pids.append(int(fields[4]))
    return pids


def _openers(real: str) -> list[int]:
    """PIDs with ``real`` open (a scan of /proc/*/fd; other users' processes are not readable)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry}/fd/{fd}") == real:
                        pids.append(int(entry))
                        break
    return pids


def port_holders(port: str) -> list[tuple[int, str]]:
    """``(pid, command line)`` of the processes that lock ``port``, else of those that have it open."""
    try:
        st = os.stat(port)
    except OSError:
        return []
    pids = _lockers(st) or _openers(os.path.realpath(port))
    return [(pid, _cmdline(pid)) for pid in sorted(set(pids))]


def describe_holders(port: str) -> str:
    holders = port_holders(port)
    if not holders:
        return "held by a process /proc does not show (another user's, or a container's)"
    me = os.getpid()
    return "held by " + ", ".join(
        f"pid {pid} ({'this process' if pid == me else cmd})" for pid, cmd in holders
    )


def check_port(port: str) -> None:
    """Raise :class:`PortError` unless ``port`` exists, is a tty, is permitted and is not locked."""
    if not os.path.lexists(port):
        raise PortError("missing", port, f"port {port} does not exist (unplugged, or another name?)")
    if not os.path.exists(port):
        raise PortError(
            "missing", port, f"port {port} is a link to {os.readlink(port)}, which does not exist"
        )
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except PermissionError:
        raise PortError("permission", port, f"permission denied on {port}: {PERMISSION_HINT}") from None
    except OSError as exc:
        if exc.errno == errno.EBUSY:  # TIOCEXCL (another program's exclusive open)
            raise PortError("busy", port, f"port {port} is busy: {describe_holders(port)}") from None
        raise PortError("other", port, f"cannot open {port}: {exc.strerror}") from None
    try:
        if not os.isatty(fd):
            raise PortError("not_tty", port, f"{port} is not a serial port (not a tty)")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise PortError("busy", port, f"port {port} is in use: {describe_holders(port)}") from None
            raise
    finally:
        os.close(fd)  # also drops the probe's own lock


def explain_open_failure(port: str, exc: BaseException) -> PortError:
    """The :class:`PortError` for a failed pyserial open: what :func:`check_port` finds now, else
    the original error."""
    try:
        check_port(port)
    except PortError as found:
        return found
    return PortError("other", port, f"cannot open {port}: {exc}")

"""`legato doctor`'s serial-port checks: the port exists (or which header UART this Jetson has),
its permissions and group, who holds it (by pid and command line), and the FTDI latency timer.

Everything is read through the doctor's :class:`deploy.checks.Env` (an injectable root), so the
tests fake /dev, /sys, /proc and /etc/group.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from deploy.checks import FAIL, OK, WARN, Check, Ctx, Env


def _groups_file(env: Env) -> dict[int, tuple[str, list[str]]]:
    out: dict[int, tuple[str, list[str]]] = {}
    for ln in (env.read("/etc/group") or "").splitlines():
        parts = ln.split(":")
        if len(parts) >= 4 and parts[2].isdigit():
            out[int(parts[2])] = (parts[0], [u for u in parts[3].split(",") if u])
    return out


def _user_groups(env: Env, user: str) -> set[str]:
    if env.groups is not None:
        return set(env.groups)
    if env.root.resolve() != Path("/"):  # a fake root: membership as its /etc/group lists it
        return {name for name, members in _groups_file(env).values() if user in members}
    import grp

    names = set()
    for gid in os.getgroups():
        with contextlib.suppress(KeyError):
            names.add(grp.getgrgid(gid).gr_name)
    return names


def current_user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def port_holders(env: Env, port: Path, shown: str) -> list[tuple[int, str]]:
    """(pid, command) of processes that lock the port (/proc/locks) or have it open (/proc/*/fd)."""
    try:
        st = port.stat()
    except OSError:
        return []
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids: list[int] = []
    for ln in (env.read("/proc/locks") or "").splitlines():
        fields = ln.split()
        if len(fields) >= 6 and fields[1] != "->" and fields[5] == key and fields[4].isdigit():
            pids.append(int(fields[4]))
    targets = {shown, str(port), os.path.realpath(port)}
    proc = env.path("/proc")
    if not pids and proc.is_dir():
        for entry in proc.iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                if any(os.readlink(fd) in targets for fd in (entry / "fd").iterdir()):
                    pids.append(int(entry.name))
    out = []
    for pid in sorted(set(pids)):
        raw = env.read(f"/proc/{pid}/cmdline") or ""
        cmd = (
            " ".join(p for p in raw.split("\0") if p)[:100] or (env.read(f"/proc/{pid}/comm") or "?").strip()
        )
        out.append((pid, cmd))
    return out


def _missing_port(ctx: Ctx, port: str) -> Check:
    name = Path(port).name
    header = ctx.facts.get("header_uart")
    if name.startswith("ttyTHS"):
        if header and header != port:
            return Check(
                "serial port",
                FAIL,
                f"{port} does not exist; this Jetson's 40-pin header UART (3100000.serial) is {header}",
                f'pass --port {header}, or set serial.port = "{header}" in a copy of the profile '
                "(ttyTHS0 on JetPack 5 became ttyTHS1 on JetPack 6.2)",
            )
        fix = "enable the UART (sudo /opt/nvidia/jetson-io/jetson-io.py) and check ls /dev/ttyTHS*"
    else:
        fix = "plug in the adapter; `legato service install` gives it a stable name"
    return Check("serial port", FAIL, f"{port} does not exist", fix)


def check_serial(ctx: Ctx) -> list[Check]:
    env, profile = ctx.env, ctx.profile
    port = ctx.port or (profile.serial.port if profile is not None else None)
    if port is None:
        return [
            Check(
                "serial port",
                WARN,
                "no port to check (give --profile or --port)",
                "legato doctor --profile P",
            )
        ]
    p = env.path(port)
    if not os.path.lexists(p):
        return [_missing_port(ctx, port)]
    if not p.exists():
        return [
            Check(
                "serial port",
                FAIL,
                f"{port} is a link to {os.readlink(p)}, which does not exist",
                "replug the adapter; check the udev rule (legato service install --print)",
            )
        ]
    st = p.stat()
    group = _groups_file(env).get(st.st_gid, (str(st.st_gid), []))[0]
    mode = st.st_mode & 0o777
    out: list[Check] = []
    detail = f"{port}: mode {mode:o}, group {group}"
    if group == "tty":
        out.append(
            Check(
                "serial port",
                FAIL,
                f"{detail}: a console (getty) holds this UART",
                "sudo systemctl disable --now nvgetty  (then replug or reboot)",
            )
        )
    elif group != "dialout" or mode & 0o060 != 0o060:
        out.append(
            Check(
                "serial port",
                FAIL,
                f"{detail} (needs group dialout, rw for the group)",
                "sudo legato service install --profile P  (udev rule: GROUP=dialout, MODE=0660)",
            )
        )
    else:
        user = env.user or current_user()
        if user != "root" and "dialout" not in _user_groups(env, user):
            out.append(
                Check(
                    "serial port",
                    FAIL,
                    f"{detail}; user {user} is not in dialout",
                    f"sudo usermod -aG dialout {user}  (then log in again)",
                )
            )
        else:
            out.append(Check("serial port", OK, detail))
    holders = port_holders(env, p, port)
    if holders:
        who = ", ".join(f"pid {pid} ({cmd})" for pid, cmd in holders)
        out.append(
            Check(
                "port in use",
                FAIL,
                f"{port} is held by {who}",
                f"stop it: kill {' '.join(str(pid) for pid, _ in holders)}  (or sudo systemctl stop "
                "legato if it is the service)",
            )
        )
    else:
        out.append(Check("port in use", OK, "no other process holds it"))
    out.append(_latency_timer(env, port))
    return out


def _latency_timer(env: Env, port: str) -> Check:
    name = Path(os.path.realpath(env.path(port))).name if env.path(port).is_symlink() else Path(port).name
    f = f"/sys/bus/usb-serial/devices/{name}/latency_timer"
    text = env.read(f)
    if text is None:
        return Check("latency timer", OK, f"n/a ({name} is not an FTDI usb-serial port)")
    ms = int(text.strip() or 0)
    if ms > 1:
        return Check(
            "latency timer",
            WARN,
            f"{ms} ms on {name}: up to {ms} ms added to every read",
            f"echo 1 | sudo tee {f}  (for good: sudo legato service install, its udev rule sets 1 ms)",
        )
    return Check("latency timer", OK, f"{ms} ms on {name}")

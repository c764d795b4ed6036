"""`legato service`: run the flashed bundle standalone under systemd, with a udev rule for the arm's port.

The unit (``render_unit``):
- runs ``legato run`` on DIR/current with the profile flashed beside it, as a non-root user
  with the dialout group (``User=``, ``SupplementaryGroups=dialout``);
- restarts on failure (2 s apart, at most 10 tries a minute, then systemd gives up and says so);
- is ordered after, and bound to, the serial device (the udev rule tags it for systemd, so
  ``dev-legato\\x2darm.device`` exists while the adapter is plugged; the rule also starts the
  service when it appears);
- lets the loop take real-time priority without root: ``LimitRTPRIO`` allows the unprivileged
  process SCHED_FIFO up to that priority, and the loop puts its clock thread there (priority 50,
  edge/loop.py ``rt_priority``; without the limit it stays SCHED_OTHER and its summary says so);
  ``LimitMEMLOCK`` lets it lock its memory;
- stops with SIGINT, so the loop's ``finally`` sends the hold before it exits.

The udev rule (``render_rule``): a stable name (/dev/legato-arm), group dialout mode 0660, the
FTDI latency timer at 1 ms (16 ms by default: up to 16 ms added to every read), and
``ID_MM_DEVICE_IGNORE`` so ModemManager does not probe the port for ~10 s after every plug.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.errors import LegatoError

DEFAULT_NAME = "legato"
DEFAULT_LINK = "legato-arm"
RT_PRIORITY = 80  # LimitRTPRIO: the SCHED_FIFO ceiling for the service (the loop's clock thread asks for 50)
UNIT_DIR = "etc/systemd/system"
RULES_DIR = "etc/udev/rules.d"


class ServiceError(LegatoError):
    """A service that cannot be installed or queried."""


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # unit name without .service
    user: str  # non-root user the loop runs as
    legato: str  # absolute path of the `legato` executable on the device
    bundle_dir: str  # the flash target: DIR/current is run
    profile: str  # profile path (or name) passed to `legato run`
    profile_name: str
    port: str  # the profile's serial port
    link: str  # stable name under /dev
    usb_id: tuple[str, str, str | None] | None  # (vendor, product, serial) of a USB adapter
    jetson_clocks: bool  # pin clocks before each start (Jetson profiles that ask for it)
    camera: str = "0"  # legato run --camera: V4L2 index, GStreamer pipeline or video file


def systemd_escape_path(path: str) -> str:
    """The unit name systemd gives a device path: /dev/legato-arm -> dev-legato\\x2darm.device."""
    out = []
    for i, ch in enumerate(path.strip("/")):
        if ch == "/":
            out.append("-")
        elif ch.isalnum() or ch in ":_" or (ch == "." and i > 0):
            out.append(ch)
        else:
            out.append(f"\\x{ord(ch):02x}")
    return "".join(out) + ".device"


def parse_usb_id(text: str) -> tuple[str, str, str | None]:
    m = re.fullmatch(r"([0-9a-fA-F]{4}):([0-9a-fA-F]{4})(?::([\w.-]+))?", text)
    if not m:
        raise ServiceError(
            f"--usb-id {text!r}: expected VID:PID or VID:PID:SERIAL in hex (e.g. 0403:6014; "
            "udevadm info -q property -n /dev/ttyUSB0 shows ID_VENDOR_ID, ID_MODEL_ID, ID_SERIAL_SHORT)"
        )
    return m.group(1).lower(), m.group(2).lower(), m.group(3)


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]*")  # unit and /dev link names: no quoting needed
USER_PLACEHOLDER = "REPLACE_WITH_USER"  # --print without --user: the unit shows where the user goes
MARK = "written by `legato service install`"  # first line of both files: they are ours to replace


def _specifiers(text: str) -> str:
    """systemd expands %-specifiers in most settings: a literal % is %%."""
    return text.replace("%", "%%")


def _quote(arg: str) -> str:
    """One ExecStart argument after the executable, quoted as systemd.service(5) splits a command
    line: double quotes around anything with whitespace or a special character, C escapes for
    backslash and double quote inside them, $$ for a literal $ (else environment substitution)
    and %% for a literal % (else a specifier). Non-ASCII text (UTF-8) passes through: unit files are UTF-8."""
    if arg and all(c.isalnum() or c in "/._-+:=,@" for c in arg) and arg.isascii():
        return arg
    body = arg.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$").replace("%", "%%")
    body = body.replace("\n", "\\n").replace("\t", "\\t")
    return f'"{body}"'


def _quote_exec(path: str) -> str:
    """ExecStart's executable: systemd expands %-specifiers in it but not $variables, and refuses
    a path with a quote, a backslash or a control character ("Executable name contains special
    characters", systemd-analyze verify), so such a path is refused here, in one line."""
    bad = sorted({c for c in path if c in "\"'\\" or ord(c) < 32 or ord(c) == 127})
    if bad:
        raise ServiceError(
            f"--legato {path!r}: systemd cannot run an executable whose path contains "
            f"{' '.join(map(repr, bad))}; install legato-edge in a folder without them"
        )
    body = path.replace("%", "%%")
    return f'"{body}"' if any(c.isspace() for c in body) else body


def render_unit(s: ServiceSpec) -> str:
    dev = systemd_escape_path(f"/dev/{s.link}")
    current = f"{s.bundle_dir.rstrip('/')}/current"
    pre = "ExecStartPre=-+/usr/bin/jetson_clocks\n" if s.jetson_clocks else ""
    argv = [
        "run",
        "--bundle",
        current,
        "--profile",
        s.profile,
        "--port",
        f"/dev/{s.link}",
        "--camera",
        s.camera,
    ]
    run = " ".join([_quote_exec(s.legato), *(_quote(a) for a in argv)])
    user_note = (
        f"# User={USER_PLACEHOLDER} is a placeholder: install with --user NAME (a user in dialout)\n"
        if s.user == USER_PLACEHOLDER
        else ""
    )
    # WorkingDirectory= takes the rest of the line as one path (no quotes); only % needs escaping.
    return f"""# {s.name}.service: {MARK} (profile {s.profile_name})
{user_note}[Unit]
Description={_specifiers(f"Legato policy loop ({s.profile_name}, {current})")}
After={dev} network.target
BindsTo={dev}
StartLimitIntervalSec=60
StartLimitBurst=10

[Service]
Type=simple
User={s.user}
SupplementaryGroups=dialout
WorkingDirectory={_specifiers(s.bundle_dir)}
Environment=PYTHONUNBUFFERED=1
{pre}ExecStart={run}
Restart=on-failure
RestartSec=2
KillSignal=SIGINT
TimeoutStopSec=5
LimitRTPRIO={RT_PRIORITY}
LimitMEMLOCK=infinity

[Install]
WantedBy=multi-user.target
"""


def render_rule(s: ServiceSpec) -> str:
    kernel = Path(s.port).name
    if s.usb_id:
        vid, pid, serial = s.usb_id
        match = f'ATTRS{{idVendor}}=="{vid}", ATTRS{{idProduct}}=="{pid}"'
        if serial:
            match += f', ATTRS{{serial}}=="{serial}"'
        ftdi = f'ATTRS{{idVendor}}=="{vid}", ATTRS{{idProduct}}=="{pid}", '
        note = ""
    else:
        match = f'KERNEL=="{kernel}"'
        ftdi = f'KERNEL=="{kernel}", '
        note = (
            "# Matched by kernel name; for a USB adapter pass --usb-id VID:PID[:SERIAL] so the name survives "
            "replugging\n"
        )
    return (
        f"# {MARK} (profile {s.profile_name}): /dev/{s.link} for the arm,\n"
        "# group dialout, FTDI latency timer 1 ms, ModemManager told to leave it alone, systemd device unit\n"
        f"{note}"
        f'SUBSYSTEM=="tty", {match}, SYMLINK+="{s.link}", GROUP="dialout", MODE="0660", '
        f'ENV{{ID_MM_DEVICE_IGNORE}}="1", TAG+="systemd", ENV{{SYSTEMD_WANTS}}+="{s.name}.service"\n'
        f'ACTION=="add|change", SUBSYSTEM=="usb-serial", DRIVER=="ftdi_sio", {ftdi}'
        'ATTR{latency_timer}="1"\n'
    )


def default_user() -> str | None:
    """The user to run as: the sudo caller, else the current user unless that is root."""
    sudo = os.environ.get("SUDO_USER")
    if sudo and sudo != "root":
        return sudo
    import pwd

    try:
        me = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return None
    return None if me == "root" else me


def legato_executable() -> str:
    here = Path(sys.executable).parent / "legato"
    if here.is_file():
        return str(here)
    found = shutil.which("legato")
    if found:
        return str(Path(found).absolute())
    raise ServiceError("cannot find the legato executable; pass --legato /path/to/venv/bin/legato")


def _user_exists(user: str, root: Path) -> bool:
    """Whether `user` exists on the system the unit is for (root's /etc/passwd under an image)."""
    if root.resolve() == Path("/"):
        import pwd

        try:
            pwd.getpwnam(user)
        except KeyError:
            return False
        return True
    try:
        lines = (root / "etc/passwd").read_text(errors="replace").splitlines()
    except OSError:
        return False
    return any(ln.split(":", 1)[0] == user for ln in lines)


def spec_from_args(
    profile_arg: str,
    bundle_dir: str,
    user: str | None,
    name: str,
    link: str,
    usb_id: str | None,
    legato: str | None,
    camera: str = "0",
    *,
    print_only: bool = False,
    root: Path = Path("/"),
    warn: Callable[[str], None] = lambda line: None,
) -> ServiceSpec:
    """The unit's settings from the command line. `print_only` (--print) shows a placeholder when
    no user is known; an explicit --user must exist (under `root` for an image)."""
    from edge.errors import LegatoError
    from edge.profiles import load_profile

    for flag, value in (("--name", name), ("--link", link)):
        if not _NAME.fullmatch(value):
            raise ServiceError(
                f"{flag} {value!r}: letters, digits and . _ - @ only (it names a unit or a /dev link)"
            )
    prof = load_profile(profile_arg)
    who = user or default_user()
    if who is None:
        if not print_only:
            raise ServiceError("the service must run as a non-root user in dialout: pass --user NAME")
        who = USER_PLACEHOLDER
    elif who == "root":
        raise ServiceError("--user root: the loop must not run as root (give a user in the dialout group)")
    elif not _user_exists(who, root):
        where = "here" if root.resolve() == Path("/") else f"in {root}/etc/passwd"
        raise ServiceError(
            f"user {who!r} does not exist {where} (sudo useradd -m -G dialout {who}, or pass --user)"
        )
    bundle = str(Path(bundle_dir).absolute())
    flashed = Path(bundle) / "current" / "profile.toml"
    if flashed.is_file():
        profile_ref = f"{bundle}/current/profile.toml"
        try:
            flashed_name = load_profile(flashed).name
        except LegatoError as e:
            raise ServiceError(f"{flashed}: the profile flashed with the bundle does not load: {e}") from None
        if flashed_name != prof.name:
            warn(
                f"warning: {bundle}/current was flashed with profile {flashed_name}, not {prof.name}; "
                f"the unit runs it with the flashed one ({profile_ref}): flash again with --profile "
                f"{prof.name} to change it"
            )
    else:
        profile_ref = str(Path(prof.path).absolute())
    return ServiceSpec(
        name=name,
        user=who,
        legato=legato or legato_executable(),
        bundle_dir=bundle,
        profile=profile_ref,
        profile_name=prof.name,
        port=prof.serial.port,
        link=link,
        usb_id=parse_usb_id(usb_id) if usb_id else None,
        jetson_clocks=prof.power.jetson_clocks and prof.device.soc != "x86",
        camera=camera,
    )


def _ours(path: Path) -> bool:
    """A unit or rule file this command wrote (its first line says so): only those are replaced."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return MARK in f.readline()
    except OSError:
        return False


def unit_paths(root: Path, s: ServiceSpec) -> tuple[Path, Path]:
    return root / UNIT_DIR / f"{s.name}.service", root / RULES_DIR / f"70-{s.name}-serial.rules"


def install(s: ServiceSpec, root: Path = Path("/"), run=subprocess.run) -> list[str]:
    """Write the unit and the rule under `root`; on the live system also reload systemd and udev
    and enable the unit. Returns the lines to print."""
    from edge.outputs import atomic_file

    live = root.resolve() == Path("/")
    if live and os.geteuid() != 0:
        raise ServiceError(
            "service install writes /etc/systemd and /etc/udev: run it as root "
            f"(sudo {s.legato} service install ...), or --print to see both files"
        )
    if s.user == USER_PLACEHOLDER or not _user_exists(s.user, root):
        raise ServiceError(
            f"user {s.user!r} does not exist here (sudo useradd -m -G dialout {s.user}, or pass --user)"
        )
    unit, rule = unit_paths(root, s)
    atomic_file(unit, render_unit(s).encode(), replace=True, what="unit file", own=_ours)
    atomic_file(rule, render_rule(s).encode(), replace=True, what="udev rule", own=_ours)
    lines = [f"wrote {unit}", f"wrote {rule}"]
    if live:
        for cmd in (
            ["systemctl", "daemon-reload"],
            ["udevadm", "control", "--reload-rules"],
            ["udevadm", "trigger", "--subsystem-match=tty", "--action=change"],
            ["systemctl", "enable", f"{s.name}.service"],
        ):
            out = run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                raise ServiceError(f"{' '.join(cmd)} failed: {' '.join((out.stderr or '').split())[:200]}")
            lines.append(f"ran {' '.join(cmd)}")
        lines.append(f"start it: sudo systemctl start {s.name}  (it also starts when /dev/{s.link} appears)")
    return lines


def status(name: str = DEFAULT_NAME, run=subprocess.run) -> tuple[int, list[str]]:
    """Whether the service runs, and its last status line (from the journal)."""
    if shutil.which("systemctl") is None and run is subprocess.run:
        raise ServiceError("no systemctl here: this machine does not run systemd")
    props = "ActiveState,SubState,MainPID,NRestarts,Result,ExecMainStatus,ActiveEnterTimestamp,LoadState"
    out = run(["systemctl", "show", f"{name}.service", f"--property={props}"], capture_output=True, text=True)
    if out.returncode != 0:
        raise ServiceError(
            f"systemctl show {name}.service failed: {' '.join((out.stderr or '').split())[:200]}"
        )
    p = dict(ln.split("=", 1) for ln in out.stdout.splitlines() if "=" in ln)
    if p.get("LoadState") == "not-found":
        return 3, [f"{name}.service is not installed (sudo legato service install --profile P)"]
    state = f"{p.get('ActiveState', '?')} ({p.get('SubState', '?')})"
    line = f"{name}.service: {state}"
    if p.get("ActiveState") == "active":
        line += f", pid {p.get('MainPID')}, since {p.get('ActiveEnterTimestamp') or '?'}"
    line += f", restarts {p.get('NRestarts', '0')}"
    if p.get("Result") not in (None, "", "success"):
        line += f", last result {p['Result']} (exit status {p.get('ExecMainStatus', '?')})"
    j = run(
        ["journalctl", "-u", f"{name}.service", "-n", "1", "--no-pager", "-o", "cat"],
        capture_output=True,
        text=True,
    )
    last = (j.stdout or "").strip().splitlines()
    lines = [line, f"last status line: {last[-1] if last else '(none in the journal)'}"]
    return (0 if p.get("ActiveState") == "active" else 3), lines

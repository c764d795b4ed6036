"""`legato service`: the unit and rule as text, `systemd-analyze verify`, `udevadm verify`, install
under a root, status from (injected) systemctl and journalctl answers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from deploy import service
from legato.cli import main

USER = "robot"


@pytest.fixture(autouse=True)
def robot_user_exists(monkeypatch):
    """The unit's user must exist: the tests' user "robot" exists in a fake passwd lookup."""
    import pwd

    real = pwd.getpwnam

    def getpwnam(name):
        if name == USER:
            return real("root")  # only existence is asked
        return real(name)

    monkeypatch.setattr(pwd, "getpwnam", getpwnam)


PIPELINE = "v4l2src device=/dev/video0 ! video/x-raw,width=640,height=480 ! videoconvert ! appsink"


def spec(tmp_path: Path, profile: str = "jetson-orin-nano-8gb", usb_id: str | None = "0403:6014:FT8ABC"):
    legato = str(tmp_path / "legato")
    return service.spec_from_args(profile, legato, USER, "legato", "legato-arm", usb_id, None, PIPELINE)


def test_unit_runs_the_current_bundle_as_a_user_in_dialout(tmp_path):
    s = spec(tmp_path)
    unit = service.render_unit(s)
    assert f"ExecStart={s.legato} run --bundle {tmp_path}/legato/current --profile " in unit
    assert unit.count(f'--port /dev/legato-arm --camera "{PIPELINE}"\n') == 1
    for line in (
        "User=robot",
        "SupplementaryGroups=dialout",
        "Restart=on-failure",
        "LimitRTPRIO=80",
        "After=dev-legato\\x2darm.device network.target",
        "BindsTo=dev-legato\\x2darm.device",
        "KillSignal=SIGINT",
        "ExecStartPre=-+/usr/bin/jetson_clocks",
        "WantedBy=multi-user.target",
    ):
        assert line in unit.splitlines(), line
    assert "jetson_clocks" not in service.render_unit(spec(tmp_path, "x86-cpu"))


def test_rule_names_the_port_sets_dialout_latency_and_modemmanager(tmp_path):
    rule = service.render_rule(spec(tmp_path))
    tty, ftdi = [ln for ln in rule.splitlines() if not ln.startswith("#")]
    assert tty.startswith(
        'SUBSYSTEM=="tty", ATTRS{idVendor}=="0403", ATTRS{idProduct}=="6014", ATTRS{serial}=="FT8ABC"'
    )
    for part in (
        'SYMLINK+="legato-arm"',
        'GROUP="dialout"',
        'MODE="0660"',
        'ENV{ID_MM_DEVICE_IGNORE}="1"',
        'TAG+="systemd"',
        'ENV{SYSTEMD_WANTS}+="legato.service"',
    ):
        assert part in tty
    assert 'SUBSYSTEM=="usb-serial", DRIVER=="ftdi_sio"' in ftdi and ftdi.endswith('ATTR{latency_timer}="1"')
    by_kernel = service.render_rule(spec(tmp_path, usb_id=None))
    assert 'KERNEL=="ttyTHS1"' in by_kernel and "--usb-id" in by_kernel


def test_systemd_escape():
    assert service.systemd_escape_path("/dev/legato-arm") == "dev-legato\\x2darm.device"
    assert service.systemd_escape_path("/dev/ttyTHS0") == "dev-ttyTHS0.device"


def install(*argv: str) -> int:
    return main(["service", "install", "--profile", "x86-cpu", "--user", USER, *argv])


def test_print_shows_both_files(tmp_path, capsys):
    rc = install("--bundle-dir", str(tmp_path), "--print")
    out = capsys.readouterr().out
    assert rc == 0 and "# /etc/systemd/system/legato.service\n" in out
    assert "# /etc/udev/rules.d/70-legato-serial.rules\n" in out
    assert not any(tmp_path.iterdir())  # nothing installed


def test_install_under_a_root_writes_both(tmp_path):
    root = tmp_path / "img"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\nrobot:x:1000:1000::/home/robot:/bin/bash\n"
    )
    assert install("--bundle-dir", "/opt/legato", "--root", str(root)) == 0
    unit = root / "etc/systemd/system/legato.service"
    rule = root / "etc/udev/rules.d/70-legato-serial.rules"
    assert "User=robot" in unit.read_text() and 'GROUP="dialout"' in rule.read_text()
    assert oct(unit.stat().st_mode & 0o777) == "0o644"


def test_root_user_is_refused(tmp_path, capsys):
    rc = main(["service", "install", "--profile", "x86-cpu", "--user", "root", "--print"])
    err = capsys.readouterr().err
    assert rc == 2 and "must not run as root" in err and err.count("\n") == 1


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (apt-get install systemd)"
)
@pytest.mark.parametrize("profile", ["x86-cpu", "jetson-orin-nano-8gb"])
def test_unit_passes_systemd_analyze_verify(tmp_path, profile):
    s = spec(tmp_path, profile)
    text = service.render_unit(s)
    if s.jetson_clocks and not Path("/usr/bin/jetson_clocks").exists():
        # verify checks that every executable exists; this machine is not a Jetson
        text = text.replace("ExecStartPre=-+/usr/bin/jetson_clocks", "ExecStartPre=-+/bin/true")
    unit = tmp_path / "legato.service"
    unit.write_text(text)
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    mine = [ln for ln in out.stderr.splitlines() if str(unit) in ln]
    assert mine == [], mine


def test_rule_passes_udevadm_verify(tmp_path):
    if shutil.which("udevadm") is None:
        pytest.skip("udevadm not installed (apt-get install udev)")
    probe = subprocess.run(["udevadm", "verify", "--help"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"this udevadm has no 'verify' (systemd 254+): {probe.stderr.strip()[:80]}")
    rule = tmp_path / "70-legato-serial.rules"
    rule.write_text(service.render_rule(spec(tmp_path)))
    out = subprocess.run(["udevadm", "verify", str(rule)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def fake_systemctl(show: str, journal: str):
    def run(argv, **_kw):
        if argv[0] == "systemctl":
            return subprocess.CompletedProcess(argv, 0, show, "")
        return subprocess.CompletedProcess(argv, 0, journal, "")

    return run


def test_status_running_and_failed():
    show = (
        "ActiveState=active\nSubState=running\nMainPID=812\nNRestarts=0\nResult=success\nExecMainStatus=0\n"
        "ActiveEnterTimestamp=Thu 2026-11-26 08:00:00 UTC\nLoadState=loaded\n"
    )
    rc, lines = service.status("legato", fake_systemctl(show, "episode 3: success, 0 underruns\n"))
    assert rc == 0 and lines[0].startswith("legato.service: active (running), pid 812")
    assert lines[1] == "last status line: episode 3: success, 0 underruns"
    show = (
        "ActiveState=failed\nSubState=failed\nMainPID=0\nNRestarts=10\nResult=exit-code\nExecMainStatus=2\n"
        "LoadState=loaded\n"
    )
    rc, lines = service.status(
        "legato", fake_systemctl(show, "legato: error: port /dev/legato-arm does not exist\n")
    )
    assert rc == 3 and "restarts 10, last result exit-code (exit status 2)" in lines[0]
    assert lines[1].endswith("port /dev/legato-arm does not exist")
    rc, lines = service.status("legato", fake_systemctl("LoadState=not-found\nActiveState=inactive\n", ""))
    assert rc == 3 and "is not installed" in lines[0]


WEIRD = "my robots $HOME 100% ünï"  # spaces, $, %, unicode: allowed in the executable's path too
ARGS = 'bundles "arm" $HOME \\ 100% ünï'  # and quotes and a backslash in the arguments


def _systemd_split(text: str) -> list[str]:
    """The unquoting systemd.service(5) documents for ExecStart (double quotes, C escapes, $$, %%)."""
    out, cur, i, quoted, started = [], [], 0, False, False
    while i < len(text):
        c = text[i]
        if c == "\\" and quoted:
            cur.append({"n": "\n", "t": "\t"}.get(text[i + 1], text[i + 1]))
            i += 2
            continue
        if c == '"':
            quoted, started = not quoted, True
        elif c == " " and not quoted:
            if started or cur:
                out.append("".join(cur))
            cur, started = [], False
        elif c in "$%" and text[i + 1 : i + 2] == c:
            cur.append(c)
            i += 1
        else:
            cur.append(c)
        i += 1
    if started or cur:
        out.append("".join(cur))
    return out


def test_every_path_in_the_unit_is_quoted_and_escaped(tmp_path):
    base = tmp_path / WEIRD
    venv = base / "venv bin"
    venv.mkdir(parents=True)
    legato = venv / "legato"
    legato.write_text("#!/bin/sh\n")
    legato.chmod(0o755)
    s = service.spec_from_args("x86-cpu", str(tmp_path / ARGS), USER, "legato", "legato-arm", None,
                               str(legato), 'v4l2src device="/dev/video0" ! appsink')  # fmt: skip
    unit = service.render_unit(s)
    exec_line = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    argv = _systemd_split(exec_line.removeprefix("ExecStart="))
    assert argv == [str(legato), "run", "--bundle", f"{tmp_path / ARGS}/current", "--profile",
                    str(load_profile_path("x86-cpu")), "--port", "/dev/legato-arm", "--camera",
                    'v4l2src device="/dev/video0" ! appsink']  # fmt: skip
    assert f"WorkingDirectory={str(tmp_path / ARGS).replace('%', '%%')}" in unit.splitlines()
    if shutil.which("systemd-analyze"):  # systemd's own parser: the executable path must resolve
        path = tmp_path / "legato.service"
        path.write_text(unit, encoding="utf-8")
        out = subprocess.run(
            ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60
        )
        mine = [ln for ln in out.stderr.splitlines() if str(path) in ln or "legato" in ln]
        assert mine == [], mine
    quoted = tmp_path / 'q"uote'
    quoted.mkdir()
    with pytest.raises(service.ServiceError, match="systemd cannot run an executable whose path contains"):
        spec = service.spec_from_args("x86-cpu", str(tmp_path), USER, "legato", "legato-arm", None,
                                      str(quoted / "legato"))  # fmt: skip
        service.render_unit(spec)


def load_profile_path(name: str) -> Path:
    from edge.profiles import load_profile

    return Path(load_profile(name).path).absolute()


def test_print_works_without_a_user(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SUDO_USER", raising=False)
    monkeypatch.setattr(service, "default_user", lambda: None)  # as root, no sudo caller
    rc = main(["service", "install", "--profile", "x86-cpu", "--bundle-dir", str(tmp_path), "--print"])
    out = capsys.readouterr().out
    assert rc == 0 and "User=REPLACE_WITH_USER" in out and "placeholder: install with --user NAME" in out
    rc = main(
        ["service", "install", "--profile", "x86-cpu", "--bundle-dir", str(tmp_path), "--root", str(tmp_path)]
    )
    assert rc == 2 and "pass --user NAME" in capsys.readouterr().err


def test_an_unknown_user_is_refused(tmp_path, capsys):
    rc = main(["service", "install", "--profile", "x86-cpu", "--user", "nosuchuser42", "--print"])
    err = capsys.readouterr().err
    assert rc == 2 and "user 'nosuchuser42' does not exist" in err and err.count("\n") == 1
    img = tmp_path / "img"
    (img / "etc").mkdir(parents=True)
    (img / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    rc = main(["service", "install", "--profile", "x86-cpu", "--user", USER, "--root", str(img)])
    assert rc == 2 and f"does not exist in {img}/etc/passwd" in capsys.readouterr().err
    assert not (img / "etc/systemd").exists()


def test_warns_when_the_flashed_profile_differs(tmp_path, capsys):
    from bundles import make_bundle

    from edge.profiles import load_profile

    rel = make_bundle(tmp_path / "opt/releases/tiny-1")
    (tmp_path / "opt/current").symlink_to("releases/tiny-1")
    (rel / "profile.toml").write_text(load_profile("x86-cpu").path.read_text())
    rc = install("--bundle-dir", str(tmp_path / "opt"), "--print")
    assert rc == 0 and "warning" not in capsys.readouterr().err
    rc = main(["service", "install", "--profile", "x86-cpu-feetech", "--user", USER, "--bundle-dir",
               str(tmp_path / "opt"), "--print"])  # fmt: skip
    out = capsys.readouterr()
    assert rc == 0 and "was flashed with profile x86-cpu, not x86-cpu-feetech" in out.err
    assert f"--profile {tmp_path}/opt/current/profile.toml" in out.out


def test_a_unit_file_that_is_not_ours_is_never_replaced(tmp_path, capsys):
    root = tmp_path / "img"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/passwd").write_text("robot:x:1000:1000::/home/robot:/bin/bash\n")
    mine = root / "etc/systemd/system/legato.service"
    mine.write_text("[Unit]\nDescription=my own legato service\n")
    rc = install("--bundle-dir", "/opt/legato", "--root", str(root))
    assert rc == 2 and "is not a unit file written by legato" in capsys.readouterr().err
    assert mine.read_text() == "[Unit]\nDescription=my own legato service\n"
    mine.unlink()
    assert install("--bundle-dir", "/opt/legato", "--root", str(root)) == 0
    assert install("--bundle-dir", "/opt/legato", "--root", str(root)) == 0  # its own file: replaced

"""`legato firmware ...` never destroys what the user points it at, and says what went wrong in one
line (issue 8): --link against every kind of target, a second emulator on the same link, and ping
telling a missing, busy, non-tty port and a bad timeout apart. Runs the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fw_helpers import patient_port, sdk_retry

from firmware_bridge.emulator import EmulatedController, EmulatorConfig
from firmware_bridge.ptyport import LinkGuard, LinkPathError, open_pty

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "firmware_bridge.cli", "firmware"]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("legato: error: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize("kind", ["file", "folder", "foreign link", "dangling foreign link"])
def test_emulate_link_refuses_to_replace_what_is_there_and_leaves_no_temp_link(kind, tmp_path) -> None:
    target = tmp_path / "port"
    if kind == "file":
        target.write_text("user data")
    elif kind == "folder":
        target.mkdir()
        (target / "keep.txt").write_text("user data")
    elif kind == "foreign link":
        (tmp_path / "real").write_text("x")
        target.symlink_to(tmp_path / "real")
    else:
        target.symlink_to("/dev/ttyUSB_not_plugged")
    before = sorted(os.listdir(tmp_path))
    line = one_error_line(run_cli("emulate", "--joints", "2", "--link", str(target), "--duration", "0.1"))
    assert str(target) in line
    assert sorted(os.listdir(tmp_path)) == before  # no temp link, nothing removed
    if kind == "file":
        assert target.read_text() == "user data"
    elif kind == "folder":
        assert (target / "keep.txt").read_text() == "user data"
    else:
        assert target.is_symlink()


def test_second_emulator_refuses_a_live_link_and_the_first_removes_only_its_own(tmp_path) -> None:
    link = str(tmp_path / "arm")
    first = EmulatedController(EmulatorConfig(2), link_path=link)
    try:
        own = os.readlink(link)
        with pytest.raises(LinkPathError, match=f"the live pty of pid {os.getpid()} "):
            EmulatedController(EmulatorConfig(2), link_path=link)
        assert os.readlink(link) == own
        # someone else re-points the link (by hand): the first emulator must leave it alone on exit
        os.unlink(link)
        os.symlink("/dev/null", link)
    finally:
        first.close()
    assert os.readlink(link) == "/dev/null"


def test_a_stale_link_of_a_dead_emulator_is_taken_over_and_removed_on_exit(tmp_path) -> None:
    link = str(tmp_path / "arm")
    os.symlink("/dev/pts/9999", link)  # an emulator that died without cleaning up
    guard = LinkGuard(link, "/dev/pts/0")
    assert os.readlink(link) == "/dev/pts/0"
    guard.release()
    assert not os.path.lexists(link)


def test_the_link_of_a_killed_emulator_naming_our_new_pty_is_taken_over(tmp_path) -> None:
    """A killed emulator leaves its link; Linux gives the next pty the lowest free number, so the
    next emulator's own new pty is usually the one the stale link names. Before: refused as "the
    live pty of another emulator" (it was our own), and the user had to delete the link by hand."""
    link = str(tmp_path / "arm")
    pty = open_pty()
    try:
        os.symlink(pty.path, link)  # what the killed one left, naming the number we were just given
        guard = LinkGuard(link, pty.path)
        assert os.readlink(link) == pty.path
        guard.release()
        assert not os.path.lexists(link)
    finally:
        pty.close()


def test_a_killed_emulator_process_leaves_a_link_the_next_one_takes_over(tmp_path) -> None:
    import signal

    link = str(tmp_path / "arm")
    code = ("import sys, time; from firmware_bridge.emulator import EmulatedController, EmulatorConfig; "
            "c = EmulatedController(EmulatorConfig(2), link_path=sys.argv[1]).start(); "
            "print(c.port, flush=True); time.sleep(600)")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code, link], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == link
        other = open_pty()  # a pty of our own to point the link at (never the live one's number)
        try:
            with pytest.raises(LinkPathError, match=f"live pty of pid {proc.pid} "):
                LinkGuard(link, other.path)  # alive: refused, naming the process that drives it
        finally:
            other.close()
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        ctrl = EmulatedController(EmulatorConfig(2), link_path=link)  # no cleanup happened
        try:
            assert os.path.exists(link) and os.readlink(link).startswith("/dev/pts/")
        finally:
            ctrl.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def test_ping_tells_missing_not_a_tty_busy_and_bad_timeout_apart(tmp_path, emulator) -> None:
    assert "does not exist" in one_error_line(run_cli("ping", "--port", str(tmp_path / "none")))
    (tmp_path / "f").write_text("")
    assert "not a serial port" in one_error_line(run_cli("ping", "--port", str(tmp_path / "f")))
    for bad in ("0", "-1", "nan"):
        line = one_error_line(run_cli("ping", "--port", str(tmp_path / "f"), "--timeout", bad))
        assert "--timeout must be" in line
    ctrl = emulator(2)
    import serial

    with serial.Serial(ctrl.port, exclusive=True):
        line = one_error_line(run_cli("ping", "--port", ctrl.port, "--timeout", "2"))
    assert "in use" in line and f"pid {os.getpid()}" in line


def test_emulate_bus_prints_its_port_and_the_feetech_sdk_pings_it() -> None:
    scs = pytest.importorskip("scservo_sdk")
    proc = subprocess.Popen([*CLI, "emulate", "--bus", "feetech", "--ids", "1-3", "--duration", "60"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/pts/"), port
        ph, handler = patient_port(scs, port), scs.PacketHandler(0)
        assert ph.openPort()
        try:
            pings = [sdk_retry(lambda: handler.ping(ph, i), scs.COMM_SUCCESS)[1] for i in (1, 2, 3)]  # noqa: B023
            assert pings == [scs.COMM_SUCCESS] * 3
        finally:
            ph.closePort()
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "needs --ids" in one_error_line(run_cli("emulate", "--bus", "dynamixel"))


def test_emulate_bus_refuses_a_calibration_it_cannot_hold_in_one_line(tmp_path) -> None:
    cal = str(Path(__file__).resolve().parent / "fixtures" / "so101_lerobot_calibration.json")
    line = one_error_line(run_cli("emulate", "--bus", "feetech", "--ids", "1-3", "--calibration", cal))
    assert "servo ids [4, 5, 6], not on this bus [1, 2, 3]" in line
    assert "no such file" in one_error_line(
        run_cli("emulate", "--bus", "feetech", "--calibration", str(tmp_path / "none.json"))
    )
    (tmp_path / "bad.json").write_text("{}")
    assert "not a LeRobot calibration" in one_error_line(
        run_cli("emulate", "--bus", "feetech", "--calibration", str(tmp_path / "bad.json"))
    )

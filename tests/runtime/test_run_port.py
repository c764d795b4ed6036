"""`legato run --port`: a robot's path, against emulated devices on a pty; every input is checked
before anything talks to the motors, and the run reports and stops as a robot run must."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge.errors import UsageError
from edge.launch import parse_tokens
from edge.profiles import PROFILE_DIR
from legato.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def controller(tmp_path):
    """The emulated motor controller on a pty (in process: the test sees what reached it)."""
    from firmware_bridge.emulator import EmulatedController, EmulatorConfig

    emu = EmulatedController(EmulatorConfig(n_joints=3, tick_hz=1000), link_path=str(tmp_path / "ttyCTL"))
    emu.start()
    yield emu
    emu.close()


def relaxed_profile(tmp_path, base: str = "x86-cpu") -> str:
    """The profile with stale_ms 1000: these emulators run in this (possibly loaded) test process,
    so their telemetry can be late in ways a robot's controller's is not (the stale tests set it)."""
    text = (PROFILE_DIR / f"{base}.toml").read_text().replace("stale_ms = 100 ", "stale_ms = 1000")
    path = tmp_path / f"{base}-relaxed.toml"
    path.write_text(text.replace('calibration = "', f'calibration = "{PROFILE_DIR}/'))
    return str(path)


def one_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("legato: error:"), err
    return lines[0]


def run(capsys, *args: str) -> tuple[int, str]:
    rc = main(["run", *args])
    return rc, capsys.readouterr().err


def test_tokens_are_padded_and_range_checked():
    np.testing.assert_array_equal(parse_tokens("2, 5,13", 6, 14), [2, 5, 13, 0, 0, 0])  # padded with <pad>
    np.testing.assert_array_equal(parse_tokens(None, 6, 14), [0] * 6)
    for text, needle in (("a,b", "'a' is not an integer"), ("1,2,3,4,5,6,7", "7 ids; .* at most 6"),
                         ("2,14", r"id 14 is outside .* \(0..13\)"), ("-1", "id -1")):  # fmt: skip
        with pytest.raises(UsageError, match=needle):
            parse_tokens(text, 6, 14)


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--tokens", "a,b"], "is not an integer"),  # before: a traceback
        (["--tokens", "1,2,3,4,5,6,7"], "at most 6"),  # before: failed in the worker, torque on
        (["--tokens", "99"], "outside the bundle's vocabulary"),  # before: accepted
        (["--camera", "/nonexistent/cam.avi"], "OpenCV cannot open it"),  # before: found after torque on
    ],
)
def test_bad_input_is_refused_before_anything_reaches_the_controller(bundle, controller, video, capsys,
                                                                     extra, needle):  # fmt: skip
    args = ["--bundle", str(bundle), "--port", controller.port, "--seconds", "1", "--camera", video, *extra]
    rc, err = run(capsys, *args)
    assert rc == 2 and needle in one_line(err)
    time.sleep(0.1)
    assert controller.core.rx_good + controller.core.rx_bad == 0  # not one frame: no handshake, no torque


def test_a_bundle_for_another_arm_is_refused_before_the_motors(bundle, controller, video, capsys, tmp_path):
    text = (PROFILE_DIR / "x86-cpu.toml").read_text()
    text = text.replace("q_max = [3.49, 2.9, 2.9]", "q_max = [3.0, 2.9, 2.9]")
    prof = tmp_path / "narrow.toml"
    prof.write_text(text)
    rc, err = run(capsys, "--bundle", str(bundle), "--profile", str(prof), "--port", controller.port,
                  "--camera", video, "--seconds", "1")  # fmt: skip
    assert rc == 2 and "'shoulder' span [-0.35, 3.49]" in one_line(err)
    assert controller.core.rx_good == 0


def test_run_port_against_a_freshly_started_controller(bundle, tmp_path, video, capsys):
    """The controller starts the moment before the run (as `legato firmware emulate` does): the run
    waits for its first telemetry instead of reading it once, and drives it."""
    from firmware_bridge.emulator import EmulatedController, EmulatorConfig

    out = tmp_path / "s.json"
    emu = EmulatedController(EmulatorConfig(n_joints=3, tick_hz=1000), link_path=str(tmp_path / "tty"))
    emu.start()
    try:
        prof = relaxed_profile(tmp_path)
        rc, err = run(capsys, "--bundle", str(bundle), "--profile", prof, "--port", emu.port,
                      "--camera", video, "--tokens", "2,5,8", "--seconds", "2", "--quiet",
                      "--summary-json", str(out))  # fmt: skip
        applied = emu.core.last_applied_seq
    finally:
        emu.close()
    assert rc == 0, err
    s = json.loads(out.read_text())
    assert s["shutdown"] == "completed" and s["ticks"] > 50 and s["chunks"] > 5 and s["errors"] == []
    # no NaN; a fault tick here is a hold on stale joint state (an emulator starved by a loaded machine)
    assert s["nan_setpoints"] == 0 and s["faults"] == s["stale_ticks"]
    assert s["hold_sent"] and s["hold_confirmed"] is None and applied > 0
    assert s["graph"] == "fused" and s["kind"] == "legato run summary"


def test_run_port_against_the_emulated_feetech_bus(bundle, tmp_path, video, capsys):
    from firmware_bridge.servo_emulator import EmulatedServoBus, ServoEmulatorConfig

    out = tmp_path / "s.json"
    emu = EmulatedServoBus(ServoEmulatorConfig("feetech", (1, 2, 3)), link_path=str(tmp_path / "tty"))
    emu.start()
    try:
        prof = relaxed_profile(tmp_path, "x86-cpu-feetech")
        rc, err = run(capsys, "--bundle", str(bundle), "--profile", prof, "--port", emu.port,
                      "--camera", video, "--seconds", "2", "--quiet", "--summary-json", str(out))  # fmt: skip
        homing = [sv.homing for sv in emu.servos.values()]
    finally:
        emu.close()
    assert rc == 0, err
    s = json.loads(out.read_text())
    assert s["shutdown"] == "completed" and s["ticks"] > 50 and len(s["bus.reply_timeouts"]) == 3
    assert homing == [1023, 0, 0]  # the profile's calibration reached the servos


def test_summary_json_never_replaces_a_foreign_file(bundle, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# my notes\n")
    rc, err = run(capsys, "--bundle", str(bundle), "--sim", "--episodes", "1", "--summary-json", str(readme))
    assert rc == 2 and "not a run summary written by legato" in one_line(err)
    assert readme.read_text() == "# my notes\n"  # before: replaced without a word
    own = tmp_path / "s.json"
    for _ in range(2):  # its own summary is replaced
        rc, err = run(capsys, "--bundle", str(bundle), "--sim", "--episodes", "1", "--quiet",
                      "--summary-json", str(own))  # fmt: skip
        assert rc == 0, err
    assert json.loads(own.read_text())["episodes"] == 1


def test_consecutive_fault_ticks_stop_the_run_non_zero(bundle, tmp_path, capsys, monkeypatch):
    """A policy that puts out NaN holds on every tick: the run stops after max_fault_ticks with the
    reason (before: it held on every tick and exited 0)."""
    from edge.denoiser import ChunkDenoiser

    def nan_chunk(self, eps, prev_tail, req):
        self.chunk[...] = np.nan
        return self.chunk

    monkeypatch.setattr(ChunkDenoiser, "denoise", nan_chunk)
    # the bundle is sound (verify's forward pass would refuse a NaN bundle): the NaN is a run-time fault
    monkeypatch.setattr("edge.bundle._forward_check", lambda m, engines: None)
    text = (PROFILE_DIR / "x86-cpu.toml").read_text().replace("max_fault_ticks = 50", "max_fault_ticks = 10")
    prof = tmp_path / "p.toml"
    prof.write_text(text)
    out = tmp_path / "s.json"
    rc, err = run(capsys, "--bundle", str(bundle), "--profile", str(prof), "--sim", "--episodes", "3",
                  "--quiet", "--summary-json", str(out))  # fmt: skip
    line = [x for x in err.splitlines() if x.startswith("legato: error:")]
    assert rc == 2 and len(line) == 1 and "10 consecutive fault ticks" in line[0]
    s = json.loads(out.read_text())
    assert s["shutdown"] == "faults" and s["faults"] >= 10 and s["max_fault_streak"] >= 10
    assert s["nan_setpoints"] == s["faults"] and s["hold_sent"] and s["hold_confirmed"]


def test_max_step_zero_is_refused_in_the_words_of_its_range():
    cmd = [sys.executable, "-m", "legato.cli", "run", "--bundle", "b", "--sim", "--max-step", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60)
    # before: "must be a 0.0..10.0 number, got 0"
    assert proc.returncode == 2 and "must be a number > 0.0 and <= 10.0, got 0" in proc.stderr

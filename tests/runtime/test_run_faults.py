"""A robot run's faults as a robot has them: the port pulled and plugged back, one servo silent
past stale_ms. `legato run --port` against `legato firmware emulate` (the controller, and the
Feetech bus), each started the moment before with its faults scheduled (--unplug, --silent), and
the same scenarios through --sim; the summaries say why, with the same fields. Behaviour, not
timing: the numbers asserted are counts a loaded machine changes only upwards."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

from edge.clock import CPU_DMA_LATENCY
from edge.profiles import PROFILE_DIR
from legato.cli import main

ROOT = Path(__file__).resolve().parents[2]
# the faults are scheduled from the emulator's start: late enough that the run (bundle, clock
# process, handshake) is in its loop even on a loaded machine
T0 = 6.0
# what every run's summary says about faults, on a port and in --sim alike
FIELDS = {"shutdown", "shutdown_reason", "port_events", "stale_ticks", "stale_joints", "faults",
          "max_fault_streak", "nan_setpoints", "reply_timeouts", "hold_sent", "bus.reconnects", "ticks",
          "clock.process", "clock.policy", "clock.wake_latency_us"}  # fmt: skip


def profile(tmp_path, base: str, stale_ms: int = 300, max_fault_ticks: int = 2000, extra: str = "") -> str:
    """``base`` with the stale limit and fault-tick budget of the test (calibration by absolute path);
    ``extra``: lines added to its [power] table."""
    text = (PROFILE_DIR / f"{base}.toml").read_text()
    text = text.replace("[power]\n", f"[power]\n{extra}")
    text = text.replace("stale_ms = 100 ", f"stale_ms = {stale_ms} ")
    text = text.replace("max_fault_ticks = 50 ", f"max_fault_ticks = {max_fault_ticks} ")
    text = text.replace('calibration = "', f'calibration = "{PROFILE_DIR}/')
    path = tmp_path / f"{base}-test.toml"
    path.write_text(text)
    return str(path)


def emulate(link: Path, *args: str) -> subprocess.Popen:
    """`legato firmware emulate ... --link LINK`, returned once its pty is up (its first stdout line)."""
    cmd = [sys.executable, "-m", "legato.cli", "firmware", "emulate", *args, "--link", str(link)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    ready, _, _ = select.select([proc.stdout], [], [], 60.0)
    assert ready and proc.stdout.readline().strip(), "the emulator did not start"
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_port(capsys, bundle, prof: str, link: Path, video: str, seconds: float, out: Path) -> tuple[int, str]:
    rc = main(["run", "--bundle", str(bundle), "--profile", prof, "--port", str(link), "--camera", video,
               "--seconds", str(seconds), "--reconnect-s", "8", "--quiet",
               "--summary-json", str(out)])  # fmt: skip
    return rc, capsys.readouterr().err


def test_port_pulled_from_the_controller_holds_reconnects_and_reports(bundle, tmp_path, video, capsys):
    link = tmp_path / "ttyCTL"
    emu = emulate(link, "--joints", "3", "--unplug", f"{T0}:1.0")  # the cable out T0 s in, for 1 s
    try:
        prof = profile(tmp_path, "x86-cpu", extra="cpu_wake_latency_us = 0\n")
        rc, err = run_port(capsys, bundle, prof, link, video, T0 + 4, tmp_path / "s.json")
    finally:
        stop(emu)
    assert rc == 0, err
    s = json.loads((tmp_path / "s.json").read_text())
    assert set(s) >= FIELDS
    ev = s["port_events"]
    assert len(ev) == 1 and ev[0]["reconnected"] and ev[0]["reconnects"] >= 1 and s["bus.reconnects"] >= 1
    assert s["shutdown"] == "completed" and s["hold_sent"] and s["nan_setpoints"] == 0
    assert s["clock.process"] == "process" and s["ticks"] > 100
    # the profile's cpu_wake_latency_us (0) was held by the clock process where it may be (root)
    assert s["clock.wake_latency_us"] == (0 if os.access(CPU_DMA_LATENCY, os.W_OK) else None)
    assert s["clock.gc_frozen"] > 1000  # its imports and bus, out of the cyclic GC's full collections


def test_feetech_bus_port_pulled_and_one_servo_silent(bundle, tmp_path, video, capsys):
    """The emulated Feetech bus: unplugged T0 s in for 1 s (the servo bus reconnects), then servo 2
    (the elbow) silent for 1.5 s from T0 + 4 s: the loop holds on its stale state (past stale_ms
    300) and resumes; the summary counts the holds on the elbow and the replies that never came."""
    link = tmp_path / "ttyFT"
    emu = emulate(
        link, "--bus", "feetech", "--ids", "1-3", "--unplug", f"{T0}:1.0", "--silent", f"2:{T0 + 4}:1.5"
    )
    try:
        prof = profile(tmp_path, "x86-cpu-feetech")
        rc, err = run_port(capsys, bundle, prof, link, video, T0 + 7.5, tmp_path / "s.json")
    finally:
        stop(emu)
    assert rc == 0, err
    s = json.loads((tmp_path / "s.json").read_text())
    assert set(s) >= FIELDS and len(s["bus.reply_timeouts"]) == 3
    ev = s["port_events"]
    assert len(ev) == 1 and ev[0]["reconnected"] and s["shutdown"] == "completed"
    sj = s["stale_joints"]
    # 1.5 s silent, stale after 0.3 s: about 60 ticks at 50 Hz held for the elbow alone
    assert sj["elbow"] - max(sj["shoulder"], sj["wrist"]) >= 30, sj
    assert s["stale_ticks"] >= sj["elbow"] and s["faults"] >= s["stale_ticks"] and s["nan_setpoints"] == 0
    assert s["bus.reply_timeouts"][1] > max(s["bus.reply_timeouts"][0], s["bus.reply_timeouts"][2])
    assert s["reply_timeouts"] >= s["bus.reply_timeouts"][1] and s["hold_sent"]
    assert s["clock.wake_latency_us"] is None  # the profile's default: the CPUs' idle states left alone


def test_a_servo_silent_past_the_fault_budget_stops_the_run_and_says_why(bundle, tmp_path, video, capsys):
    link = tmp_path / "ttyFT"
    emu = emulate(link, "--bus", "feetech", "--ids", "1-3", "--silent", f"3:{T0}:60")  # the wrist, for good
    try:
        prof = profile(tmp_path, "x86-cpu-feetech", stale_ms=200, max_fault_ticks=25)
        rc, err = run_port(capsys, bundle, prof, link, video, T0 + 20, tmp_path / "s.json")
    finally:
        stop(emu)
    lines = [x for x in err.splitlines() if x.startswith("legato: error:")]
    assert rc == 2 and len(lines) == 1, err
    assert "25 consecutive fault ticks" in lines[0] and "wrist older than stale_ms 200" in lines[0]
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["shutdown"] == "faults" and "wrist" in s["shutdown_reason"] and s["stale_joints"]["wrist"] >= 25
    assert s["ticks"] < (T0 + 10) * 50 and s["hold_sent"]  # it stopped, well before --seconds


def test_the_same_scenarios_through_sim_give_the_same_summary_fields(bundle, tmp_path):
    """--sim on the Feetech profile: one servo silent past the (sim's) stale limit, then the port
    pulled and plugged back; the summary has the fields the --port runs have, saying the same."""
    from edge.launch import launch
    from edge.simrig import SIM_STALE_MS

    sess = launch(str(bundle), "x86-cpu-feetech", sim=True, episodes=30, seed=1000, reconnect_s=8.0)
    rig = sess.rig
    emu = rig.sim.emu
    try:
        t = threading.Thread(target=sess.run_sim, args=(None, 9.0))
        t.start()
        time.sleep(1.5)
        emu.set_silent(2, True)  # the elbow, past the stale limit (by half a second: 25 holds, within
        time.sleep(SIM_STALE_MS / 1000 + 0.5)  # the profile's 50-tick fault budget)
        emu.set_silent(2, False)
        time.sleep(1.0)
        emu.unplug()
        time.sleep(1.0)
        emu.replug()
        t.join(timeout=60)
        assert not t.is_alive()
    finally:
        rig.close()
    s = sess.summary()
    assert set(s) >= FIELDS
    sj = s["stale_joints"]
    assert sj["elbow"] - max(sj["shoulder"], sj["wrist"]) >= 10, sj
    ev = s["port_events"]
    assert len(ev) == 1 and ev[0]["reconnected"] and s["shutdown"] == "completed" and s["hold_sent"], s[
        "shutdown"
    ]

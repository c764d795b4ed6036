"""`legato run` / `legato profile` end to end: bundle + simulated arm + emulated controller on a pty."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from legato.cli import main

LEGATO = [sys.executable, "-m", "legato.cli"]


def run_cli(args, capsys=None):
    rc = main(args)
    err = capsys.readouterr().err if capsys is not None else ""
    return rc, err


def test_run_sim_episodes_and_summary(bundle, tmp_path, capsys):
    out = tmp_path / "summary.json"
    args = ["run", "--bundle", str(bundle), "--sim", "--episodes", "2", "--summary-json", str(out),
            "--graph", "stepwise"]  # fmt: skip
    rc, err = run_cli(args, capsys)
    assert rc == 0, err
    s = json.loads(out.read_text())
    assert s["episodes"] == 2 and 0.0 <= s["success_rate"] <= 1.0 and s["graph"] == "stepwise"
    assert s["shutdown"] == "completed" and s["hold_sent"] and s["hold_confirmed"]
    # no NaN; a fault tick here is a hold on stale joint state (an emulator starved by a loaded machine)
    assert s["nan_setpoints"] == 0 and s["faults"] == s["stale_ticks"] and s["errors"] == []
    assert s["delay_mode"] >= 1 and s["chunks"] >= 4 and s["ticks"] > 50
    for k in (
        "control.period_error_ms.p99",
        "chunk.latency_ms.p50",
        "chunk.prefix_ms.p90",
        "chunk.flow_step0_ms.p99",
        "chunk.compute_ms.max",
        "control.setpoint_write_ms.p50",
        "underruns",
        "missed_ticks",
        "completion_s",
        "delay_estimate",
        "telemetry.rtt_ms.p99",
    ):
        assert k in s, k
    assert "legato run: 2 episodes" in err


def _wait_line(proc, needle, timeout):
    """Read the child's stderr until a line contains needle (bounded by timeout)."""
    end = time.monotonic() + timeout
    buf = b""
    fd = proc.stderr.fileno()
    while time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
            if needle.encode() in buf:
                return buf.decode()
    raise AssertionError(f"{needle!r} not seen in {timeout} s: {buf.decode()[-500:]}")


def test_sigterm_holds_then_closes(bundle, tmp_path):
    out = tmp_path / "s.json"
    proc = subprocess.Popen(
        [*LEGATO, "run", "--bundle", str(bundle), "--sim", "--seconds", "120", "--summary-json", str(out)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        _wait_line(proc, "legato run: episode", 60)  # the loop is streaming
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0
    s = json.loads(out.read_text())
    assert s["shutdown"] == "SIGTERM" and s["hold_sent"] and s["hold_confirmed"]
    assert s["ticks"] > 0


def test_bundle_with_a_bad_hash_is_refused(bundle, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(bundle, bad)
    p = bad / "flow_head.onnx"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    rc, err = run_cli(["run", "--bundle", str(bad), "--sim", "--episodes", "1"], capsys)
    assert rc == 2
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("legato: error:") and "sha256" in lines[0]


@pytest.mark.parametrize(
    "key,value,needle", [("num_steps", 4, "N=4 steps"), ("d_max", 5, "d_max=5"), ("horizon", 12, "H=12")]
)
def test_profile_asking_for_other_n_or_dmax_is_refused(bundle, tmp_path, capsys, key, value, needle):
    from edge.profiles import profile_path

    text = profile_path("x86-cpu").read_text()
    lines = []
    for ln in text.splitlines():
        if ln.split("=")[0].strip() == key:
            ln = f"{key} = {value}"
        if ln.strip() == "[control]" and key in ("horizon", "num_steps"):  # H, N: the bundle's unless pinned
            ln = f"[control]\n{key} = {value}"
        if ln.split("=")[0].strip() == "ramp" and key != "num_steps":
            ln = "ramp = 0"
        if ln.split("=")[0].strip() == "execution_horizon" and key == "horizon":
            ln = "execution_horizon = 6"
        lines.append(ln)
    prof = tmp_path / "p.toml"
    prof.write_text("\n".join(lines) + "\n")
    rc, err = run_cli(
        ["run", "--bundle", str(bundle), "--profile", str(prof), "--sim", "--episodes", "1"], capsys
    )
    assert rc == 2 and err.startswith("legato: error:") and needle in err, err


def test_port_lost_mid_run_holds_reconnects_and_reports(bundle):
    """Unplug the emulated controller mid-episode: the loop stops taking chunks and holds, the bridge
    reconnects once the port is back, the session resumes with the next episode, and the report
    says what happened. Without the port coming back, the session stops with port-lost."""
    from edge.launch import launch

    for replug in (True, False):
        sess = launch(str(bundle), "x86-cpu", sim=True, episodes=3, seed=1000, reconnect_s=3.0)
        rig = sess.rig
        try:
            t = threading.Thread(target=sess.run_sim, args=(3, 60.0))
            t.start()
            end = time.monotonic() + 30
            while (sess.loop is None or sess.loop.ticks < 20) and time.monotonic() < end:
                time.sleep(0.02)
            rig.sim.emu.unplug()
            lost = time.monotonic()
            while not sess.port_events and time.monotonic() - lost < 10 and replug:
                if time.monotonic() - lost > 0.5 and rig.sim.emu.transport is None:
                    rig.sim.emu.replug()
                time.sleep(0.02)
            t.join(timeout=60)
            assert not t.is_alive()
        finally:
            rig.close()
        s = sess.summary()
        ev = s["port_events"]
        assert len(ev) == 1 and ev[0]["reconnected"] is replug
        if replug:
            assert s["shutdown"] == "completed" and s["episodes"] >= 1 and ev[0]["reconnects"] >= 1
        else:
            assert s["shutdown"] == "port-lost" and ev[0]["after_s"] >= 3.0
        assert s["hold_sent"] and s["nan_setpoints"] == 0


class _Health:
    def __init__(self, connected: bool, reconnects: int) -> None:
        self.connected, self.configured, self.reconnects = connected, connected, reconnects


class _ReconnectingBus:
    """A bus whose health is scripted: each health() call takes the next entry (the last repeats)."""

    def __init__(self, script: list[_Health]) -> None:
        self.script = script

    def health(self) -> _Health:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]


def test_a_reconnect_before_the_session_waits_for_it_is_counted():
    """The bus may be back before the session starts waiting (it sends the hold and drains first):
    the reconnect count is taken from the health that said the port was gone, not sampled later."""
    from types import SimpleNamespace

    from edge.session import Session

    bus = _ReconnectingBus([_Health(False, 0), _Health(True, 1)])
    sess = Session(None, None, None, None, rig=SimpleNamespace(bus=bus, plant=None), make_source=lambda: None,
                   reconnect_s=1.0)  # fmt: skip
    assert sess._port_lost()  # the loop sees the port gone; the next health() finds it back
    assert sess._wait_reconnect()
    (ev,) = sess.port_events
    assert ev["reconnected"] and ev["reconnects"] == 1


def test_a_port_gone_and_back_between_two_looks_is_still_a_port_event():
    """The session never saw connected = False (a short unplug while it waited for telemetry, or
    the session starved at load 7: CI's test_feetech_bus_port_pulled_and_one_servo_silent found
    no port event), but the bus's reconnect count moved: the same lost-port path, reported."""
    from types import SimpleNamespace

    from edge.session import Session

    bus = _ReconnectingBus([_Health(True, 0), _Health(True, 1)])
    sess = Session(None, None, None, None, rig=SimpleNamespace(bus=bus, plant=None), make_source=lambda: None,
                   reconnect_s=1.0)  # fmt: skip
    assert not sess._port_lost()  # connected, no reconnect since the session looked
    assert sess._port_lost()  # still connected, but reconnected once meanwhile
    assert sess._wait_reconnect()
    (ev,) = sess.port_events
    assert ev["reconnected"] and ev["reconnects"] == 1
    assert not sess._port_lost()  # that reconnect is accounted for


def test_profile_sim_writes_four_outputs_and_a_valid_trace(bundle, tmp_path, capsys):
    out = tmp_path / "prof"
    args = ["profile", "--bundle", str(bundle), "--sim", "--seconds", "3", "--out", str(out),
            "--graph", "stepwise"]  # fmt: skip
    rc, err = run_cli(args, capsys)
    assert rc == 0, err
    # its own name on its status lines (before: "legato run: ...")
    assert "legato profile: episode 1 rate" in err and "legato run:" not in err
    for f in ("summary.json", "trace.json", "profile.png"):
        assert (out / f).stat().st_size > 100
    s = json.loads((out / "summary.json").read_text())
    assert s["control.period_error_ms.p99"] is not None and "underruns" in s
    assert s["chunk.flow_step4_ms.p50"] > 0 and s["source"] == "sim"
    assert (out / "profile.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    check_trace(out / "trace.json", s)


def check_trace(path: Path, s: dict) -> None:
    """The trace-event JSON is well formed (both threads named, every X event with ts and dur >= 0),
    and it loads in Perfetto's trace processor where its binary is available (it is downloaded on
    first use, which this machine cannot do: then the structural check is what runs)."""
    doc = json.loads(path.read_text())
    ev = doc["traceEvents"]
    names = {e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names == {"control clock", "inference worker"}
    xs = [e for e in ev if e["ph"] == "X"]
    assert all(isinstance(e["ts"], (int, float)) and e["dur"] >= 0 for e in xs)
    ticks = [e for e in xs if e["tid"] == 1]
    chunks = [e for e in xs if e["tid"] == 2 and e["name"].startswith("chunk ")]
    assert len(ticks) == s["ticks"] and len(chunks) == s["chunks"]
    assert {"prefix", "step0", "blend"} <= {e["name"] for e in xs if e["tid"] == 2}
    tp_bin = os.environ.get("PERFETTO_TP_BIN") or shutil.which("trace_processor_shell")
    if tp_bin is None:
        return
    from perfetto.trace_processor import TraceProcessor, TraceProcessorConfig

    tp = TraceProcessor(trace=str(path), config=TraceProcessorConfig(bin_path=tp_bin, load_timeout=30))
    try:
        n = next(iter(tp.query("select count(*) as n from slice"))).n
        threads = {r.name for r in tp.query("select name from thread") if r.name}
    finally:
        tp.close()
    assert n == len(xs) and {"control clock", "inference worker"} <= threads


def test_profile_synthetic_and_refusals(bundle, tmp_path, capsys):
    out = tmp_path / "syn"
    args = ["profile", "--bundle", str(bundle), "--synthetic", "--seconds", "1", "--out", str(out)]
    rc, err = run_cli(args, capsys)
    assert rc == 0, err
    s = json.loads((out / "summary.json").read_text())
    assert s["source"] == "synthetic" and s["chunks"] >= 10 and s["chunk.compute_ms.p50"] > 0
    args = ["profile", "--bundle", str(bundle), "--synthetic", "--seconds", "1", "--out", str(out)]
    rc, err = run_cli(args, capsys)
    assert rc == 2 and "--force" in err


def test_opencv_video_file_source(tmp_path):
    cv2 = pytest.importorskip("cv2")
    from edge.sources import OpenCVSource

    path = str(tmp_path / "v.avi")
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for k in range(3):
        frame = np.zeros((120, 160, 3), np.uint8)
        frame[..., 2] = 200  # red in BGR
        frame[:, : 40 * (k + 1), 1] = 255
        w.write(frame)
    w.release()
    src = OpenCVSource(path, (48, 64), np.array([2, 5, 0, 0, 0, 0]), None, 6)
    frames = [src.read() for _ in range(5)]  # the file loops
    src.close()
    f = frames[0]
    assert f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8
    assert f.image[..., 0].mean() > 150 and f.image[..., 2].mean() < 60  # converted to RGB
    assert f.preprocess_s > 0 and f.capture_time <= frames[1].capture_time
    assert f.state.shape == (6,) and list(f.tokens[:2]) == [2, 5]


def test_fused_graph_matches_the_stepwise_denoiser(bundle):
    """The bundle's fused graph and the prefix + N flow-head path give the same chunk (same noise,
    same reference, same omega), so --fused is only a speed choice."""
    from edge.assembly import load
    from edge.policy import ChunkRequest

    _, _, step = load(str(bundle), "x86-cpu", fused=False)
    _, _, fused = load(str(bundle), "x86-cpu", fused=True)
    assert fused.stage_names == ("fused", "blend", "engines", "chunk")
    rng = np.random.default_rng(3)
    sp = step.spec
    for first in (True, False):
        img = rng.integers(0, 255, (*sp.image_hw, 3), dtype=np.uint8)
        tok = np.array([2, 5, 8, 0, 0, 0])
        state = np.concatenate([np.array([0.6, 2.6, -1.7]), 0.1 * rng.normal(size=3)]).astype(np.float32)
        eps = rng.standard_normal((1, 16, 3)).astype(np.float32)
        tail = None if first else (state[:3] + 0.05 * rng.normal(size=(8, 3))).astype(np.float32)
        req = ChunkRequest(d=2, s=8, r=6)
        outs = []
        for den in (step, fused):
            den.set_observation(img, tok, state)
            outs.append(den.denoise(eps, tail, req).copy())
        np.testing.assert_allclose(outs[0], outs[1], atol=2e-4)


def test_a_timed_sim_run_cycles_its_episodes_until_the_time_is_up(bundle):
    """`legato run --sim --seconds S` samples min(S / 0.5 + 1, 200) held-out episodes; a run that
    outlasts them starts them again (before: it stopped after the last one, a 600 s soak after
    ~370 s, "completed")."""
    from edge.launch import launch

    sess = launch(str(bundle), "x86-cpu", sim=True, episodes=1, seed=1000)  # one episode sampled
    try:
        sess.run_sim(None, 6.0)  # an episode of the reference task takes ~1.5-2 s
    finally:
        sess.rig.close()
    s = sess.summary()
    assert s["episodes"] >= 2 and set(s["episode_indices"]) == {0}
    assert s["shutdown"] == "completed"

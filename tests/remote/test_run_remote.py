"""`legato run --sim --remote` against `legato serve`: the same loop over loopback, and the arm
holding without a jump while the server is slow, killed, or restarted."""

from __future__ import annotations

import importlib.util
import json
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from remote_helpers import ROOT, RemoteRun, start_serve, stop

from edge.remote.client import RemoteDenoiser
from legato.cli import main


def _wait_chunks(den: RemoteDenoiser, n: int, timeout_s: float = 30.0) -> None:
    t_end = time.monotonic() + timeout_s
    while den.chunks < n:
        assert time.monotonic() < t_end, f"only {den.chunks} chunks came back"
        time.sleep(0.02)


def test_run_sim_remote_over_loopback():
    proc, port = start_serve("--quiet")
    try:
        run = RemoteRun(f"ws://127.0.0.1:{port}", episodes=2).start()
        s = run.join()
    finally:
        stop(proc)
    assert s["episodes"] == 2 and s["errors"] == [] and s["remote.errors"] == []
    assert s["chunks"] == s["remote.chunks"] > 10 and s["chunks_unavailable"] == 0
    assert s["chunk.network_ms.n"] == s["chunks"] - 1  # network time as its own stage
    assert s["chunk.server_ms.p50"] >= s["chunk.engines_ms.p50"] > 0
    assert s["delay_mode"] >= 1  # the network and the engine together take more than one tick
    assert s["nan_setpoints"] == 0 and s["faults"] == 0


def test_server_killed_mid_episode_and_restarted_the_arm_holds_and_resumes_without_a_jump():
    proc, port = start_serve("--quiet")
    try:
        run = RemoteRun(f"ws://127.0.0.1:{port}", "--remote-timeout-ms", "300", episodes=4).start()
        den, plant = run.session.den, run.session.plant
        den.backoff_max_s = 0.2  # retry often: the restart (~2-3 s here) must end inside the 5 s episode
        _wait_chunks(den, 5)
        t_end = time.monotonic() + 60
        # early in an episode after the first (the link is warm; the hold ends inside the episode)
        while not (plant.result.index >= 1 and 5 <= plant.result.steps <= 40):
            assert time.monotonic() < t_end and plant.result.index <= 2, "missed the episodes' starts"
            time.sleep(0.002)
        stop(proc, signal.SIGKILL)  # no close frame: the link just dies
        t_kill = time.monotonic()
        n0 = len(run.setpoints)
        time.sleep(0.6)  # > d_max periods (80 ms) and > H - s periods: the arm runs out and holds
        held = run.setpoints[n0 + 25 :]
        proc, port2 = start_serve("--quiet", port=port)
        assert port2 == port
        s = run.join()
    finally:
        stop(proc)
    assert time.monotonic() - t_kill > 0.6
    assert len(held) > 0 and all((h == held[0]).all() for h in held)  # holding, one setpoint
    assert s["episodes"] == 4 and s["errors"] == []
    assert s["chunks_unavailable"] >= 1 and s["remote.reconnects"] == 1 and s["underruns"] > 0
    assert s["remote.disconnects"] >= 1
    # nothing jumps: no setpoint beyond the per-tick step limit, and the first one after the hold
    # moves no more than the arm's ordinary steps (up to ~0.1 rad/tick in these episodes)
    assert run.max_step() <= run.args_max_step()
    sp = run.setpoints
    resume = next(i for i in range(n0 + 25 + len(held), len(sp)) if (sp[i] != held[0]).any())
    assert run.episode_of[resume] == run.episode_of[n0]  # resumed in the episode it held in
    steps = [
        abs(sp[i] - sp[i - 1]).max()
        for i in range(n0 - 100, n0)
        if run.episode_of[i] == run.episode_of[i - 1]
    ]
    assert abs(sp[resume] - sp[resume - 1]).max() <= max(steps)  # no larger than the steps before the kill


def test_a_server_slower_than_the_horizon_underruns_and_holds_without_a_jump():
    proc, port = start_serve("--quiet", "--delay-ms", "250")  # H - s = 8 ticks = 160 ms at 50 Hz
    try:
        s = RemoteRun(f"ws://127.0.0.1:{port}", episodes=1).start().join()
    finally:
        stop(proc)
    assert s["underruns"] > 0 and s["chunks"] >= 3 and s["errors"] == []
    assert s["delay_estimate"] == 4  # clipped to d_max
    assert s["nan_setpoints"] == 0 and s["faults"] == 0


def _emulated_controller(link) -> subprocess.Popen:
    """`legato firmware emulate --joints 3 --link LINK`, returned once its pty is up."""
    cmd = [sys.executable, "-m", "legato.cli", "firmware", "emulate", "--joints", "3", "--duration", "120",
           "--link", str(link)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    ready, _, _ = select.select([proc.stdout], [], [], 60.0)
    assert ready and proc.stdout is not None and proc.stdout.readline().strip(), "the emulator did not start"
    return proc


def test_run_port_remote_drives_the_controller_with_the_servers_chunks(server, tmp_path, capsys):
    """`legato run --remote --port`: the robot's own camera (a video file, opened by the camera name
    the server's metadata gives) and joint state go to the server, its chunks to the emulated
    controller; the instruction as token ids, and as a prompt the server tokenizes."""
    cv2 = pytest.importorskip("cv2")
    video = str(tmp_path / "cam.avi")
    w = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for k in range(5):
        w.write(np.full((48, 64, 3), 40 * k, np.uint8))
    w.release()
    langs: list[list[str]] = [["--tokens", "2,5,13"]]
    if importlib.util.find_spec("tokenizers") is not None:  # the server tokenizes: its language extra
        langs.append(["--prompt", "reach the red target"])
    for lang in langs:
        link, out = tmp_path / "ttyCTL", tmp_path / "s.json"
        emu = _emulated_controller(link)
        try:
            rc = main(["run", "--remote", server.url, "--profile", "x86-cpu", "--port", str(link),
                       "--camera", f"top={video}", *lang, "--seconds", "2", "--quiet",
                       "--summary-json", str(out)])  # fmt: skip
            err = capsys.readouterr().err
        finally:
            stop(emu)
        assert rc == 0, err
        s = json.loads(out.read_text())
        assert s["shutdown"] == "completed" and s["hold_sent"] and s["nan_setpoints"] == 0
        assert s["remote.chunks"] > 5 and s["remote.errors"] == [] and s["chunks_unavailable"] == 0
        assert s["remote.task_checks"] == (1 if lang[0] == "--prompt" else 0)


def test_profile_synthetic_remote_times_the_server_with_ids_or_a_prompt(server, tmp_path, capsys):
    """`legato profile --remote --synthetic` (it read the bundle's adapter, which a robot without
    the bundle has not, and stopped with AttributeError): random frames by the server's cameras,
    the instruction as random ids, or the --prompt tokenized by the server; the server's own
    stages in the table."""
    langs: list[list[str]] = [[]]
    if importlib.util.find_spec("tokenizers") is not None:  # the server tokenizes: its language extra
        langs.append(["--prompt", "reach the red target"])
    for lang in langs:
        out = tmp_path / f"p{len(lang)}"
        rc = main(["profile", "--remote", server.url, "--profile", "x86-cpu", "--synthetic", "--seconds", "1",
                   *lang, "--out", str(out)])  # fmt: skip
        assert rc == 0, capsys.readouterr().err
        s = json.loads((out / "summary.json").read_text())
        assert s["source"] == "synthetic" and s["chunks"] >= 10 and s["chunk.server_ms.p50"] > 0

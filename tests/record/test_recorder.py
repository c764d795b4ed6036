"""`legato run --record FILE`: one MCAP file per run that the mcap reader opens, with every frame,
chunk, setpoint and telemetry sample of the run; a recorder that never blocks the loop, stays
within --record-max-mb, stops (not the robot) on a full disk, and leaves a SIGKILLed recording
readable up to its last whole chunk."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge.loop import CHUNK_BASE_COLS, TICK_COLS
from edge.policy import ChunkRequest
from edge.recorder import Recorder, RecordOptions
from edge.recording import CAMERA, CHUNK, EVENTS, OBSERVATION, SCHEMAS, SETPOINT, TELEMETRY, read_recording
from legato.cli import main

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("prefix", "step0", "blend", "engines", "chunk")


def test_a_recorded_run_opens_with_the_mcap_reader_and_counts_match_the_summary(recorded_run, bundle):
    from mcap.reader import make_reader

    path, s = recorded_run
    assert s["episodes"] == 5 and s["record.stopped"] is None
    assert s["record.dropped_chunks"] == 0 and s["record.dropped_ticks"] == 0
    counts: dict[str, int] = {}
    with open(path, "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        assert summary is not None and summary.statistics is not None  # a whole file: indexed
        topics = {c.topic: c for c in summary.channels.values()}
        assert set(topics) == set(SCHEMAS)
        for sch in summary.schemas.values():
            assert sch.encoding == "jsonschema" and json.loads(sch.data)["title"]
        assert summary.schemas[topics[CAMERA].schema_id].name == "foxglove.CompressedImage"
        assert summary.schemas[topics[EVENTS].schema_id].name == "foxglove.Log"
        for _, channel, message in reader.iter_messages():
            assert channel.message_encoding == "json"
            body = json.loads(message.data)
            assert set(body) <= set(SCHEMAS[channel.topic]["properties"]) | {"seq"}
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
        meta = {m.name: json.loads(m.metadata["json"]) for m in reader.iter_metadata()}
    # frames = chunks = the run's chunks; setpoints = the run's ticks
    assert counts[CAMERA] == counts[OBSERVATION] == counts[CHUNK] == s["chunks"] == s["record.chunks"]
    assert counts[SETPOINT] == s["ticks"] == s["record.ticks"]
    assert counts[TELEMETRY] == s["record.telemetry"] > 0
    assert sum(summary.statistics.channel_message_counts.values()) == sum(counts.values())
    run = meta["legato.run"]
    digest = hashlib.sha256((Path(bundle) / "manifest.json").read_bytes()).hexdigest()
    assert run["bundle"]["manifest_sha256"] == digest and run["profile"]["name"] == "x86-cpu"
    assert run["profile"]["toml"] and "host" in run["device"] and run["clock"] == "time.monotonic"
    assert run["spec"]["horizon"] == 16 and run["loop"]["rate_hz"] == 50.0
    assert meta["legato.summary"]["run"]["chunks"] == s["chunks"]

    rec = read_recording(path)
    assert rec.complete and rec.cut is None and len(rec.chunks) == s["chunks"]
    c = next(c for c in rec.chunks if c.reference is not None and c.d >= 1)  # a continued chunk
    assert c.frame().shape == (48, 64, 3) and c.plan.shape == (16, 3) and c.noise.shape == (16, 3)
    assert c.reference is not None and c.reference.shape[1] == 3 and c.omega[: c.d].min() == 1.0
    # capture timestamps on the robot's monotonic clock, in order; setpoints between the chunks
    caps = [c.capture_time for c in rec.chunks]
    assert caps == sorted(caps) and rec.ticks[0, 2] < caps[-1] < time.monotonic()
    assert np.isfinite(rec.ticks[:, len(TICK_COLS) :]).all() and rec.ticks.shape[1] == len(TICK_COLS) + 3


def test_the_recorded_setpoints_are_the_clamped_plans(recorded_run):
    """Each recorded setpoint of a run tick is its chunk's planned action, within the step limit."""
    rec = read_recording(recorded_run[0])
    plans = {}
    for c in rec.chunks:  # chunk ids restart per episode; the newest plan of an id applies
        plans[c.chunk] = c.plan
    run = rec.ticks[(rec.ticks[:, 4] == 0) & (rec.ticks[:, 5] >= 0)][-50:]  # the last episode's
    sp = run[:, len(TICK_COLS) :]
    planned = np.array([plans[int(r[5])][int(r[6])] for r in run])
    step = float(rec.meta["loop"]["max_step"][0])
    assert np.all(np.abs(sp - planned) <= step + 1e-6)
    assert np.mean(np.all(np.abs(sp - planned) < 1e-6, axis=1)) > 0.5


class _Stream:
    """A file stand-in: blocks on write while `gate` is clear; raises ENOSPC past `capacity`."""

    def __init__(self, capacity: int | None = None) -> None:
        self.buf = bytearray()
        self.capacity = capacity
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def write(self, b: bytes) -> int:
        self.entered.set()
        self.gate.wait()
        if self.capacity is not None and len(self.buf) + len(b) > self.capacity:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.buf += b
        return len(b)

    def tell(self) -> int:
        return len(self.buf)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


META = {"format": "legato-recording", "spec": {"horizon": 16}, "loop": {"rate_hz": 50.0}}


def _feed(rec: Recorder, i: int, hw: tuple[int, int] = (48, 64), rng=None) -> None:
    rng = rng or np.random.default_rng(i)
    img = rng.integers(0, 255, (*hw, 3), dtype=np.uint8)
    frame = SimpleNamespace(image=img, tokens=np.arange(6), state=np.zeros(6, np.float32))
    row = np.zeros(len(CHUNK_BASE_COLS) + len(STAGES))
    row[CHUNK_BASE_COLS.index("capture")] = 1.0 + i * 0.1
    row[CHUNK_BASE_COLS.index("ready")] = 1.01 + i * 0.1
    den = SimpleNamespace(head=SimpleNamespace(inputs={"omega": np.zeros((1, 16), np.float32)}))
    plan = rng.normal(size=(16, 3)).astype(np.float32)
    rec.on_chunk(i, frame, ChunkRequest(d=1, s=8, r=2), den, None, plan, plan, row, STAGES)


def test_hooks_never_block_and_count_what_a_full_queue_drops(tmp_path):
    st = _Stream()
    rec = Recorder(RecordOptions(str(tmp_path / "x.mcap"), queue=4), META, stream=st)
    st.gate.clear()
    st.entered.clear()
    _feed(rec, 0)
    assert st.entered.wait(10)  # the writer holds item 0, stuck in write()
    for i in range(1, 11):
        _feed(rec, i)  # returns at once although the disk does not move
    rows = np.zeros((5, len(TICK_COLS) + 3))
    rec.on_ticks(rows, None)
    assert rec.dropped["chunks"] == 10 - 4 and rec.dropped["ticks"] == 5
    st.gate.set()
    stats = rec.close()
    assert stats["record.chunks"] == 5 and stats["record.dropped_chunks"] == 6


def test_max_mb_stops_the_recording_within_the_limit_and_finishes_the_file(tmp_path):
    path = tmp_path / "big.mcap"
    rec = Recorder(RecordOptions(str(path), max_mb=1.0), META)
    rng = np.random.default_rng(0)
    for i in range(60):  # ~40 KB of noise a frame as PNG: 60 frames would be ~2.5 MB
        _feed(rec, i, (120, 120), rng)
        time.sleep(0.002)
    stats = rec.close({"chunks": 60})
    assert stats["record.stopped"].startswith("max-mb") and 5 < stats["record.chunks"] < 60
    assert path.stat().st_size <= 1024 * 1024
    r = read_recording(path)
    assert r.complete and len(r.chunks) == stats["record.chunks"] and r.summary is not None
    assert any("recording stopped: max-mb" in e["message"] for e in r.events)


def test_a_full_disk_stops_the_recording_not_the_caller(tmp_path):
    st = _Stream(capacity=60_000)
    rec = Recorder(RecordOptions(str(tmp_path / "x.mcap")), META, stream=st)
    for i in range(40):
        _feed(rec, i)  # never raises
        time.sleep(0.002)
    stats = rec.close({"chunks": 40})
    assert stats["record.stopped"].startswith("disk full") and 0 < stats["record.chunks"] < 40
    (tmp_path / "cut.mcap").write_bytes(bytes(st.buf))
    r = read_recording(tmp_path / "cut.mcap")
    assert not r.complete and len(r.chunks) == stats["record.chunks"]


def test_an_observation_it_cannot_take_stops_the_recording_not_the_worker(tmp_path):
    rec = Recorder(RecordOptions(str(tmp_path / "x.mcap")), META)
    _feed(rec, 0)
    end = time.monotonic() + 30
    while rec.counts["chunks"] < 1 and time.monotonic() < end:
        time.sleep(0.01)
    frame = SimpleNamespace(image={"wrist": np.zeros((4, 4, 3), np.uint8)}, tokens=None, state=np.zeros(6))
    row = np.zeros(len(CHUNK_BASE_COLS) + len(STAGES))
    plan = np.zeros((16, 3), np.float32)
    rec.on_chunk(1, frame, ChunkRequest(d=1, s=8, r=2), None, None, plan, plan, row, STAGES)  # no raise
    _feed(rec, 2)
    stats = rec.close()
    assert (
        stats["record.stopped"].startswith("cannot record this observation") and stats["record.chunks"] == 1
    )
    assert read_recording(tmp_path / "x.mcap").complete


def _mount_tmpfs(where: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    where.mkdir()
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
        ).returncode
        == 0
    )


def test_a_really_full_disk_leaves_the_run_going(bundle, tmp_path, capsys):
    mnt = tmp_path / "tiny"
    if not _mount_tmpfs(mnt, "48k"):
        pytest.skip("cannot mount a small tmpfs here (needs root and mount)")
    try:
        out = tmp_path / "s.json"
        args = [
            "run",
            "--bundle",
            str(bundle),
            "--sim",
            "--episodes",
            "2",
            "--quiet",
            "--record",
            str(mnt / "r.mcap"),
            "--record-image",
            "png",
            "--summary-json",
            str(out),
        ]
        rc = main(args)
        err = capsys.readouterr().err
        assert rc == 0, err
        s = json.loads(out.read_text())
        assert s["episodes"] == 2 and s["shutdown"] == "completed"
        assert s["record.stopped"].startswith("disk full") and "recording stopped early: disk full" in err
        r = read_recording(mnt / "r.mcap")
        # the chunk being written when the disk filled may have reached it whole
        assert 0 < len(r.chunks) <= s["record.chunks"] + 1 and s["record.chunks"] < s["chunks"]
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_a_sigkilled_recording_is_readable_up_to_its_last_whole_chunk(bundle, tmp_path):
    path = tmp_path / "killed.mcap"
    cmd = [
        sys.executable,
        "-m",
        "legato.cli",
        "run",
        "--bundle",
        str(bundle),
        "--sim",
        "--seconds",
        "120",
        "--quiet",
        "--record",
        str(path),
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 90
        n = 0
        while time.monotonic() < end and n < 12:
            time.sleep(0.3)
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            if path.exists() and path.stat().st_size > 2000:
                n = len(read_recording(path).chunks)
        assert n >= 12
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    r = read_recording(path)
    assert not r.complete and r.summary is None  # no footer, no summary: it was cut off
    assert len(r.chunks) >= n
    assert [c.seq for c in r.chunks] == list(range(len(r.chunks)))  # whole chunks, none missing
    assert all(c.frame().shape == (48, 64, 3) and np.isfinite(c.plan).all() for c in r.chunks)
    # the last chunk read is whole: it replays bit for bit like the others
    from edge.replay import load_for_replay, replay

    den, _, _ = load_for_replay(r, str(bundle), None, None, None)
    rep = replay(r, den)
    assert rep["identical"] and rep["chunks"] == len(r.chunks)


def test_refusals_before_anything_runs(bundle, tmp_path, capsys):
    foreign = tmp_path / "notes.txt"
    foreign.write_text("mine")
    args = ["run", "--bundle", str(bundle), "--sim", "--episodes", "1", "--quiet", "--record"]
    assert main([*args, str(foreign), "--record-overwrite"]) == 2
    err = capsys.readouterr().err
    assert "not a legato recording" in err and err.count("\n") == 1 and foreign.read_text() == "mine"
    old = tmp_path / "old.mcap"
    assert main([*args, str(old)]) == 0
    assert main([*args, str(old)]) == 2
    assert "pass --record-overwrite" in capsys.readouterr().err
    from edge.images import jpeg_available

    if jpeg_available():
        assert main([*args, str(old), "--record-overwrite", "--record-image", "jpeg"]) == 0
        r = read_recording(old)
        assert r.complete and r.chunks[0].image_format == "jpeg" and r.chunks[0].frame().shape == (48, 64, 3)
    else:  # the robot's core install: no encoder, one line naming the extra, the old file kept
        assert main([*args, str(old), "--record-overwrite", "--record-image", "jpeg"]) == 2
        assert "legato-edge[camera]" in capsys.readouterr().err and read_recording(old).complete
    link = tmp_path / "link.mcap"
    link.symlink_to(old)
    assert main([*args, str(link), "--record-overwrite"]) == 2
    assert "symbolic link" in capsys.readouterr().err


def test_not_a_recording_is_one_line(tmp_path, capsys):
    bad = tmp_path / "x.mcap"
    bad.write_bytes(b"hello")
    assert main(["view", str(bad), "--out", str(tmp_path / "v")]) == 2
    assert "not an MCAP recording" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "missing.mcap"), "--bundle", "b"]) == 2
    assert "cannot read recording" in capsys.readouterr().err

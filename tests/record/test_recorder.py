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
    """Each recorded setpoint of a run tick is its chunk's planned action, moved towards from the
    previous setpoint by at most the step limit: sp = clip(plan, prev - step, prev + step)."""
    rec = read_recording(recorded_run[0])
    ticks, n = rec.ticks, len(TICK_COLS)
    step = float(rec.meta["loop"]["max_step"][0])
    # chunk ids restart with each episode (and an episode may be a single chunk): the plan a tick
    # executed is the newest recorded chunk of its id that was ready before the tick started
    ready = np.array([c.ready_time for c in rec.chunks])
    ids = np.array([c.chunk for c in rec.chunks])
    checked = reached = 0
    for prev, r in zip(ticks[:-1], ticks[1:], strict=True):
        if r[4] != 0 or r[5] < 0 or r[0] != prev[0] + 1:  # run ticks after a tick of the same episode
            continue
        k = np.flatnonzero((ids == int(r[5])) & (ready <= r[2]))
        assert len(k), f"tick {int(r[0])} ran chunk {int(r[5])}, which the recording lacks"
        plan = rec.chunks[k[-1]].plan[int(r[6])]
        np.testing.assert_allclose(r[n:], np.clip(plan, prev[n:] - step, prev[n:] + step), atol=1e-5)
        checked += 1
        reached += bool(np.abs(r[n:] - plan).max() < 1e-6)
    assert checked > 100 and reached > checked / 2


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


def test_a_frame_it_cannot_take_raises_in_the_worker_and_records_nothing_of_it(tmp_path):
    """A frame no policy gives is a recorder-side bug: on_chunk raises (the worker stops the run
    and says why) instead of the recording quietly ending; the chunks before and after stay."""
    cams = [{"name": "top", "height": 48, "width": 64}]
    rec = Recorder(RecordOptions(str(tmp_path / "x.mcap")), {**META, "cameras": cams})
    _feed(rec, 0)
    row = np.zeros(len(CHUNK_BASE_COLS) + len(STAGES))
    plan = np.zeros((16, 3), np.float32)
    req = ChunkRequest(d=1, s=8, r=2)
    for image, why in (
        ({"wrist": np.zeros((4, 4, 3), np.uint8)}, "lacks camera 'top'"),
        (np.zeros((48, 64, 3), np.float32), "gave a float32 \\(48, 64, 3\\) frame"),
        (np.zeros((48, 64), np.uint8), "not \\(H, W, 3\\) uint8"),
    ):
        frame = SimpleNamespace(image=image, tokens=None, state=np.zeros(6))
        with pytest.raises(ValueError, match=why):
            rec.on_chunk(1, frame, req, None, None, plan, plan, row, STAGES)
    _feed(rec, 2)
    stats = rec.close()
    assert stats["record.stopped"] is None and stats["record.errors"] == 0 and stats["record.chunks"] == 2
    r = read_recording(tmp_path / "x.mcap")
    assert r.complete and [c.seq for c in r.chunks] == [0, 1] and r.cameras == ["top"]


def test_a_writer_bug_stops_the_recording_is_counted_and_named(tmp_path, monkeypatch):
    rec = Recorder(RecordOptions(str(tmp_path / "x.mcap")), META)
    _feed(rec, 0)

    def bug(*a):
        raise TypeError("int() argument must be a real number, not 'NoneType'")

    monkeypatch.setattr(rec, "_write_ticks", bug)
    rec.on_ticks(np.zeros((3, len(TICK_COLS) + 3)), None)
    end = time.monotonic() + 30
    while rec.stopped is None and time.monotonic() < end:
        time.sleep(0.01)
    _feed(rec, 1)
    stats = rec.close()
    assert stats["record.errors"] == 1 and stats["record.stopped"].startswith(
        "recorder error (a bug): TypeError"
    )
    assert stats["record.chunks"] == 1 and stats["record.discarded_after_stop"] == 1
    from edge.record_cli import record_line

    assert "1 recorder error(s)" in record_line(stats)
    assert len(read_recording(tmp_path / "x.mcap").chunks) == 1  # what was written stays readable


def test_telemetry_without_the_optional_fields_is_recorded_as_null(tmp_path):
    """Vendor buses (Feetech, Dynamixel) echo no applied seq and have no controller clock."""
    rec = Recorder(RecordOptions(str(tmp_path / "x.mcap")), META)
    tel = SimpleNamespace(positions=np.ones(3), velocities=np.zeros(3), efforts=np.zeros(3), faults=0,
                          holding=False, torque_enabled=True, stale=np.array([False, True, False]),
                          received_at=2.0, sent_at=None, last_applied_seq=None)  # fmt: skip
    rec.on_ticks(np.zeros((2, len(TICK_COLS) + 3)), tel)
    tel2 = SimpleNamespace(
        **{**vars(tel), "received_at": 2.1, "sent_at": float("nan"), "last_applied_seq": 7}
    )
    rec.on_ticks(np.zeros((0, len(TICK_COLS) + 3)), tel2)
    stats = rec.close()
    assert stats["record.stopped"] is None and stats["record.telemetry"] == 2
    from mcap.reader import make_reader

    with open(tmp_path / "x.mcap", "rb") as f:
        got = [json.loads(m.data) for _, ch, m in make_reader(f).iter_messages(topics=[TELEMETRY])]
    assert [(g["sent_at"], g["last_applied_seq"]) for g in got] == [(None, None), (None, 7)]
    assert got[0]["stale"] == [False, True, False]


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

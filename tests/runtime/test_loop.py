"""The loop's behaviour on an injected clock (tests/runtime/loop_harness.py): the real ClockTick and
InferenceWorker, fake graphs, a recording bus; every number below is exact, not a timing."""

from __future__ import annotations

import numpy as np
import pytest
from loop_harness import Harness

from edge.clock import HOLD_STALE, HOLD_START, RUN, TICK_COLS, UNDERRUN
from edge.errors import ChunkUnavailable
from edge.loopstate import I
from edge.worker import CHUNK_BASE_COLS

C = {c: i for i, c in enumerate(CHUNK_BASE_COLS)}
T = {c: i for i, c in enumerate(TICK_COLS)}


def test_loop_streams_chunks_swaps_and_keeps_the_step_limit():
    h = Harness(latency=lambda cid: 1)
    h.start()
    h.run_ticks(60)
    rows, chunks = h.rows(), h.worker.chunk_ring.drain()
    modes = rows[:, T["mode"]].astype(int)
    assert modes[0] == HOLD_START and (modes[1:] == RUN).all()  # one tick before the first chunk
    assert h.ints[I.UNDERRUNS] == 0 and h.ints[I.START_HOLDS] == 1
    sent = h.sent()
    assert np.isfinite(sent).all() and (np.abs(sent) <= 1.0).all()
    assert np.max(np.abs(np.diff(sent, axis=0))) <= 0.05 + 1e-6  # max step per tick
    np.testing.assert_array_equal(rows[:, len(TICK_COLS) :], sent)  # the ring carries each setpoint
    assert chunks[0, C["d"]] == 0  # the first chunk: d = 0 (omega = 0)
    assert (chunks[1:, C["s"]] == 8).all()  # requests at index s
    assert h.worker.d_est == 1 and (chunks[1:, C["d"]] == 1).all()  # latency 1 period: d = 1
    # a chunk takes over at the index reached: the d actions executed since its request
    assert (chunks[1:, C["start_index"]] == 1).all()
    assert (rows[9:, T["index"]].min()) >= 1


def test_start_up_holds_until_the_first_chunk_exists():
    h = Harness(latency=lambda cid: 5 if cid == 0 else 1)
    h.start(np.full(3, 0.2, np.float32))
    h.run_ticks(20)
    modes = h.rows()[:, T["mode"]].astype(int)
    assert (modes[:5] == HOLD_START).all() and modes[5] == RUN  # the first chunk takes 5 periods
    assert h.ints[I.START_HOLDS] == 5 and h.ints[I.UNDERRUNS] == 0
    np.testing.assert_array_equal(h.sent()[:5], np.full((5, 3), 0.2, np.float32))  # held at the start posture


def test_underrun_holds_counts_and_does_not_jump():
    # chunk 2 takes 15 periods: the active chunk has H - s = 8 actions left after its request
    h = Harness(latency=lambda cid: 15 if cid == 2 else 1, max_step=0.05)
    h.start()
    h.run_ticks(80)
    rows, chunks = h.rows(), h.worker.chunk_ring.drain()
    modes = rows[:, T["mode"]].astype(int)
    under = np.flatnonzero(modes == UNDERRUN)
    assert len(under) == h.ints[I.UNDERRUNS] == 15 - 8
    sent = h.sent()
    for i in under:  # the arm holds: every underrun tick repeats the previous setpoint exactly
        np.testing.assert_array_equal(sent[i], sent[i - 1])
    late = chunks[chunks[:, C["chunk"]] == 2][0]
    # the late chunk continues right after the held action (8 executed), not at the wall-clock index
    assert late[C["start_index"]] == 8 and rows[under[-1] + 1, T["index"]] == 8
    assert np.max(np.abs(np.diff(sent, axis=0))) <= 0.05 + 1e-6


def test_nan_in_a_chunk_is_held_and_counted():
    h = Harness(latency=lambda cid: 1)

    def nan_at(cid, chunk):
        if cid == 2:
            chunk[3, 0] = np.nan  # an action the clock will reach

    h.fault = nan_at
    h.start()
    h.run_ticks(60)
    sent, rows = h.sent(), h.rows()
    assert np.isfinite(sent).all()
    i = int(np.flatnonzero(rows[:, T["fault"]] == 1)[0])
    np.testing.assert_array_equal(sent[i], sent[i - 1])  # a hold in place of the NaN
    assert h.ints[I.NAN_SETPOINTS] == h.ints[I.FAULTS] == 1 and h.ints[I.FAULT_STREAK] == 0


def test_consecutive_fault_ticks_set_fault_stop():
    h = Harness(latency=lambda cid: 1, max_fault_ticks=5)
    h.fault = lambda cid, chunk: chunk.fill(np.nan) if cid >= 1 else None
    h.start()
    h.run_ticks(40)
    assert h.ints[I.FAULT_STOP] == 1 and h.ints[I.MAX_FAULT_STREAK] >= 5
    assert np.isfinite(h.sent()).all()


def test_latency_padding_raises_the_measured_delay():
    h = Harness(pad=0.025, latency=lambda cid: 0)  # 2.5 periods at 100 Hz -> d = 3
    h.start()
    h.run_ticks(80)
    chunks = h.worker.chunk_ring.drain()
    assert h.worker.d_est == 3
    assert (chunks[2:, C["d"]] == 3).all()  # later requests use the estimate
    assert (chunks[:, C["latency_s"]] >= 0.025 - 1e-9).all()


def test_stale_joint_state_holds_the_arm_and_counts():
    """Joint state older than stale_s holds the arm (and makes no new request) until it is fresh
    again; each stale tick is a fault tick, counted per joint."""
    h = Harness(latency=lambda cid: 1, stale_s=0.045)  # 4.5 periods at 100 Hz
    h.start()
    h.run_ticks(20)
    h.bus.silent = True  # the bus's telemetry stops arriving (a pulled port, a dead controller)
    h.run_ticks(15)
    rows = h.rows()
    modes = rows[:, T["mode"]].astype(int)
    stale = np.flatnonzero(modes == HOLD_STALE)
    assert len(stale) == 15 - 4 and stale[0] == 20 + 4  # from the 5th tick without fresh state
    sent = h.sent()
    for i in stale:
        np.testing.assert_array_equal(sent[i], sent[i - 1])
    assert h.ints[I.STALE_TICKS] == h.ints[I.FAULTS] == 11 and list(h.state.stale_count) == [11] * 3
    h.bus.silent = False
    h.run_ticks(20)
    modes = h.rows()[:, T["mode"]].astype(int)
    assert (modes == RUN).sum() >= 18 and h.ints[I.FAULT_STREAK] == 0  # it resumes


def test_one_silent_servo_is_a_stale_joint():
    h = Harness(latency=lambda cid: 1, stale_s=0.045)
    h.start()
    h.run_ticks(20)
    h.bus.stale_joint = 1  # the bus keeps joint 1's last good value, marked stale
    h.run_ticks(10)
    assert list(h.state.stale_count) == [0, 6, 0] and h.ints[I.STALE_TICKS] == 6


def test_no_chunk_this_time_is_counted_held_and_asked_again():
    """ChunkUnavailable (a remote policy's timeout): counted, the clock asks again at its next
    tick, holds when the active chunk runs out; the first chunk after a gap longer than the
    trained d_max (4) is sampled with omega = 0 (d = 0, no reference)."""
    h = Harness(latency=lambda cid: 1)
    missing = set(range(2, 2 + 12))  # twelve answers in a row are "no chunk"

    def unavailable(cid, chunk):
        if cid in missing:
            raise ChunkUnavailable("server timeout")

    h.fault = unavailable
    h.start()
    h.run_ticks(80)
    assert h.worker.unavailable == 12 and h.ints[I.REREQUESTS] == 12
    assert h.ints[I.UNDERRUNS] > 0  # the active chunk ran out while no chunk came
    reqs = h.den.requests
    first_after = reqs[2 + 12]
    assert first_after.d == 0 and first_after.r == 0  # omega = 0
    chunks = h.worker.chunk_ring.drain()
    assert len(chunks) == h.den.calls - 12 and h.worker.errors == []


def test_a_short_gap_keeps_the_continuation():
    h = Harness(latency=lambda cid: 1)
    h.fault = lambda cid, chunk: (_ for _ in ()).throw(ChunkUnavailable("x")) if cid == 2 else None
    h.start()
    h.run_ticks(40)
    assert h.worker.unavailable == 1 and h.den.requests[3].d == 1  # retried at once: not a long gap


def test_a_worker_failure_is_reported_and_the_clock_holds():
    h = Harness(latency=lambda cid: 1)
    h.fault = lambda cid, chunk: (_ for _ in ()).throw(RuntimeError("engine died")) if cid == 2 else None
    h.start()
    h.run_ticks(5)
    with pytest.raises(RuntimeError):  # one_chunk raises; serve() in production records it
        h.run_ticks(30)


def test_config_is_checked():
    from edge.clockproc import ClockHost
    from edge.loop import ControlLoop

    h = Harness(s=16)
    with pytest.raises(ValueError, match="execution horizon"):
        ControlLoop(h.cfg, ClockHost(h.state, h.bus), None, h.den.den, np.zeros(3))

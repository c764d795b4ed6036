"""The control loop on fake graphs, a recording bus and a synthetic source (no pty, no model)."""

import threading
import time

import numpy as np
import pytest
from rt_graphs import fake_denoiser

from edge.loop import HOLD_START, RUN, UNDERRUN, ControlLoop, LoopConfig
from edge.sources import Frame


class RecordingBus:
    def __init__(self):
        self.sent = []
        self.lock = threading.Lock()

    def send_setpoint(self, positions):
        with self.lock:
            self.sent.append(np.array(positions, np.float32))


class StaticSource:
    def __init__(self):
        self.image = np.full((8, 8, 3), 100, np.uint8)
        self.tokens = np.array([2, 3, 0, 0])
        self.state = np.zeros(6, np.float32)

    def read(self):
        return Frame(self.image, self.tokens, self.state, time.monotonic())


def make_loop(rate=100.0, pad=0.0, max_step=0.05, s=8, **kw):
    den = fake_denoiser()
    cfg = LoopConfig(
        rate_hz=rate,
        execution_horizon=s,
        d_max=4,
        latency_window=5,
        q_min=(-1.0,) * 3,
        q_max=(1.0,) * 3,
        max_step=(max_step,) * 3,
        latency_pad_s=pad,
        **kw,
    )
    bus = RecordingBus()
    return ControlLoop(cfg, bus, StaticSource(), den, hold=np.zeros(3, np.float32)), bus


def wait_for(pred, timeout=20.0):
    """Poll a condition with a bound (the loop's counters are plain ints)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return False


def ticks_of(loop):
    return loop.ticks_ring.drain()


def test_loop_streams_chunks_swaps_and_holds_on_stop():
    loop, bus = make_loop(rate=100.0)
    loop.start()
    try:
        assert wait_for(lambda: loop.chunks >= 6)
    finally:
        loop.stop()
    st = loop.status()
    assert st["worker_errors"] == []
    rows = ticks_of(loop)
    modes = rows[:, 4].astype(int)
    assert (modes == RUN).sum() > 30
    assert loop.underruns == 0
    sent = np.array(bus.sent)
    assert np.all(np.isfinite(sent)) and np.all(np.abs(sent) <= 1.0)
    assert np.max(np.abs(np.diff(sent, axis=0))) <= 0.05 + 1e-6  # max step per tick holds
    np.testing.assert_array_equal(sent[-1], loop.last)  # the hold sent last, after the clock stopped
    chunks = loop.chunk_ring.drain()
    assert chunks[0, 6] == 0  # the first chunk: d = 0 (omega = 0)
    assert np.all(chunks[1:, 7] >= 8)  # requests at index s or later
    assert loop.d_est == 1  # a few ms of inference at 100 Hz


def test_start_up_holds_until_the_first_chunk_exists():
    loop, bus = make_loop(rate=100.0)
    loop.extra_latency_s = 0.05  # the first chunk takes 5 periods
    loop.start()
    try:
        assert wait_for(lambda: loop.chunks >= 1 and loop.ticks >= 8)
        loop.extra_latency_s = 0.0
    finally:
        loop.stop()
    modes = ticks_of(loop)[:, 4].astype(int)
    n = loop.start_holds
    assert n >= 3 and np.all(modes[:n] == HOLD_START) and modes[n] == RUN
    assert np.all(np.array(bus.sent[:n]) == 0.0)  # held at the start posture
    assert loop.underruns == 0


def test_underrun_holds_counts_and_does_not_jump():
    loop, bus = make_loop(rate=100.0, max_step=0.05)
    loop.start()
    try:
        assert wait_for(lambda: loop.chunks >= 2)
        loop.extra_latency_s = 0.15  # 15 periods: more than the 8 actions left in the chunk
        assert wait_for(lambda: loop.underruns >= 3)
        loop.extra_latency_s = 0.0
        assert wait_for(lambda: loop.chunks >= 6)
    finally:
        loop.stop()
    rows = ticks_of(loop)
    modes = rows[:, 4].astype(int)
    sent = np.array(bus.sent)
    under = np.flatnonzero(modes == UNDERRUN)
    assert len(under) == loop.underruns >= 3
    first = under[0]
    # the arm holds: every underrun tick repeats the previous setpoint exactly
    for i in under:
        np.testing.assert_array_equal(sent[i], sent[i - 1])
    # the late chunk continues right after the held action, not at the wall-clock index
    chunks = loop.chunk_ring.drain()
    late = chunks[chunks[:, 5] > 0.1]
    assert len(late) >= 1 and np.all(late[:, 11] <= 16 - 8)
    assert np.max(np.abs(np.diff(sent, axis=0))) <= 0.05 + 1e-6
    assert first > 0


def test_nan_in_a_chunk_is_held_and_counted():
    loop, bus = make_loop(rate=100.0)
    loop.inject_nan_chunk, loop.inject_nan_index = 2, 10  # an action the clock will reach
    loop.start()
    try:
        assert wait_for(lambda: loop.faults >= 1 and loop.chunks >= 4)
    finally:
        loop.stop()
    sent = np.array(bus.sent)
    assert np.all(np.isfinite(sent))
    rows = ticks_of(loop)
    i = int(np.flatnonzero(rows[:, 7] == 1)[0])
    np.testing.assert_array_equal(sent[i], sent[i - 1])  # a hold in place of the NaN
    assert loop.nan_setpoints == loop.faults >= 1


def test_latency_padding_raises_the_measured_delay():
    loop, _ = make_loop(rate=100.0, pad=0.025)  # 2.5 periods -> d = 3
    loop.start()
    try:
        assert wait_for(lambda: loop.chunks >= 5)
    finally:
        loop.stop()
    chunks = loop.chunk_ring.drain()
    assert loop.d_est == 3
    assert np.all(chunks[2:, 6] == 3)  # later requests use the estimate
    assert np.all(chunks[:, 5] >= 0.025)


def test_config_is_checked():
    with pytest.raises(ValueError, match="execution horizon"):
        make_loop(s=16)

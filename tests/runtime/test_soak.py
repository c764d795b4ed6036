"""Memory and allocation: the clock tick allocates nothing, and a long run does not grow.

- test_clock_tick_allocates_nothing (default suite, ~3 s): tracemalloc over 300 ticks at 100 Hz
  with inference running; no memory is retained by any line of ControlLoop._tick.
- test_soak (slow, 10 minutes; LEGATO_SOAK_S overrides): the full --sim path at 50 Hz (bridge, pty,
  emulated controller, simulated arm, inference); resident memory grows < 5 MB after a 60 s
  warm-up, the tick retains nothing (tracemalloc), no missed tick, no worker error.
"""

from __future__ import annotations

import inspect
import os
import time
import tracemalloc

import numpy as np
import pytest
from test_loop import make_loop, wait_for

from edge import loop as loop_mod


class NullBus:
    def __init__(self):
        self.n = 0

    def send_setpoint(self, positions):
        self.n += 1


def tick_lines():
    src, first = inspect.getsourcelines(loop_mod.ControlLoop._tick)
    return first, first + len(src)


def tick_growth(s0, s1) -> int:
    """Memory blocks retained between two snapshots by lines of ControlLoop._tick. A per-tick leak
    shows as one block per tick; a counter that passes CPython's small-int cache (256) once shows as
    one block for good, so a handful is allowed."""
    lo, hi = tick_lines()
    blocks = 0
    for st in s1.compare_to(s0, "lineno"):
        fr = st.traceback[0]
        if fr.filename.endswith(os.path.join("edge", "loop.py")) and lo <= fr.lineno < hi:
            blocks += max(0, st.count_diff)
    return blocks


def test_clock_tick_allocates_nothing():
    loop, _ = make_loop(rate=100.0)
    loop.bus = NullBus()
    tracemalloc.start(1)
    try:
        loop.start()
        assert wait_for(lambda: loop.ticks >= 300)
        s0 = tracemalloc.take_snapshot()
        t0 = loop.ticks
        assert wait_for(lambda: loop.ticks >= t0 + 300)
        s1 = tracemalloc.take_snapshot()
    finally:
        loop.stop()
        tracemalloc.stop()
    assert loop.chunks >= 20 and loop.status()["worker_errors"] == []
    assert tick_growth(s0, s1) <= 5  # 300 ticks: a per-tick allocation would retain >= 300


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_soak(bundle):
    """Resident memory is measured with tracemalloc off (its own bookkeeping grows natively), from
    60 s to the last minute; tracemalloc then watches the tick over the last minute. What grows,
    measured: the firmware bridge's round-trip samples (a deque bounded at 200,000 floats, about
    0.4 MB a minute at the 200 Hz stream until it is full)."""
    from edge.launch import launch
    from edge.loop import ControlLoop
    from edge.sources import SimSource, TelemetryState

    seconds = float(os.environ.get("LEGATO_SOAK_S", "600"))
    warm, watch = min(60.0, seconds / 4), min(60.0, seconds / 4)
    sess = launch(str(bundle), "x86-cpu", sim=True, episodes=1, seed=1000)
    rig, den, cfg = sess.rig, sess.den, sess.cfg
    try:
        q0 = rig.plant.load(0)
        rig.bus.send_setpoint(q0)
        source = SimSource(rig.plant.render, lambda: rig.plant.tokens, TelemetryState(rig.bus, 3))
        loop = ControlLoop(cfg, rig.bus, source, den, q0)
        loop.start()
        t_start = time.monotonic()
        rss0 = rss1 = s0 = None
        while time.monotonic() - t_start < seconds:
            time.sleep(0.5)
            loop.ticks_ring.drain()
            loop.chunk_ring.drain()
            t = time.monotonic() - t_start
            if rss0 is None and t > warm:
                rss0 = rss_mb()
            if rss1 is None and t > seconds - watch:
                rss1 = rss_mb()
                tracemalloc.start(1)
                s0, ticks0 = tracemalloc.take_snapshot(), loop.ticks
        s1 = tracemalloc.take_snapshot()
        tracemalloc.stop()
        loop.stop()
    finally:
        rig.close()
    st = loop.status()
    print(
        f"soak {seconds:.0f} s: ticks {st['ticks']}, chunks {st['chunks']}, rss {rss0:.1f} -> {rss1:.1f} MB "
        f"({warm:.0f} s to {seconds - watch:.0f} s), missed {st['missed_ticks']}, "
        f"underruns {st['underruns']}, "
        f"tick blocks retained over the last {st['ticks'] - ticks0} ticks: {tick_growth(s0, s1)}"
    )
    assert st["worker_errors"] == [] and st["ticks"] > 0.95 * seconds * cfg.rate_hz
    assert rss1 - rss0 < 5.0
    assert tick_growth(s0, s1) <= 5 and loop.ticks > ticks0 + 0.5 * watch * cfg.rate_hz
    assert st["missed_ticks"] <= 0.001 * st["ticks"] and st["underruns"] == 0
    assert np.isfinite(loop.last).all()

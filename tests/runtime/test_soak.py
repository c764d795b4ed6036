"""Memory: the clock tick retains nothing, and a long run does not grow.

- test_clock_tick_retains_no_memory (default suite, < 1 s): tracemalloc over 3,000 ticks of the
  real ClockTick on the injected clock (loop_harness) with inference running; no memory block is
  retained by any line of ClockTick.__call__. (Temporaries that are freed again, such as numpy
  scalars, are not counted: this measures retention, not allocations.)
- test_soak (slow, 10 minutes; LEGATO_SOAK_S overrides): the full --sim path at 50 Hz (the clock
  process with the bus, pty, emulated controller, simulated arm, inference); resident memory of
  both processes grows < 5 MB after a 60 s warm-up, no missed tick, no worker error.
"""

from __future__ import annotations

import inspect
import os
import time
import tracemalloc

import numpy as np
import pytest
from loop_harness import Harness

from edge import clock as clock_mod


def tick_lines():
    src, first = inspect.getsourcelines(clock_mod.ClockTick.__call__)
    return first, first + len(src)


def tick_growth(s0, s1) -> int:
    """Memory blocks retained between two snapshots by lines of ClockTick.__call__. A per-tick leak
    shows as one block per tick; a counter that passes CPython's small-int cache (256) once shows as
    one block for good, so a handful is allowed."""
    lo, hi = tick_lines()
    blocks = 0
    for st in s1.compare_to(s0, "lineno"):
        fr = st.traceback[0]
        if fr.filename.endswith(os.path.join("edge", "clock.py")) and lo <= fr.lineno < hi:
            blocks += max(0, st.count_diff)
    return blocks


def test_clock_tick_retains_no_memory():
    h = Harness(latency=lambda cid: 1)
    h.start()
    h.run_ticks(300)
    h.bus.record = h.den.record = False  # the harness's own lists would be what grows
    tracemalloc.start(1)
    try:
        s0 = tracemalloc.take_snapshot()
        h.run_ticks(3000)
        h.rows()  # the drainer keeps up, as the session's does
        s1 = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert h.worker.chunks >= 300 and h.worker.errors == []
    assert tick_growth(s0, s1) <= 5  # 3,000 ticks: a per-tick retention would show >= 3,000


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_soak(bundle):
    """Resident memory of this process (inference, the session) and of the clock process (the bus),
    from 60 s to the last minute. What grows, measured before: the firmware bridge's round-trip
    samples (a deque bounded at 200,000 floats, about 0.4 MB a minute at the 200 Hz stream until
    it is full), now in the clock process."""
    from edge.launch import launch
    from edge.loop import ControlLoop
    from edge.sources import SimSource, TelemetryState

    seconds = float(os.environ.get("LEGATO_SOAK_S", "600"))
    warm, watch = min(60.0, seconds / 4), min(60.0, seconds / 4)
    sess = launch(str(bundle), "x86-cpu", sim=True, episodes=1, seed=1000)
    rig, den, cfg = sess.rig, sess.den, sess.cfg
    child = rig.clock._proc.pid
    try:
        q0 = rig.plant.load(0)
        rig.bus.send_setpoint(q0)
        source = SimSource(rig.plant.render, lambda: rig.plant.tokens, TelemetryState(rig.bus, 3))
        loop = ControlLoop(cfg, rig.clock, source, den, q0)
        loop.start()
        t_start = time.monotonic()
        rss0 = rss1 = None
        while time.monotonic() - t_start < seconds:
            time.sleep(0.5)
            loop.ticks_ring.drain()
            loop.chunk_ring.drain()
            t = time.monotonic() - t_start
            if rss0 is None and t > warm:
                rss0 = (rss_mb(), rss_mb(child))
            if rss1 is None and t > seconds - watch:
                rss1 = (rss_mb(), rss_mb(child))
        loop.stop()
    finally:
        rig.close()
    st = loop.status()
    print(f"soak {seconds:.0f} s: ticks {st['ticks']}, chunks {st['chunks']}, rss (this, clock process) "
          f"{rss0} -> {rss1} MB ({warm:.0f} s to {seconds - watch:.0f} s), missed {st['missed_ticks']}, "
          f"underruns {st['underruns']}, clock {st['scheduling']}")  # fmt: skip
    assert st["worker_errors"] == [] and st["ticks"] > 0.95 * seconds * cfg.rate_hz
    assert rss1[0] - rss0[0] < 5.0 and rss1[1] - rss0[1] < 5.0
    assert st["missed_ticks"] == 0 and st["underruns"] == 0
    assert np.isfinite(loop.last).all()

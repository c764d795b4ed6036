"""The on-device loop: a control clock that never waits, an inference worker, two chunk buffers.

Why this file is longer than most (~400 lines): the clock tick, the worker and the swap share
one small piece of state, and keeping them side by side is what makes the hand-off readable.

Threads (docs/runtime.md has the GIL measurement behind "threads, short GIL holds"):
- **Clock** (``firmware_bridge.streamer.PeriodicThread``: absolute monotonic deadlines, late
  slots skipped and counted) with a sleep-then-spin wait (sleep until ``spin_s`` before the
  deadline, then spin on the clock). Each tick, in order: take a pending chunk (the swap), pick
  the next action of the active chunk or hold, make it safe (NaN/inf -> hold + fault, joint
  limits, max step per tick), hand it to the bus, ask for the next chunk when the active one
  has reached index s, write one row into a preallocated ring. No allocation of its own, no
  logging, no lock.
- **Worker**: waits for a request, reads an observation (frames carry their capture time),
  preprocesses it (its own timed stage), denoises the next chunk into the back buffer with
  Legato continuation from the active chunk's unexecuted tail, pads to ``latency_pad_s`` if
  asked, and posts it. Latency is measured from the frame's capture to the chunk being ready.

Timeline (t in ticks; matches legato/rollout.py): the request for chunk c is made when the
active chunk reaches index s; the worker uses d = the delay estimate; when the chunk is ready
the clock swaps it in at the index it has reached: the number of actions actually executed
since the request (normally d; the first d actions of the new chunk are the frozen prefix, equal
to the old chunk's). After an underrun (the old chunk ran out; the arm held its last setpoint)
that count is smaller than the wall-clock ticks, so the late chunk continues right after the
held action: no jump. The first chunk is sampled with omega = 0 while the arm holds.

Delay estimate: d = ceil(max of the last b latencies / period) (edge.schedule.delay_from_latencies),
clipped to the smaller of the model's and the profile's d_max, and to H - s.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edge.denoiser import ChunkDenoiser
from edge.errors import ChunkUnavailable
from edge.policy import ChunkRequest, default_ramp
from edge.schedule import delay_from_latencies
from firmware_bridge.streamer import PeriodicThread

# Tick modes written to the ring.
RUN, HOLD_START, UNDERRUN, HOLD_STOP = 0, 1, 2, 3
# Tick ring columns (float64); the setpoint sent follows (a columns, rad).
TICK_COLS = ("tick", "deadline", "start", "end", "mode", "chunk", "index", "fault", "write_s")
# Chunk ring columns (float64); the denoiser's stages follow.
CHUNK_BASE_COLS = ("chunk", "request", "capture", "preprocess_s", "ready", "latency_s", "d", "s", "r",
                   "d_est", "clipped", "start_index")  # fmt: skip


class Frame(Protocol):
    image: np.ndarray  # (H, W, 3) uint8
    tokens: np.ndarray  # (l,) int64
    state: np.ndarray  # (s,) float32 raw proprio
    capture_time: float  # host monotonic seconds the observation was taken


class Source(Protocol):
    def read(self) -> Frame: ...


class Bus(Protocol):
    def send_setpoint(self, positions: np.ndarray) -> None: ...


@dataclass(frozen=True)
class LoopConfig:
    rate_hz: float  # control clock
    execution_horizon: int  # s: request the next chunk when the active one reaches this index
    d_max: int  # largest delay used (min of the model's and the profile's)
    latency_window: int  # b
    q_min: tuple[float, ...]  # rad, joint limits every setpoint is clamped to
    q_max: tuple[float, ...]
    max_step: tuple[float, ...]  # rad per control tick, per joint
    ramp: int | None = None  # Legato ramp r (capped at H - s - d); None: min(r_max, H - s - d)
    latency_pad_s: float = 0.0  # pad each inference (from capture) to at least this long
    spin_s: float = 0.0005  # spin this long before each deadline instead of sleeping
    ring: int = 1 << 15  # rows in each record ring (ticks, chunks) between two drains
    seed: int = 0  # sampling noise
    # Python's GIL switch interval while the loop runs: a thread running bytecode keeps the GIL for
    # up to this long before the waking clock thread gets it (CPython's default is 5 ms; see
    # docs/runtime.md for the measurement). None leaves it alone.
    switch_interval_s: float | None = 0.0005
    # SCHED_FIFO priority of the clock thread (Linux; needs CAP_SYS_NICE or root, else it stays
    # SCHED_OTHER and ``rt_priority_set`` says so). 0 leaves the scheduler alone.
    rt_priority: int = 50
    stale_s: float = 0.1  # joint state older than this holds the arm (M3: the tick reads it)
    max_fault_ticks: int = 0  # consecutive fault ticks after which ``fault_stop`` is set; 0: never

    @property
    def period(self) -> float:
        return 1.0 / self.rate_hz


class Ring:
    """A preallocated ring of float64 rows: one writer (no lock, no allocation), one drainer.
    Rows the drainer did not take in time are counted in ``dropped``."""

    def __init__(self, rows: int, cols: int) -> None:
        self.data = np.zeros((rows, cols))
        self.written = 0  # rows written so far (the writer's index)
        self.read = 0
        self.dropped = 0

    def row(self) -> np.ndarray:
        return self.data[self.written % len(self.data)]

    def commit(self) -> None:
        self.written += 1

    def drain(self) -> np.ndarray:
        end = self.written
        n = len(self.data)
        if end - self.read > n:
            self.dropped += end - self.read - n
            self.read = end - n
        idx = np.arange(self.read, end) % n
        self.read = end
        return self.data[idx].copy()


class _SpinSleeper:
    """sleep(dt) for PeriodicThread: wait on an event until ``spin_s`` before the deadline,
    then return so that the thread re-checks the clock; inside the last ``spin_s``, spin."""

    def __init__(self, spin_s: float, clock: Callable[[], float]) -> None:
        self.spin_s, self.clock, self.stop = spin_s, clock, threading.Event()

    def __call__(self, dt: float) -> None:
        if dt > self.spin_s:
            self.stop.wait(dt - self.spin_s)
            return
        end = self.clock() + dt
        while self.clock() < end and not self.stop.is_set():
            pass


def _set_fifo(priority: int) -> int:
    """Make the calling thread SCHED_FIFO at `priority`; returns it, or 0 where not permitted."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return priority
    except (AttributeError, OSError):
        return 0


class ControlLoop:
    """Run with :meth:`start`; :meth:`stop` holds and stops (it never closes the bus)."""

    def __init__(self, cfg: LoopConfig, bus: Bus, source: Source, denoiser: ChunkDenoiser,
                 hold: np.ndarray, *, clock: Callable[[], float] = time.monotonic,
                 recorder: Any = None) -> None:  # fmt: skip
        spec = denoiser.spec
        h, a = spec.horizon, spec.action_dim
        if not 1 <= cfg.execution_horizon <= h - 1:
            raise ValueError(f"execution horizon s={cfg.execution_horizon} must be in 1..H-1={h - 1}")
        if len(cfg.q_min) != a or len(cfg.q_max) != a or len(cfg.max_step) != a:
            raise ValueError(f"joint limits and max_step need {a} entries (the model's action dim)")
        self.cfg, self.bus, self.source, self.den, self.clock = cfg, bus, source, denoiser, clock
        self.h, self.a = h, a
        self.d_max = min(cfg.d_max, spec.d_max, h - cfg.execution_horizon, cfg.execution_horizon)
        f32 = np.float32
        self.buf = np.zeros((2, h, a), f32)  # the two chunk buffers (raw joint targets)
        self.lo, self.hi = np.asarray(cfg.q_min, f32), np.asarray(cfg.q_max, f32)
        self.max_step = np.asarray(cfg.max_step, f32)
        self.last = np.clip(np.asarray(hold, f32), self.lo, self.hi)  # last safe setpoint (the hold)
        self.sp = np.zeros(a, f32)  # the setpoint being made safe
        self._lo_step, self._hi_step = np.zeros(a, f32), np.zeros(a, f32)
        self._finite = np.zeros(a, bool)
        # shared state: written by one thread each (see the module docstring)
        self.active = -1  # buffer index of the executing chunk; -1 before the first
        self.active_id = -1
        self.index = 0  # index of the next action in the active chunk
        self.executed = 0  # actions taken from chunks so far (holds excluded)
        self.in_flight = False
        self.pending = -1  # buffer index of a chunk ready to swap in (worker -> clock)
        self.pending_id = -1
        self.pending_exec = 0  # self.executed at the pending chunk's request
        self.snapshot = np.zeros(4, np.int64)  # request: tick, executed, active, index (clock -> worker)
        self.request = threading.Event()
        # counters
        self.ticks = self.underruns = self.start_holds = self.faults = self.chunks = 0
        self.nan_setpoints = self.step_clamped = self.limit_clamped = self.delay_clips = 0
        self.fault_streak = self.max_fault_streak = 0  # consecutive fault ticks: now, the longest
        self.fault_stop = False  # max_fault_ticks consecutive fault ticks happened: the session stops
        self.unavailable = 0  # requests that got no chunk (ChunkUnavailable: a remote timeout, a lost link)
        self._gap_tick = -1  # tick of the first request of a run of unavailable chunks (-1: none)
        self.d_est = 0
        self.latencies = np.zeros(max(1, cfg.latency_window))
        self.n_lat = 0
        self.ticks_ring = Ring(cfg.ring, len(TICK_COLS) + a)
        # --record (edge/recorder.py): on_chunk from the worker after each chunk; never the clock
        self.recorder = recorder
        self.stage_names = denoiser.stage_names
        self.chunk_ring = Ring(max(64, cfg.ring // 8), len(CHUNK_BASE_COLS) + len(self.stage_names))
        self.errors: list[str] = []  # worker failures (each stops the worker; the clock holds)
        self.stopping = False
        self._stop = threading.Event()
        self._sleeper = _SpinSleeper(cfg.spin_s, clock)
        self.clock_thread = PeriodicThread(cfg.rate_hz, self._tick, clock=clock, sleep=self._sleeper,
                                           name="legato-clock")  # fmt: skip
        self._worker = threading.Thread(target=self._work, name="legato-infer", daemon=True)
        self._rng = np.random.default_rng(cfg.seed)
        self._eps = np.zeros(
            getattr(denoiser, "noise_shape", (1, h, a)), f32
        )  # the policy's own (padded) shape
        self.inject_nan_chunk = -1  # tests: chunk id whose action 'inject_nan_index' becomes NaN
        self.inject_nan_index = 0
        self.extra_latency_s = 0.0  # tests and what-ifs: added to every inference (like padding)
        self.started_at = 0.0
        self._old_switch: float | None = None
        self.rt_priority_set = 0  # the SCHED_FIFO priority the clock thread got (0: none)

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        if self.cfg.switch_interval_s is not None:
            self._old_switch = sys.getswitchinterval()
            sys.setswitchinterval(self.cfg.switch_interval_s)
        self.started_at = self.clock()
        self.in_flight = True
        self.snapshot[:] = (0, 0, -1, 0)
        self.request.set()  # the first chunk: omega = 0 while the arm holds
        self._worker.start()
        self.clock_thread.start()

    def stop(self) -> None:
        """Stop the clock, then send the hold (the last safe setpoint) and stop the worker."""
        self.stopping = True
        self._sleeper.stop.set()
        self.clock_thread.stop()
        self.bus.send_setpoint(self.last)
        self._stop.set()
        self.request.set()
        if self._worker.is_alive() and self._worker is not threading.current_thread():
            self._worker.join(timeout=5.0)
        if self._old_switch is not None:
            sys.setswitchinterval(self._old_switch)
            self._old_switch = None

    @property
    def alive(self) -> bool:
        return self._worker.is_alive() and not self._stop.is_set()

    # ---- the clock tick (no allocation, no logging, no lock) -------------------------------------
    def _tick(self, k: int, deadline: float) -> None:
        if k == 0 and self.cfg.rt_priority > 0:  # once, in the clock thread itself
            self.rt_priority_set = _set_fifo(self.cfg.rt_priority)
        t0 = self.clock()
        if self.pending >= 0:  # the swap, at the index the clock has reached
            self.index = self.executed - self.pending_exec
            self.active, self.active_id = self.pending, self.pending_id
            self.pending = -1
            self.in_flight = False
        # Ask for the next chunk when the active one has reached index s, before its action s is
        # sent: the observation then shows the arm after action s - 1 (legato/rollout.py's timing).
        if (not self.in_flight and self.active >= 0 and self.index >= self.cfg.execution_horizon
                and not self.stopping):  # fmt: skip
            self.snapshot[0], self.snapshot[1] = k, self.executed
            self.snapshot[2], self.snapshot[3] = self.active, self.index
            self.in_flight = True
            self.request.set()
        mode, fault = RUN, 0
        if self.active >= 0 and self.index < self.h and not self.stopping:
            target = self.buf[self.active, self.index]
            self.index += 1
            self.executed += 1
        else:
            target = self.last
            if self.active < 0:
                mode = HOLD_START
                self.start_holds += 1
            else:
                mode = UNDERRUN
                self.underruns += 1
        sp, last = self.sp, self.last
        np.isfinite(target, out=self._finite)
        if self._finite.all():
            np.clip(target, self.lo, self.hi, out=sp)
            if (sp != target).any():
                self.limit_clamped += 1
            np.subtract(last, self.max_step, out=self._lo_step)
            np.add(last, self.max_step, out=self._hi_step)
            if (sp < self._lo_step).any() or (sp > self._hi_step).any():
                self.step_clamped += 1
                np.clip(sp, self._lo_step, self._hi_step, out=sp)
        else:  # NaN or inf never reaches a motor: hold, and latch a fault count
            sp[...] = last
            self.nan_setpoints += 1
            self.faults += 1
            fault = 1
        if fault:
            self.fault_streak += 1
            if self.fault_streak > self.max_fault_streak:
                self.max_fault_streak = self.fault_streak
            if self.cfg.max_fault_ticks and self.fault_streak >= self.cfg.max_fault_ticks:
                self.fault_stop = True
        else:
            self.fault_streak = 0
        t1 = self.clock()
        self.bus.send_setpoint(sp)
        t2 = self.clock()
        last[...] = sp
        self.ticks += 1
        row = self.ticks_ring.row()
        row[0], row[1], row[2], row[3], row[4] = k, deadline, t0, self.clock(), mode
        row[5], row[6], row[7], row[8] = self.active_id, self.index - 1, fault, t2 - t1
        row[len(TICK_COLS) :] = sp
        self.ticks_ring.commit()

    # ---- the inference worker --------------------------------------------------------------------
    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                if not self.request.wait(0.1):
                    continue
                self.request.clear()
                if self._stop.is_set():
                    break
                try:
                    self._one_chunk()
                except ChunkUnavailable:
                    self._no_chunk()
        except Exception as e:  # a failed chunk stops inference; the clock holds (underruns)
            self.errors.append(f"inference worker: {type(e).__name__}: {e}")
            self._stop.set()

    def _no_chunk(self) -> None:
        """No chunk this time: count it and ask again (the clock holds when the active chunk runs out).
        The first chunk is asked for here (the clock only asks once a chunk is active), the others by
        the clock at its next tick, with a fresh snapshot."""
        self.unavailable += 1
        if self._gap_tick < 0:
            self._gap_tick = int(self.snapshot[0])
        self._stop.wait(self.cfg.period)  # a failing link is not retried faster than the clock
        if self.active < 0:
            self.request.set()
        else:
            self.in_flight = False

    def _one_chunk(self) -> None:
        cfg, h = self.cfg, self.h
        tick, executed, active, index = (int(x) for x in self.snapshot)
        # after a gap longer than d_max the executed prefix no longer follows the tail: omega = 0
        gap = self._gap_tick >= 0 and tick - self._gap_tick > self.d_max
        t_req = self.clock()
        frame = self.source.read()
        t_pre = self.clock()
        self.den.set_observation(frame.image, frame.tokens, frame.state)
        t_pre = self.clock() - t_pre + float(getattr(frame, "preprocess_s", 0.0))
        d_est, clipped = self.d_est, False
        if active < 0 or index >= h - 1 or gap:  # the first chunk, the old one all but spent, a gap
            tail, req = None, ChunkRequest(d=0, s=cfg.execution_horizon, r=0)
        else:
            s = index
            d = min(d_est, h - s, s)
            r = default_ramp(self.den.spec, d, s) if cfg.ramp is None else min(cfg.ramp, max(0, h - s - d))
            tail, req = self.buf[active, s:], ChunkRequest(d=d, s=s, r=r)
        self._rng.standard_normal(out=self._eps, dtype=np.float32)
        chunk = self.den.denoise(self._eps, tail, req)
        back = 1 - active if active >= 0 else 0
        self.buf[back] = chunk
        cid = self.chunks
        if cid == self.inject_nan_chunk:
            self.buf[back, self.inject_nan_index, 0] = np.nan
        pad = max(cfg.latency_pad_s, 0.0) + self.extra_latency_s
        if pad > 0:
            wait = frame.capture_time + pad - self.clock()
            if wait > 0:
                self._stop.wait(wait)
        ready = self.clock()
        latency = ready - frame.capture_time
        self.latencies[self.n_lat % len(self.latencies)] = latency
        self.n_lat += 1
        window = self.latencies[: min(self.n_lat, len(self.latencies))]
        d_new, clipped = delay_from_latencies(window, cfg.period, self.d_max)
        self.delay_clips += int(clipped)
        self.d_est = d_new
        self.chunks += 1
        self._gap_tick = -1
        # post: the clock swaps it in at its next tick
        self.pending_exec, self.pending_id = executed, cid
        self.pending = back
        row = self.chunk_ring.row()
        base = (cid, t_req, frame.capture_time, t_pre, ready, latency, req.d, req.s, req.r, d_est,
                float(clipped), self.executed - executed)  # fmt: skip
        row[: len(base)] = base
        row[len(base) :] = self.den.stage_ns * 1e-9
        self.chunk_ring.commit()
        if self.recorder is not None:  # after the post: recording never delays the swap
            self.recorder.on_chunk(cid, frame, req, self.den, tail, self._eps, chunk, row, self.stage_names)

    # ---- status ----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Counters for the status line and the summary (cheap; call from any thread)."""
        ct = self.clock_thread
        return {"ticks": self.ticks, "chunks": self.chunks, "d_est": self.d_est, "underruns": self.underruns,
                "start_holds": self.start_holds, "faults": self.faults, "nan_setpoints": self.nan_setpoints,
                "step_clamped": self.step_clamped, "limit_clamped": self.limit_clamped,
                "missed_ticks": ct.overruns, "tick_errors": ct.tick_errors, "delay_clips": self.delay_clips,
                "max_fault_streak": self.max_fault_streak, "rt_priority": self.rt_priority_set,
                "chunks_unavailable": self.unavailable,
                "worker_errors": list(self.errors)}  # fmt: skip

"""The on-device loop: a control clock that never waits, an inference worker, two chunk buffers.

Parts (each its own module):
- edge/loopstate.py: the state the two share (chunk buffers, a few integers, the tick ring, the
  telemetry the tick saw), in one buffer with semaphores for the hand-offs, so that the clock
  can live in another process (memory-ordering-safe on ARM too);
- edge/clock.py: the tick (:class:`~edge.clock.ClockTick`, the one implementation);
- edge/worker.py: the inference worker;
- edge/clockproc.py: where the clock runs with the bus: the clock process (production), or a
  thread of this process (tests, the benchmark's comparison).
:class:`ControlLoop` is one run of them: :meth:`start` asks for the first chunk (omega = 0 while
the arm holds) and starts the clock; :meth:`stop` stops the clock, sends the hold, stops the worker.

Timeline (t in ticks; matches legato/rollout.py): the request for chunk c is made when the
active chunk reaches index s; the worker uses d = the delay estimate; when the chunk is ready
the clock swaps it in at the index it has reached: the number of actions actually executed
since the request (normally d; the first d actions of the new chunk are the frozen prefix, equal
to the old chunk's). After an underrun (the old chunk ran out; the arm held its last setpoint)
that count is smaller than the wall-clock ticks, so the late chunk continues right after the
held action: no jump. The first chunk is sampled with omega = 0 while the arm holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edge.clock import HOLD_STALE, HOLD_START, HOLD_STOP, RUN, TICK_COLS, UNDERRUN
from edge.loopstate import I
from edge.worker import CHUNK_BASE_COLS, InferenceWorker

__all__ = ["CHUNK_BASE_COLS", "HOLD_STALE", "HOLD_START", "HOLD_STOP", "RUN", "TICK_COLS", "UNDERRUN",
           "ControlLoop", "LoopConfig"]  # fmt: skip


class Frame(Protocol):
    image: np.ndarray  # (H, W, 3) uint8
    tokens: np.ndarray  # (l,) int64
    state: np.ndarray  # (s,) float32 raw proprio
    capture_time: float  # host monotonic seconds the observation was taken
    preprocess_s: float  # time spent converting / resizing it


class Source(Protocol):
    def read(self) -> Frame: ...


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
    # Python's GIL switch interval in the clock's process while the loop runs: a thread running
    # bytecode keeps the GIL for up to this long before the waking clock thread gets it (CPython's
    # default is 5 ms; docs/runtime.md). None leaves it alone.
    switch_interval_s: float | None = 0.0005
    # SCHED_FIFO priority of the clock thread (Linux; needs CAP_SYS_NICE or root, else it stays
    # SCHED_OTHER and the summary's clock.policy says so). 0 leaves the scheduler alone.
    rt_priority: int = 50
    stale_s: float = 0.1  # joint state older than this holds the arm (a fault tick)
    max_fault_ticks: int = 0  # consecutive fault ticks after which ``fault_stop`` is set; 0: never

    @property
    def period(self) -> float:
        return 1.0 / self.rate_hz


class ControlLoop:
    """One run of the loop on a clock side (edge.clockproc: the clock process or a local host,
    opened: its bus started). :meth:`stop` holds and stops; it never closes the bus."""

    def __init__(self, cfg: LoopConfig, side: Any, source: Source, denoiser: Any, hold: np.ndarray, *,
                 clock: Callable[[], float] = time.monotonic, recorder: Any = None) -> None:  # fmt: skip
        spec = denoiser.spec
        h, a = spec.horizon, spec.action_dim
        if not 1 <= cfg.execution_horizon <= h - 1:
            raise ValueError(f"execution horizon s={cfg.execution_horizon} must be in 1..H-1={h - 1}")
        if len(cfg.q_min) != a or len(cfg.q_max) != a or len(cfg.max_step) != a:
            raise ValueError(f"joint limits and max_step need {a} entries (the model's action dim)")
        lay = side.state.layout
        if (lay.h, lay.a) != (h, a):
            raise ValueError(f"the clock's state is for H={lay.h}, a={lay.a}; the model has H={h}, a={a}")
        self.cfg, self.side, self.den, self.clock = cfg, side, denoiser, clock
        self.state = side.state
        self.hold = np.asarray(hold, np.float32)
        self.worker = InferenceWorker(self.state, cfg, denoiser, source, clock=clock, recorder=recorder)
        self.ticks_ring, self.chunk_ring = self.state.ticks_ring, self.worker.chunk_ring
        self.stage_names = denoiser.stage_names
        self.started_at = 0.0
        self.final: dict[str, Any] | None = None  # the clock's counters after stop()

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        st = self.state
        st.drain_signals()
        st.ticks_ring.reset()
        st.ints[I.PENDING] = -1
        self.worker.start()
        self.started_at = self.clock()
        self.side.start_loop(self.cfg, self.hold)

    def stop(self) -> None:
        """Stop the clock, then send the hold (the last safe setpoint) and stop the worker."""
        try:
            self.final = self.side.stop_loop()
        finally:
            self.worker.stop()

    # ---- what the session reads ------------------------------------------------------------------
    def _int(self, slot: I) -> int:
        return int(self.final[slot.name.lower()]) if self.final is not None else int(self.state.ints[slot])

    @property
    def ticks(self) -> int:
        return self._int(I.TICKS)

    @property
    def faults(self) -> int:
        return self._int(I.FAULTS)

    @property
    def underruns(self) -> int:
        return self._int(I.UNDERRUNS)

    @property
    def fault_stop(self) -> bool:
        return bool(self._int(I.FAULT_STOP))

    @property
    def fault_streak(self) -> int:
        return self._int(I.FAULT_STREAK)

    @property
    def last(self) -> np.ndarray:
        return self.final["last"] if self.final is not None else self.state.last.copy()

    @property
    def chunks(self) -> int:
        return self.worker.chunks

    @property
    def d_est(self) -> int:
        return self.worker.d_est

    @property
    def errors(self) -> list[str]:
        return self.worker.errors

    def status(self) -> dict[str, Any]:
        """Counters for the status line and the summary (cheap; call from any thread)."""
        g = self._int
        w = self.worker
        out = {"ticks": g(I.TICKS), "chunks": w.chunks, "d_est": w.d_est, "underruns": g(I.UNDERRUNS),
               "start_holds": g(I.START_HOLDS), "faults": g(I.FAULTS), "nan_setpoints": g(I.NAN_SETPOINTS),
               "stale_ticks": g(I.STALE_TICKS), "step_clamped": g(I.STEP_CLAMPED),
               "limit_clamped": g(I.LIMIT_CLAMPED), "missed_ticks": g(I.MISSED_TICKS),
               "tick_errors": g(I.TICK_ERRORS), "delay_clips": w.delay_clips,
               "max_fault_streak": g(I.MAX_FAULT_STREAK), "chunks_unavailable": w.unavailable,
               "rerequests": g(I.REREQUESTS), "telemetry_skipped": g(I.TEL_SKIPPED),
               "worker_errors": list(w.errors)}  # fmt: skip
        if self.final is not None:
            out["stale_joints"] = self.final["stale_joints"]
            out["scheduling"] = self.final["scheduling"]
        else:
            out["stale_joints"] = [int(x) for x in self.state.stale_count]
        return out

"""The inference worker: one chunk per request of the control clock, on the shared state.

It waits for a request (``state.req``), reads the snapshot, reads an observation (the frame
carries its capture time), runs the denoiser into the back buffer with Legato continuation from
the active chunk's unexecuted tail, pads to ``latency_pad_s`` if asked, and posts the chunk
(pending fields, then ``state.ready``). Latency is measured from the frame's capture to the chunk
being ready; the delay estimate is RTC's rule over the last b latencies
(edge.schedule.delay_from_latencies), clipped to the smaller of the model's and the profile's
d_max and to H - s.

"No chunk this time" (``edge.errors.ChunkUnavailable``: a remote policy's timeout or lost link)
is counted and posted as pending = -1: the clock holds where the chunk runs out and asks again
at its next tick. The first chunk after a gap longer than the trained d_max is sampled with
omega = 0 (no reference): the executed prefix no longer continues a plan the model saw. Any
other exception stops the worker (the clock holds: underruns) and is reported.

The optional ``recorder`` (edge/recorder.py) gets every chunk after it was posted:
``recorder.on_chunk(cid, frame, request, denoiser, tail, eps, chunk, chunk_row, stage_names)``;
it must not block (the clock never waits for the worker anyway).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edge.errors import ChunkUnavailable
from edge.loopstate import I, LoopState, SharedRing
from edge.policy import ChunkRequest, default_ramp
from edge.schedule import delay_from_latencies

# Chunk ring columns (float64); the denoiser's stages follow.
CHUNK_BASE_COLS = ("chunk", "request", "capture", "preprocess_s", "ready", "latency_s", "d", "s", "r",
                   "d_est", "clipped", "start_index")  # fmt: skip


class InferenceWorker:
    """Chunks for the clock: :meth:`start` runs :meth:`serve` in a thread; tests call
    :meth:`one_chunk` directly after taking a request (an injectable ``clock``)."""

    def __init__(self, state: LoopState, cfg: Any, denoiser: Any, source: Any, *,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], object] | None = None,
                 recorder: Any = None) -> None:  # fmt: skip
        spec = denoiser.spec
        self.state, self.cfg, self.den, self.source, self.clock = state, cfg, denoiser, source, clock
        self.recorder = recorder
        h, a = spec.horizon, spec.action_dim
        self.h, self.a = h, a
        self.d_max = min(cfg.d_max, spec.d_max, h - cfg.execution_horizon, cfg.execution_horizon)
        self.trained_d_max = spec.d_max
        self.latencies = np.zeros(max(1, cfg.latency_window))
        self.n_lat = 0
        self.d_est = 0
        self.chunks = self.unavailable = self.delay_clips = 0
        self.stage_names = denoiser.stage_names
        cols = len(CHUNK_BASE_COLS) + len(self.stage_names)  # the session drains them (same process)
        self.chunk_ring = SharedRing(np.zeros((max(64, cfg.ring // 8), cols)), threading.Semaphore(0))
        self.errors: list[str] = []
        self._gap_tick = -1  # tick of the first request of a run of unavailable chunks (-1: none)
        self._rng = np.random.default_rng(cfg.seed)
        # the noise in the policy's own shape (a padded action dim); a remote client may not say
        self._eps = np.zeros(getattr(denoiser, "noise_shape", (1, h, a)), np.float32)
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait  # the latency padding's wait (a fake clock advances)
        self._thread = threading.Thread(target=self.serve, name="legato-infer", daemon=True)

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.state.req.release()  # wake it
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def serve(self) -> None:
        try:
            while not self._stop.is_set():
                if not self.state.req.acquire(True, 0.1):
                    continue
                if self._stop.is_set():
                    break
                self.one_chunk()
        except Exception as e:  # a failed chunk stops inference; the clock holds (underruns)
            self.errors.append(f"inference worker: {type(e).__name__}: {e}")
            self._stop.set()

    # ---- one chunk -------------------------------------------------------------------------------
    def one_chunk(self) -> None:
        """Answer the request in the snapshot: a chunk, or "no chunk this time"."""
        n = self.state.ints
        tick, executed = int(n[I.SNAP_TICK]), int(n[I.SNAP_EXECUTED])
        active, index = int(n[I.SNAP_ACTIVE]), int(n[I.SNAP_INDEX])
        try:
            self._chunk(tick, executed, active, index)
        except ChunkUnavailable:
            self.unavailable += 1
            if self._gap_tick < 0:
                self._gap_tick = tick
            n[I.PENDING] = -1
            self.state.ready.release()  # the clock asks again at its next tick

    def _chunk(self, tick: int, executed: int, active: int, index: int) -> None:
        cfg, h, st = self.cfg, self.h, self.state
        gap = self._gap_tick >= 0 and tick - self._gap_tick > self.trained_d_max
        t_req = self.clock()
        frame = self.source.read()
        t_pre = self.clock()
        self.den.set_observation(frame.image, frame.tokens, frame.state)
        t_pre = self.clock() - t_pre + float(frame.preprocess_s)
        d_est, clipped = self.d_est, False
        if active < 0 or index >= h - 1 or gap:  # the first chunk, the old one all but spent, a gap
            tail, req = None, ChunkRequest(d=0, s=cfg.execution_horizon, r=0)
        else:
            s = index
            d = min(d_est, h - s, s)
            r = default_ramp(self.den.spec, d, s) if cfg.ramp is None else min(cfg.ramp, max(0, h - s - d))
            tail, req = st.buf[active, s:], ChunkRequest(d=d, s=s, r=r)
        self._rng.standard_normal(out=self._eps, dtype=np.float32)
        chunk = self.den.denoise(self._eps, tail, req)
        back = 1 - active if active >= 0 else 0
        st.buf[back] = chunk
        cid = self.chunks
        if cfg.latency_pad_s > 0:
            wait = frame.capture_time + cfg.latency_pad_s - self.clock()
            if wait > 0:
                self._sleep(wait)
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
        n = st.ints  # post: the data first, then the semaphore (the clock swaps it in at its next tick)
        n[I.PENDING_EXEC], n[I.PENDING_ID], n[I.PENDING] = executed, cid, back
        st.ready.release()
        row = self.chunk_ring.row()
        base = (cid, t_req, frame.capture_time, t_pre, ready, latency, req.d, req.s, req.r, d_est,
                float(clipped), int(n[I.EXECUTED]) - executed)  # fmt: skip
        row[: len(base)] = base
        row[len(base) :] = self.den.stage_ns * 1e-9
        self.chunk_ring.commit()
        if self.recorder is not None:  # after the post: recording never delays the swap
            self.recorder.on_chunk(cid, frame, req, self.den, tail, self._eps, chunk, row, self.stage_names)

"""The state the control clock and the inference worker share, laid out in one flat buffer.

The clock may run in another process than the worker (edge/clockproc.py), so everything they
share is numpy views on one buffer (``multiprocessing.RawArray``, or a bytearray when both run in
one process) plus semaphores for the hand-offs. Every field has one writer. Ordering across
processes (and cores: ARM reorders plain stores) comes only from the semaphores, whose post and
wait are full memory barriers (POSIX 4.12, glibc's atomics): a writer fills the data, then posts;
the reader waits (or tries) first, then reads. Nothing else is assumed ordered.

Hand-offs (semaphores: ``sem_post`` never blocks; the clock only ever *tries*):
- request (clock -> worker): the clock writes the snapshot (tick, executed, active, index), then
  posts ``req``; the worker waits on ``req``, then reads the snapshot.
- chunk (worker -> clock): the worker writes the back buffer and pending / pending_id /
  pending_exec (pending = -1: no chunk this time), then posts ``ready``; the clock tries ``ready``
  at each tick and swaps (or re-requests) only when that succeeded.
- tick rows (clock -> session): the clock writes a row, then posts ``rows``; the drainer counts
  the rows it may read by trying ``rows`` (:class:`SharedRing`).
- telemetry (clock process -> everyone else): :class:`TelemetryBlock` under a lock the writer
  only tries (a busy reader costs one skipped publish, never a wait); the reader takes it.
- bus health: pickled into a byte slot under a lock the writer only tries.
Counters the clock writes (ticks, underruns, ...) are read without ordering for the status line
(aligned 8-byte loads do not tear); final numbers come back with the stop command's reply.

Shapes: h chunk length, a joints; times host ``time.monotonic()`` seconds.
"""

from __future__ import annotations

import pickle
import threading
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np


class I(IntEnum):  # noqa: E742 (an index table, read as state.ints[I.ACTIVE])
    """Slots of ``LoopState.ints`` (int64). Written by the clock unless marked (worker)."""

    ACTIVE = 0  # buffer index of the executing chunk; -1 before the first
    ACTIVE_ID = 1  # its chunk id
    INDEX = 2  # index of the next action in the active chunk
    EXECUTED = 3  # actions taken from chunks so far (holds excluded)
    IN_FLIGHT = 4  # a request is out and not yet answered
    PENDING = 5  # (worker) buffer index of the posted chunk; -1: no chunk this time
    PENDING_ID = 6  # (worker) its chunk id
    PENDING_EXEC = 7  # (worker) EXECUTED at its request
    SNAP_TICK = 8  # the request: tick, executed, active, index
    SNAP_EXECUTED = 9
    SNAP_ACTIVE = 10
    SNAP_INDEX = 11
    TICKS = 12  # counters
    UNDERRUNS = 13
    START_HOLDS = 14
    FAULTS = 15  # ticks held for a fault (NaN/inf target, stale joint state)
    NAN_SETPOINTS = 16
    STALE_TICKS = 17
    STEP_CLAMPED = 18
    LIMIT_CLAMPED = 19
    FAULT_STREAK = 20
    MAX_FAULT_STREAK = 21
    FAULT_STOP = 22  # max_fault_ticks consecutive fault ticks happened
    STOPPING = 23  # (host) the loop is stopping: no new chunk is taken
    MISSED_TICKS = 24
    TICK_ERRORS = 25
    REREQUESTS = 26  # requests made again after "no chunk this time"
    TEL_PUBLISHED = 27
    TEL_SKIPPED = 28  # publishes skipped because a reader held the telemetry lock
    RUNNING = 29  # (host) the clock thread is running


N_INTS = len(I)


@dataclass(frozen=True)
class Layout:
    """Sizes of the shared state: chunk length h, joints a, tick ring rows and columns."""

    h: int
    a: int
    ring: int = 1 << 15
    tick_cols: int = 9
    health_bytes: int = 1 << 14

    def sections(self) -> list[tuple[str, np.dtype, tuple[int, ...]]]:
        a, f32, f64, i64 = self.a, np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int64)
        return [
            ("ints", i64, (N_INTS,)),
            ("buf", f32, (2, self.h, a)),  # the two chunk buffers, raw joint targets
            ("last", f32, (a,)),  # the last safe setpoint (the hold)
            ("stale_count", i64, (a,)),  # ticks each joint's state was older than stale_s
            ("ring", f64, (self.ring, self.tick_cols + a)),  # tick rows, then the setpoint sent
            ("tel_f", f64, (TelemetryBlock.SCALARS,)),
            ("tel_pos", f32, (a,)),
            ("tel_vel", f32, (a,)),
            ("tel_eff", f32, (a,)),
            ("tel_meas", f64, (a,)),
            ("tel_stale", np.dtype(np.uint8), (a,)),
            ("tel_err", i64, (a,)),
            ("health_len", i64, (2,)),  # payload bytes, publish count
            ("health", np.dtype(np.uint8), (self.health_bytes,)),
        ]

    def nbytes(self) -> int:
        return self._offsets()[1]

    def _offsets(self) -> tuple[dict[str, int], int]:
        off, out = 0, {}
        for name, dt, shape in self.sections():
            off = (off + 63) // 64 * 64  # each section on its own cache line
            out[name] = off
            off += dt.itemsize * int(np.prod(shape))
        return out, off

    def views(self, buf: Any) -> dict[str, np.ndarray]:
        mem = np.frombuffer(buf, np.uint8)
        offs, _ = self._offsets()
        out = {}
        for name, dt, shape in self.sections():
            n = dt.itemsize * int(np.prod(shape))
            out[name] = mem[offs[name] : offs[name] + n].view(dt).reshape(shape)
        return out


class SharedRing:
    """Rows of float64 written by one side and drained by the other; ``sem`` counts committed
    rows (post after the row is written, try before reading it). Rows the drainer did not take
    in time are overwritten and counted in ``dropped``."""

    def __init__(self, data: np.ndarray, sem: Any) -> None:
        self.data, self.sem = data, sem
        self.written = 0  # writer's count
        self.read = 0  # drainer's count
        self.dropped = 0

    def row(self) -> np.ndarray:
        return self.data[self.written % len(self.data)]

    def commit(self) -> None:
        self.written += 1
        self.sem.release()

    def drain(self) -> np.ndarray:
        n = 0
        while self.sem.acquire(False):
            n += 1
        end = self.read + n
        size = len(self.data)
        if n > size:
            self.dropped += n - size
            self.read = end - size
        idx = np.arange(self.read, end) % size
        self.read = end
        return self.data[idx].copy()

    def reset(self) -> None:
        """Forget rows not drained (between two runs of the loop; the writer is stopped)."""
        while self.sem.acquire(False):
            pass
        self.written = self.read = 0


class TelemetryBlock:
    """A ``firmware_bridge.interface.Telemetry`` as numbers in the shared state: the clock writes
    the one it read at each tick (so the worker's observation is the state the tick saw), the
    clock process's publisher between runs. Scalars: received_at, sent_at (NaN: none),
    last_applied_seq, controller_time_us, torque_enabled, holding, faults, has stale flags, has
    servo errors, publish count; None is NaN (the fields a bus cannot have)."""

    SCALARS = 10

    def __init__(self, v: dict[str, np.ndarray], lock: Any) -> None:
        self.f, self.pos, self.vel, self.eff = v["tel_f"], v["tel_pos"], v["tel_vel"], v["tel_eff"]
        self.meas = v["tel_meas"]
        self.stale, self.err, self.lock = v["tel_stale"], v["tel_err"], lock

    def write(self, tel: Any) -> bool:
        """Publish ``tel`` unless a reader holds the lock (then False: try again next time)."""
        if not self.lock.acquire(False):
            return False
        try:
            f = self.f
            self.pos[...] = tel.positions
            self.vel[...] = tel.velocities
            self.eff[...] = tel.efforts
            self.meas[...] = tel.measured_at
            f[0], f[1] = tel.received_at, _num(tel.sent_at)
            f[2], f[3] = _num(tel.last_applied_seq), _num(tel.controller_time_us)
            f[4], f[5], f[6] = tel.torque_enabled, tel.holding, tel.faults
            f[7] = tel.stale is not None
            if tel.stale is not None:
                self.stale[...] = tel.stale
            f[8] = tel.servo_errors is not None
            if tel.servo_errors is not None:
                self.err[...] = tel.servo_errors
            f[9] += 1
        finally:
            self.lock.release()
        return True

    def read(self, timeout_s: float = 0.1) -> Any:
        """The newest published telemetry (a Telemetry with read-only arrays), or None before one."""
        from firmware_bridge.interface import Telemetry

        if not self.lock.acquire(True, timeout_s):
            return None
        try:
            f = self.f
            if f[9] == 0:
                return None
            pos, vel, eff, meas = self.pos.copy(), self.vel.copy(), self.eff.copy(), self.meas.copy()
            stale = self.stale.astype(bool) if f[7] else None
            err = tuple(int(x) for x in self.err) if f[8] else None
            vals = [float(x) for x in f[:7]]
        finally:
            self.lock.release()
        for arr in (pos, vel, eff, meas, stale):
            if arr is not None:
                arr.setflags(write=False)
        return Telemetry(positions=pos, velocities=vel, efforts=eff, measured_at=meas,
                         last_applied_seq=_opt_int(vals[2]), controller_time_us=_opt_int(vals[3]),
                         received_at=vals[0], sent_at=None if np.isnan(vals[1]) else vals[1],
                         torque_enabled=bool(vals[4]),
                         holding=bool(vals[5]), faults=int(vals[6]), stale=stale,
                         servo_errors=err)  # fmt: skip


def _num(x: float | int | None) -> float:
    return np.nan if x is None else float(x)


def _opt_int(x: float) -> int | None:
    return None if np.isnan(x) else int(x)


class HealthSlot:
    """The bus's health (a BusHealth subclass, pickled) in a byte slot: the clock process writes
    it between ticks (a try of the lock), anyone reads it."""

    def __init__(self, v: dict[str, np.ndarray], lock: Any) -> None:
        self.meta, self.data, self.lock = v["health_len"], v["health"], lock

    def write(self, health: Any) -> bool:
        blob = pickle.dumps(health, protocol=pickle.HIGHEST_PROTOCOL)
        if len(blob) > len(self.data) or not self.lock.acquire(False):
            return False
        try:
            self.data[: len(blob)] = np.frombuffer(blob, np.uint8)
            self.meta[0] = len(blob)
            self.meta[1] += 1
        finally:
            self.lock.release()
        return True

    def read(self, timeout_s: float = 0.1) -> Any:
        if not self.lock.acquire(True, timeout_s):
            return None
        try:
            n = int(self.meta[0])
            blob = self.data[:n].tobytes() if self.meta[1] else b""
        finally:
            self.lock.release()
        return pickle.loads(blob) if blob else None


@dataclass
class Signals:
    """The semaphores and locks of one LoopState (threading's in one process, multiprocessing's
    across two: the same acquire(block, timeout) / release calls)."""

    req: Any
    ready: Any
    rows: Any
    tel: Any
    health: Any

    @staticmethod
    def local() -> Signals:
        return Signals(threading.Semaphore(0), threading.Semaphore(0), threading.Semaphore(0),
                       threading.Lock(), threading.Lock())  # fmt: skip

    @staticmethod
    def shared(ctx: Any) -> Signals:
        return Signals(ctx.Semaphore(0), ctx.Semaphore(0), ctx.Semaphore(0), ctx.Lock(), ctx.Lock())


class LoopState:
    """The shared state (views on one buffer) and its signals. :meth:`local` for one process,
    :meth:`shared` for a clock in another (pass :meth:`handle` to it, :meth:`attach` there)."""

    def __init__(self, layout: Layout, buf: Any, signals: Signals) -> None:
        self.layout, self._buf, self.signals = layout, buf, signals
        v = layout.views(buf)
        self.ints, self.buf, self.last = v["ints"], v["buf"], v["last"]
        self.stale_count = v["stale_count"]
        self.ticks_ring = SharedRing(v["ring"], signals.rows)
        self.telemetry = TelemetryBlock(v, signals.tel)
        self.health = HealthSlot(v, signals.health)
        self.req, self.ready = signals.req, signals.ready

    @classmethod
    def local(cls, layout: Layout) -> LoopState:
        return cls(layout, bytearray(layout.nbytes()), Signals.local())

    @classmethod
    def shared(cls, layout: Layout, ctx: Any) -> LoopState:
        import ctypes

        return cls(layout, ctx.RawArray(ctypes.c_uint8, layout.nbytes()), Signals.shared(ctx))

    def handle(self) -> tuple[Layout, Any, Signals]:
        """What a spawned process needs to attach (picklable only as Process arguments)."""
        return self.layout, self._buf, self.signals

    @classmethod
    def attach(cls, handle: tuple[Layout, Any, Signals]) -> LoopState:
        return cls(*handle)

    def drain_signals(self) -> None:
        """Between two runs (clock and worker stopped): forget requests and chunks not taken."""
        for s in (self.req, self.ready):
            while s.acquire(False):
                pass

"""The control clock's tick: the one implementation, on the shared state (edge/loopstate.py).

It runs in the clock thread of whichever process holds the bus: the clock process in production
(edge/clockproc.py), the caller's thread in tests (an injectable clock drives it step by step)
and in the thread mode. Each tick, in order, without a blocking call, a log line or a lock wait:
1. the swap: if the worker posted (a try of ``ready``), the chunk takes over at the index the
   clock has reached (the actions executed since its request); "no chunk this time" (pending
   -1) only clears the request, so it is made again below;
2. the joint state: the bus's newest telemetry, published for the worker (so its observation is
   the state this tick saw); a joint whose value is older than ``stale_s`` makes the tick hold;
3. the request for the next chunk when the active one has reached index s (or there is none
   yet and none is asked for), with a snapshot, then a post of ``req``; not while stale;
4. the next action of the active chunk, or the hold (the last safe setpoint): before the first
   chunk, when the active one ran out (underrun), while the joint state is stale;
5. safety: NaN or inf anywhere -> the hold and a fault; otherwise the joint limits, then at
   most ``max_step`` from the last setpoint; consecutive fault ticks are counted and
   ``max_fault_ticks`` of them set FAULT_STOP;
6. ``bus.send_setpoint`` (the bus only stores it: its own thread writes the port);
7. one row into the tick ring: tick, deadline, start, end, mode, chunk, index, fault, write time,
   then the setpoint sent.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edge.loopstate import I, LoopState

# Tick modes written to the ring.
RUN, HOLD_START, UNDERRUN, HOLD_STOP, HOLD_STALE = 0, 1, 2, 3, 4
# Tick ring columns (float64); the setpoint sent follows (a columns, rad).
TICK_COLS = ("tick", "deadline", "start", "end", "mode", "chunk", "index", "fault", "write_s")


class ClockTick:
    """``tick(k, deadline)`` on ``state``: the loop's settings ``cfg`` (edge.loop.LoopConfig),
    the bus (``send_setpoint``, ``latest_telemetry``), a monotonic ``clock``."""

    def __init__(self, state: LoopState, cfg: Any, bus: Any,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        lay = state.layout
        h, a = lay.h, lay.a
        self.state, self.cfg, self.bus, self.clock = state, cfg, bus, clock
        self.h, self.s = h, cfg.execution_horizon
        f32 = np.float32
        self.lo, self.hi = np.asarray(cfg.q_min, f32), np.asarray(cfg.q_max, f32)
        self.max_step = np.asarray(cfg.max_step, f32)
        self.stale_s, self.max_fault = float(cfg.stale_s), int(cfg.max_fault_ticks)
        self.sp = np.zeros(a, f32)  # the setpoint being made safe
        self._lo_step, self._hi_step = np.zeros(a, f32), np.zeros(a, f32)
        self._finite = np.zeros(a, bool)
        self.fresh_at = np.zeros(a)  # host time each joint's newest value was measured (-inf: never)
        self._age = np.zeros(a)
        self._stale = np.zeros(a, bool)
        self._last_tel: Any = None
        self.last_end = 0.0  # when the last tick ended (the clock process's publisher reads it)

    def reset(self, hold: np.ndarray) -> None:
        """Before a run: the hold, every clock-side slot, and the first request (omega = 0)."""
        st, n = self.state, self.state.ints
        st.last[...] = np.clip(np.asarray(hold, np.float32), self.lo, self.hi)
        for slot in I:
            if slot not in (I.PENDING, I.PENDING_ID, I.PENDING_EXEC, I.TEL_PUBLISHED, I.TEL_SKIPPED):
                n[slot] = 0
        n[I.ACTIVE] = n[I.ACTIVE_ID] = n[I.SNAP_ACTIVE] = -1
        st.stale_count[...] = 0
        self.fresh_at[...] = self.clock()  # the rig waited for the first telemetry
        self._last_tel = None
        st.ticks_ring.reset()
        n[I.IN_FLIGHT] = 1
        st.req.release()  # the first chunk is asked for while the arm holds

    # ---- the tick --------------------------------------------------------------------------------
    def __call__(self, k: int, deadline: float) -> None:
        st, n, clock = self.state, self.state.ints, self.clock
        t0 = clock()
        if st.ready.acquire(False):  # 1. the swap
            pending = int(n[I.PENDING])
            if pending >= 0:
                n[I.INDEX] = n[I.EXECUTED] - n[I.PENDING_EXEC]
                n[I.ACTIVE], n[I.ACTIVE_ID] = pending, n[I.PENDING_ID]
            else:
                n[I.REREQUESTS] += 1
            n[I.IN_FLIGHT] = 0
        stale = self._joint_state(t0)  # 2.
        active, index, stopping = int(n[I.ACTIVE]), int(n[I.INDEX]), bool(n[I.STOPPING])
        # 3. before action s is sent: the observation shows the arm after action s - 1
        if not n[I.IN_FLIGHT] and not stopping and not stale and (active < 0 or index >= self.s):
            n[I.SNAP_TICK], n[I.SNAP_EXECUTED] = k, n[I.EXECUTED]
            n[I.SNAP_ACTIVE], n[I.SNAP_INDEX] = active, index
            n[I.IN_FLIGHT] = 1
            st.req.release()
        mode, fault = RUN, 0
        last = st.last
        if stale:  # 4.
            target, mode, fault = last, HOLD_STALE, 1
            n[I.STALE_TICKS] += 1
        elif active >= 0 and index < self.h and not stopping:
            target = st.buf[active, index]
            n[I.INDEX] = index + 1
            n[I.EXECUTED] += 1
        else:
            target = last
            if active < 0:
                mode = HOLD_START
                n[I.START_HOLDS] += 1
            else:
                mode = UNDERRUN
                n[I.UNDERRUNS] += 1
        sp = self.sp  # 5.
        np.isfinite(target, out=self._finite)
        if self._finite.all():
            np.clip(target, self.lo, self.hi, out=sp)
            if (sp != target).any():
                n[I.LIMIT_CLAMPED] += 1
            np.subtract(last, self.max_step, out=self._lo_step)
            np.add(last, self.max_step, out=self._hi_step)
            if (sp < self._lo_step).any() or (sp > self._hi_step).any():
                n[I.STEP_CLAMPED] += 1
                np.clip(sp, self._lo_step, self._hi_step, out=sp)
        else:  # NaN or inf never reaches a motor: hold, and count a fault
            sp[...] = last
            n[I.NAN_SETPOINTS] += 1
            fault = 1
        if fault:
            n[I.FAULTS] += 1
            n[I.FAULT_STREAK] += 1
            if n[I.FAULT_STREAK] > n[I.MAX_FAULT_STREAK]:
                n[I.MAX_FAULT_STREAK] = n[I.FAULT_STREAK]
            if self.max_fault and n[I.FAULT_STREAK] >= self.max_fault:
                n[I.FAULT_STOP] = 1
        else:
            n[I.FAULT_STREAK] = 0
        t1 = clock()
        self.bus.send_setpoint(sp)  # 6.
        t2 = clock()
        last[...] = sp
        n[I.TICKS] += 1
        ring = st.ticks_ring  # 7.
        row = ring.row()
        row[0], row[1], row[2], row[4] = k, deadline, t0, mode
        row[5], row[6], row[7], row[8] = n[I.ACTIVE_ID], n[I.INDEX] - 1, fault, t2 - t1
        row[9:] = sp
        self.last_end = row[3] = clock()
        ring.commit()

    def _joint_state(self, now: float) -> bool:
        """Publish the bus's newest telemetry (when it is new) and say whether any joint's value is
        older than stale_s (``Telemetry.measured_at``: when the bus measured each joint; a silent
        servo keeps its last good value and its old time)."""
        tel = self.bus.latest_telemetry()
        if tel is not None and tel is not self._last_tel:
            self._last_tel = tel
            self.fresh_at[...] = tel.measured_at
            n = self.state.ints
            if self.state.telemetry.write(tel):
                n[I.TEL_PUBLISHED] += 1
            else:
                n[I.TEL_SKIPPED] += 1
        np.subtract(now, self.fresh_at, out=self._age)
        np.greater(self._age, self.stale_s, out=self._stale)
        if self._stale.any():
            sc = self.state.stale_count
            np.add(sc, self._stale, out=sc)
            return True
        return False


class SpinSleeper:
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


def set_fifo(priority: int) -> int:
    """Make the calling thread SCHED_FIFO at ``priority`` (threads it starts afterwards inherit
    it); returns the priority, or 0 where that is not permitted (no root or CAP_SYS_NICE)."""
    if priority <= 0:
        return 0
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return priority
    except (AttributeError, OSError):
        return 0


def scheduling() -> tuple[str, int]:
    """The calling thread's scheduling class and priority, as the kernel reports them."""
    try:
        pol = os.sched_getscheduler(0)
        prio = os.sched_getparam(0).sched_priority
    except (AttributeError, OSError):
        return "unknown", 0
    names = {getattr(os, n): n for n in ("SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH", "SCHED_IDLE")
             if hasattr(os, n)}  # fmt: skip
    return names.get(pol, str(pol)), int(prio)


MCL_CURRENT, MCL_FUTURE = 1, 2  # <sys/mman.h> on Linux (x86-64 and aarch64)


def lock_memory() -> bool:
    """mlockall(MCL_CURRENT | MCL_FUTURE): the clock process never waits for a page fault to disk.
    False where it is not permitted (RLIMIT_MEMLOCK without CAP_IPC_LOCK) or not Linux."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        return libc.mlockall(MCL_CURRENT | MCL_FUTURE) == 0
    except (OSError, AttributeError):
        return False


CPU_DMA_LATENCY = "/dev/cpu_dma_latency"  # Linux PM QoS: the CPUs' wake-up latency limit


def hold_wake_latency(us: int, path: str = CPU_DMA_LATENCY) -> int | None:
    """Ask the kernel to keep every CPU's wake-up latency <= ``us`` microseconds (Linux PM QoS,
    what cyclictest does): an idle CPU then stays in a shallow idle state (0: polling) instead of
    one it takes hundreds of microseconds to leave, which is when a clock that sleeps wakes late.
    The request holds while the returned descriptor is open (close it, or exit, to release it);
    None where it is not permitted (the file is root's) or does not exist."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError:
        return None
    try:
        os.write(fd, struct.pack("=i", int(us)))  # the kernel reads a native s32
    except OSError:
        os.close(fd)
        return None
    return fd


def freeze_heap() -> int:
    """Collect, then move every object alive now into the cyclic GC's permanent generation
    (``gc.freeze``): a later full collection in the clock's process then walks only what was made
    since, not the ~28,000 objects of its imports and bus (3-5 ms with the GIL held, measured in a
    process with the same imports: a late tick).
    Call it once, after start-up. Returns the number of objects frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()

"""Where the bus lives: the control clock and the setpoint stream, in a process of their own.

Why a process (docs/runtime.md, "The clock in its own process"): with the clock as a thread of
the inference process, the clock needs that process's GIL, and the GIL is held by whichever
thread a competing process just preempted (priority inversion): 3.3 ms p99 period error at 50 Hz
with four CPU-bound processes on two cores. In its own process the clock shares a GIL only with
the bus's threads, runs SCHED_FIFO with its memory locked, and the worker's Python never delays it.

:class:`ClockHost` holds the bus (built from its BusSpec), runs :class:`edge.clock.ClockTick` in
a ``PeriodicThread`` on the shared state, and publishes telemetry and bus health into it (between
ticks; the tick publishes the telemetry it read itself). It lives in the clock process
(:func:`clock_main`, started by :class:`ClockProcess` with the spawn method, never fork: the
parent has threads and onnxruntime) for the whole session: episodes reset through commands to it.
The thread mode (``LocalClock``: a ClockHost in the caller's process) is what tests drive and
what the benchmark compares against.

Both sides offer the same calls (the session and the sources use them as the bus):
``open()``, ``start_loop(cfg, hold)``, ``stop_loop() -> final counters``, ``send_setpoint(q)``
(between runs), ``latest_telemetry()``, ``health()``, ``scheduling``, ``close()``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edge.clock import (
    ClockTick,
    SpinSleeper,
    freeze_heap,
    hold_wake_latency,
    lock_memory,
    scheduling,
    set_fifo,
)
from edge.loopstate import I, Layout, LoopState
from firmware_bridge.streamer import PeriodicThread

HEALTH_EVERY_S = 0.05  # bus health published this often (connected, reconnects, counters)
IDLE_TEL_EVERY_S = 0.002  # telemetry published this often while no loop runs
OPEN_TIMEOUT_S = 60.0  # the clock process imports, opens the port, handshakes


class ClockHost:
    """The bus, the clock thread and the publisher, on ``state``. ``bus``: a MotorBus, not started."""

    def __init__(self, state: LoopState, bus: Any, *, clock: Callable[[], float] = time.monotonic,
                 rt_priority: int = 50) -> None:  # fmt: skip
        self.state, self.bus, self.clock = state, bus, clock
        self.rt_priority = rt_priority
        self.scheduling: dict[str, Any] = {"clock": "thread", "policy": "SCHED_OTHER", "priority": 0,
                                           "memory_locked": False, "wake_latency_us": None}  # fmt: skip
        self._tick: ClockTick | None = None
        self._thread: PeriodicThread | None = None
        self._sleeper: SpinSleeper | None = None
        self._closed = threading.Event()
        self._lock = threading.Lock()  # commands vs the publisher's health() (never the tick)
        self._pub = threading.Thread(target=self._publish, name="legato-publish", daemon=True)
        self._old_switch: float | None = None

    # ---- lifecycle -------------------------------------------------------------------------------
    def open(self) -> None:
        """Start the bus (handshake, torque) and the publisher."""
        self.bus.start()
        self._pub.start()

    def start_loop(self, cfg: Any, hold: np.ndarray) -> None:
        if self._thread is not None:
            raise RuntimeError("the loop is already running")  # internal invariant
        tick = ClockTick(self.state, cfg, self.bus, self.clock)
        tick.reset(hold)
        self._tick = tick
        if cfg.switch_interval_s is not None:
            self._old_switch = sys.getswitchinterval()
            sys.setswitchinterval(cfg.switch_interval_s)
        prio = cfg.rt_priority if self.rt_priority else 0
        first = [True]

        def run(k: int, deadline: float) -> None:
            if first[0]:  # once, in the clock thread itself: above the bus's threads
                first[0] = False
                set_fifo(prio)
                pol, p = scheduling()
                self.scheduling.update(policy=pol, priority=p)
            tick(k, deadline)

        self._sleeper = SpinSleeper(cfg.spin_s, self.clock)
        self._thread = PeriodicThread(cfg.rate_hz, run, clock=self.clock, sleep=self._sleeper,
                                      name="legato-clock")  # fmt: skip
        self.state.ints[I.RUNNING] = 1
        self._thread.start()

    def stop_loop(self) -> dict[str, Any]:
        """Stop the clock, then send the hold (the last safe setpoint); the final counters."""
        st = self.state
        st.ints[I.STOPPING] = 1
        thread, sleeper = self._thread, self._sleeper
        if thread is not None and sleeper is not None:
            sleeper.stop.set()
            thread.stop()
            st.ints[I.MISSED_TICKS], st.ints[I.TICK_ERRORS] = thread.overruns, thread.tick_errors
        self.bus.send_setpoint(st.last)
        st.ints[I.RUNNING] = 0
        self._thread = self._sleeper = None
        if self._old_switch is not None:
            sys.setswitchinterval(self._old_switch)
            self._old_switch = None
        return self.final()

    def final(self) -> dict[str, Any]:
        st = self.state
        out: dict[str, Any] = {slot.name.lower(): int(st.ints[slot]) for slot in I}
        out["last"] = st.last.copy()
        out["stale_joints"] = [int(x) for x in st.stale_count]
        out["scheduling"] = dict(self.scheduling)
        return out

    @property
    def alive(self) -> bool:
        """False once the host is closed (a clock process that died says so too)."""
        return not self._closed.is_set()

    def send_setpoint(self, q: np.ndarray) -> None:
        with self._lock:
            self.bus.send_setpoint(np.asarray(q, np.float32))

    def latest_telemetry(self) -> Any:
        return self.state.telemetry.read()

    def health(self) -> Any:
        with self._lock:
            return self.bus.health()

    def close(self) -> None:
        """Stop the loop if it runs (the hold is sent), then close the bus (torque off). Never raises."""
        self._closed.set()
        try:
            if self._thread is not None:
                self.stop_loop()
        finally:
            if self._pub.is_alive():
                self._pub.join(timeout=2.0)
            self.bus.close()
            self.state.health.write(self.bus.health())  # the counters as they ended, for the summary

    # ---- the publisher ---------------------------------------------------------------------------
    def _publish(self) -> None:
        """Telemetry while no loop runs (the tick publishes its own while it does); bus health every
        HEALTH_EVERY_S, while a loop runs just after a tick (the most time until the next one)."""
        st, last_tel, next_health = self.state, None, 0.0
        while not self._closed.wait(IDLE_TEL_EVERY_S):
            thread, tick = self._thread, self._tick
            running = thread is not None
            if not running:
                tel = self.bus.latest_telemetry()
                if tel is not None and tel is not last_tel and st.telemetry.write(tel):
                    last_tel = tel
            else:
                st.ints[I.MISSED_TICKS] = thread.overruns
            now = self.clock()
            if now < next_health:
                continue
            if running and tick is not None and now - tick.last_end > 0.25 * thread.period:
                continue  # wait for the next tick to finish
            with self._lock:
                health = self.bus.health()
            st.health.write(health)
            next_health = now + HEALTH_EVERY_S


LocalClock = ClockHost  # the thread mode: the host in the caller's process


class ClockGone(RuntimeError):
    """The clock process ended or stopped answering (it closes its bus on the way out)."""


# ---- the clock process ---------------------------------------------------------------------------
PR_SET_PDEATHSIG = 1
COMMANDS = ("start_loop", "stop_loop", "send_setpoint", "health")


def _die_with_parent() -> None:
    """Linux: SIGTERM when the parent dies (the bus then closes: torque off or the hold)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(name).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class TermFlag:
    """Set by SIGTERM. The handler only stores a bool: a lock in a signal handler (threading.Event.set
    takes one) deadlocks when a second SIGTERM lands while the first handler holds it (the parent's
    terminate and its death signal in quick succession did: an orphaned clock process ticking at
    SCHED_FIFO with the port held, found after a failed start in CI's robot install)."""

    def __init__(self) -> None:
        self.set_ = False

    def install(self) -> TermFlag:
        signal.signal(signal.SIGTERM, self._on_term)
        return self

    def _on_term(self, signum: int, frame: Any) -> None:
        self.set_ = True

    def is_set(self) -> bool:
        return self.set_


def clock_main(handle: Any, spec: Any, conn: Any, rt_priority: int, lock_mem: bool,
               wake_latency_us: int | None = None) -> None:  # fmt: skip
    """The clock process: SCHED_FIFO (one below the clock thread's, for the bus's threads, which
    inherit it), memory locked, the CPUs' wake-up latency held to ``wake_latency_us`` (None: left
    alone) while it lives, the bus opened, then commands from ``conn`` until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    stop = TermFlag().install()
    _die_with_parent()
    set_fifo(max(0, rt_priority - 1))
    locked = lock_memory() if lock_mem else False
    qos = hold_wake_latency(wake_latency_us) if wake_latency_us is not None else None
    state = LoopState.attach(handle)
    host: ClockHost | None = None
    try:
        host = ClockHost(state, spec.open(), rt_priority=rt_priority)
        host.scheduling.update(clock="process", memory_locked=locked,
                               wake_latency_us=wake_latency_us if qos is not None else None)  # fmt: skip
        host.open()
        host.scheduling["gc_frozen"] = freeze_heap()  # started: what lives now lives for the session
    except BaseException as e:  # handed to the parent, which raises it
        conn.send(("error", e))
        if host is not None:
            host.close()
        _release(qos)
        return
    conn.send(("ok", None))
    try:
        while not stop.is_set():
            if not conn.poll(0.1):
                continue
            try:
                cmd, *args = conn.recv()
            except EOFError:  # the parent is gone
                break
            if cmd == "close":
                break
            try:
                if cmd not in COMMANDS:
                    raise ValueError(f"unknown clock command {cmd!r}")  # internal invariant
                reply = getattr(host, cmd)(*args)
            except Exception as e:
                conn.send(("error", e))
            else:
                conn.send(("ok", reply))
    finally:
        host.close()
        _release(qos)
        with contextlib.suppress(OSError, ValueError):
            conn.send(("ok", None))


def _release(fd: int | None) -> None:
    """Close the PM QoS request (the kernel drops it with the descriptor)."""
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


# The clock process's numpy runs single-threaded: a BLAS worker thread there would be SCHED_OTHER,
# and a SCHED_FIFO bus thread waiting on it (holding the GIL the clock needs) would wait for as
# long as the inference process keeps that CPU (priority inversion). Read by OpenBLAS, OpenMP and
# MKL when the spawned child loads them.
CLOCK_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Any:
    """os.environ with ``values`` set while the block runs (a spawned child copies it), then as it was."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _main_module_hidden() -> Any:
    """Start a spawned child without it importing the parent's ``__main__`` (spawn re-imports it
    by path or name): the clock process needs only this module and the bus, a script without a
    ``__main__`` guard must not run twice, and a parent reading its program from stdin has no
    path to import. Nothing the child is handed lives in ``__main__``."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    missing = object()
    saved = main.__dict__.get("__file__", missing), main.__dict__.get("__spec__", missing)
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        for key, value in zip(("__file__", "__spec__"), saved, strict=True):
            if value is missing:
                main.__dict__.pop(key, None)
            else:
                main.__dict__[key] = value


class ClockProcess:
    """The clock process seen from the session: ClockHost's calls, sent over a pipe; telemetry and
    health read from the shared state. ``spec``: the bus's BusSpec (built in the child)."""

    def __init__(self, layout: Layout, spec: Any, *, rt_priority: int = 50, lock_mem: bool = True,
                 wake_latency_us: int | None = None) -> None:  # fmt: skip
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # never fork: the parent has threads and native runtimes
        self.state = LoopState.shared(layout, ctx)
        self._conn, child = ctx.Pipe()
        args = (self.state.handle(), spec, child, rt_priority, lock_mem, wake_latency_us)
        self._proc = ctx.Process(target=clock_main, args=args, name="legato-clock", daemon=True)
        self._child_conn = child
        self._lock = threading.Lock()
        self._closed = self._started = False
        self.scheduling: dict[str, Any] = {"clock": "process"}

    def open(self) -> None:
        self._started = True
        with _main_module_hidden(), _environment(CLOCK_ENV):
            self._proc.start()
        self._child_conn.close()
        self._reply(OPEN_TIMEOUT_S, "starting the bus")

    def _reply(self, timeout_s: float, what: str) -> Any:
        try:
            if not self._conn.poll(timeout_s):
                raise ClockGone(f"the clock process did not answer within {timeout_s:g} s ({what})")
            status, value = self._conn.recv()
        except (EOFError, OSError) as e:
            raise ClockGone(f"the clock process ended ({what}: {type(e).__name__})") from None
        if status == "error":
            raise value
        return value

    @property
    def alive(self) -> bool:
        return self._started and not self._closed and self._proc.is_alive()

    def _call(self, cmd: str, *args: Any, timeout_s: float = 10.0) -> Any:
        with self._lock:
            if not self.alive:
                raise ClockGone(f"the clock process is not running ({cmd}; exit code {self._proc.exitcode})")
            try:
                self._conn.send((cmd, *args))
            except (OSError, ValueError) as e:
                raise ClockGone(f"the clock process is not running ({cmd}: {e})") from None
            return self._reply(timeout_s, cmd)

    def start_loop(self, cfg: Any, hold: np.ndarray) -> None:
        self._call("start_loop", cfg, np.asarray(hold, np.float32))

    def stop_loop(self) -> dict[str, Any]:
        """The final counters; from the shared state when the clock process is gone (it sent the
        hold and closed the bus on its way out: SIGTERM, or its parent's death)."""
        try:
            final = self._call("stop_loop")
        except ClockGone:
            st = self.state
            final = {slot.name.lower(): int(st.ints[slot]) for slot in I}
            final.update(last=st.last.copy(), stale_joints=[int(x) for x in st.stale_count],
                         scheduling={**self.scheduling, "ended": "clock process gone"})  # fmt: skip
        self.scheduling = final["scheduling"]
        return final

    def send_setpoint(self, q: np.ndarray) -> None:
        self._call("send_setpoint", np.asarray(q, np.float32))

    def latest_telemetry(self) -> Any:
        return self.state.telemetry.read()

    def health(self) -> Any:
        """The bus's health as the clock process last published it (a BusHealth subclass)."""
        h = self.state.health.read()
        return h if h is not None else self._call("health")

    def close(self) -> None:
        """Stop the loop, close the bus (in the child), end the process. Never raises."""
        if self._closed:
            return
        if not self._started:
            self._closed = True
            return
        try:
            if self._proc.is_alive():
                with self._lock:
                    self._conn.send(("close",))
                    self._conn.poll(10.0)
        except (OSError, ValueError):
            pass
        finally:
            self._closed = True
            self._proc.join(timeout=10.0)
            if self._proc.is_alive():  # it did not close in time: SIGTERM closes the bus there
                self._proc.terminate()
                self._proc.join(timeout=5.0)
            self._conn.close()

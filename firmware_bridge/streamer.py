"""A periodic thread on absolute monotonic deadlines (the setpoint stream's clock).

Why a thread: the edge loop hands over a target and must not wait on the port; the stream has to
keep the controller's watchdog fed even while the edge loop is busy (inference holds the GIL in
bursts). Tick ``k`` is due at ``start + k * period``: the schedule never drifts with the tick's
own duration. A tick that starts more than one period late skips the missed slots (counted in
``overruns``) instead of sending a burst, since a burst of stale setpoints is worse than a gap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class PeriodicThread:
    """Calls ``tick(k, deadline)`` every ``1 / rate_hz`` seconds until ``stop()``.

    ``clock`` and ``sleep`` are injectable for tests; ``sleep(seconds)`` may return early (the
    default wakes on ``stop()``), the loop re-checks the clock.
    """

    def __init__(
        self,
        rate_hz: float,
        tick: Callable[[int, float], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        name: str = "fw-stream",
    ) -> None:
        if not rate_hz > 0:
            raise ValueError(f"rate_hz must be > 0, got {rate_hz!r}")
        self.period = 1.0 / rate_hz
        self._tick = tick
        self._clock = clock
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._resync = False
        self._thread: threading.Thread | None = None
        self._name = name
        self.ticks = 0
        self.overruns = 0
        self.tick_errors = 0
        self.cpu_s = 0.0  # thread CPU time (time.thread_time) spent by this thread so far

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self.run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop and join; idempotent."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                log.error("%s: tick did not return within 5 s", self._name)

    def resync(self) -> None:
        """Restart the schedule from now without counting overruns (after a deliberate long tick)."""
        self._resync = True

    def run(self) -> None:
        """The loop; ``start()`` runs it in a thread, a test may call it directly."""
        cpu0 = time.thread_time()
        start = self._clock()
        k = 0
        while not self._stop.is_set():
            deadline = start + k * self.period
            now = self._clock()
            if now < deadline:
                self._sleep(deadline - now)
                continue  # re-check the clock and the stop flag: sleep may return early
            try:
                self._tick(k, deadline)
            except Exception:  # keep streaming: a silent stream would trip the watchdog anyway
                self.tick_errors += 1
                log.exception("%s: tick %d failed", self._name, k)
            self.ticks += 1
            k += 1
            now = self._clock()
            if self._resync:
                self._resync = False
                start, k = now, 0
                continue
            late_slots = int((now - start) / self.period) - k
            if late_slots >= 1:
                self.overruns += late_slots
                k += late_slots
            self.cpu_s = time.thread_time() - cpu0
        self.cpu_s = time.thread_time() - cpu0

"""A deterministic harness for the loop: the clock's tick and the inference worker on one injected
clock, in one thread. Chunk ``cid`` takes ``latency(cid)`` periods from its request: the clock
ticks on while the worker computes (the ticks run inside the denoiser call), so a test knows
exactly when each chunk is posted and what every tick does. Production runs the same ClockTick
and InferenceWorker, in two threads or two processes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from rt_graphs import fake_denoiser

from edge.clock import ClockTick
from edge.loop import LoopConfig
from edge.loopstate import I, Layout, LoopState
from edge.sources import Frame
from edge.worker import InferenceWorker
from firmware_bridge.interface import Telemetry


class FakeBus:
    """Records setpoints; reports telemetry measured now (``silent``: frozen since it went
    silent, i.e. stale; ``stale_joint``: that joint marked stale by the bus, as a silent servo)."""

    def __init__(self, clock: Callable[[], float], a: int = 3) -> None:
        self.clock, self.a = clock, a
        self.sent: list[np.ndarray] = []
        self.record = True  # False: keep nothing (a memory test measures the tick, not this list)
        self.silent = False
        self.stale_joint: int | None = None
        self._tel: Telemetry | None = None

    def send_setpoint(self, positions):
        if self.record:
            self.sent.append(np.array(positions, np.float32))

    def latest_telemetry(self):
        now = self.clock()
        if self._tel is None or not self.silent:
            meas = np.full(self.a, now)
            stale = None
            if self.stale_joint is not None:  # as a servo bus: its last good value, and its time
                stale = np.zeros(self.a, bool)
                stale[self.stale_joint] = True
                if self._tel is not None:
                    meas[self.stale_joint] = self._tel.measured_at[self.stale_joint]
            z = np.zeros(self.a, np.float32)
            self._tel = Telemetry(
                positions=z,
                velocities=z,
                efforts=z,
                measured_at=meas,
                received_at=now,
                sent_at=None,
                torque_enabled=True,
                holding=False,
                faults=0,
                stale=stale,
            )
        return self._tel


class StaticSource:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.image = np.full((8, 8, 3), 100, np.uint8)
        self.tokens = np.array([2, 3, 0, 0])
        self.state = np.zeros(6, np.float32)

    def read(self):
        return Frame(self.image, self.tokens, self.state, self.clock())


class TimedDenoiser:
    """The real ChunkDenoiser (fake graphs), taking ``latency(cid)`` clock ticks per chunk, with an
    optional ``fault(cid, chunk)`` hook (a test's NaN, a ChunkUnavailable)."""

    def __init__(self, den, harness: Harness) -> None:
        self.den, self.harness = den, harness
        self.spec, self.stage_names, self.mode = den.spec, den.stage_names, den.mode
        self.noise_shape = den.noise_shape
        self.calls = 0
        self.requests: list = []
        self.record = True

    @property
    def stage_ns(self):
        return self.den.stage_ns

    def set_observation(self, *a):
        self.den.set_observation(*a)

    def denoise(self, eps, tail, req):
        cid = self.calls
        self.calls += 1
        if self.record:
            self.requests.append(req)
        chunk = self.den.denoise(eps, tail, req)
        self.harness.compute(self.harness.latency(cid))  # time passes while the worker computes
        if self.harness.fault is not None:
            self.harness.fault(cid, chunk)
        return chunk


class Harness:
    def __init__(self, rate: float = 100.0, max_step: float = 0.05, s: int = 8, pad: float = 0.0,
                 latency: Callable[[int], int] = lambda cid: 1, **kw) -> None:  # fmt: skip
        self.t = 0.0
        self.k = -1
        den = fake_denoiser()
        sp = den.spec
        self.cfg = LoopConfig(rate_hz=rate, execution_horizon=s, d_max=4, latency_window=5,
                              q_min=(-1.0,) * 3, q_max=(1.0,) * 3, max_step=(max_step,) * 3,
                              latency_pad_s=pad, **kw)  # fmt: skip
        self.latency = latency
        self.fault: Callable | None = None
        self.state = LoopState.local(Layout(sp.horizon, sp.action_dim))
        self.bus = FakeBus(self.clock)
        self.den = TimedDenoiser(den, self)
        self.tick = ClockTick(self.state, self.cfg, self.bus, self.clock)
        src = StaticSource(self.clock)
        self.worker = InferenceWorker(self.state, self.cfg, self.den, src, clock=self.clock, sleep=self.wait)
        self._busy = False

    def clock(self) -> float:
        return self.t

    @property
    def ints(self):
        return self.state.ints

    def start(self, hold=None) -> None:
        st = self.state
        st.drain_signals()
        st.ints[I.PENDING] = -1
        self.tick.reset(np.zeros(3, np.float32) if hold is None else hold)

    def run_ticks(self, n: int) -> None:
        """n ticks, each on its deadline; a request they make is served (unless the worker is busy)."""
        for _ in range(n):
            self.k += 1
            self.t = self.k * self.cfg.period
            self.tick(self.k, self.t)
            if not self._busy:
                self._busy = True
                try:
                    while self.state.req.acquire(False):
                        self.worker.one_chunk()
                finally:
                    self._busy = False

    def compute(self, ticks: int) -> None:
        """Inference that takes just under ``ticks`` periods from the request tick: the ticks in
        between run meanwhile, and the chunk is ready just before the next one (latency ticks x
        period: the delay estimate is exactly ``ticks``)."""
        if ticks <= 0:
            return
        self.run_ticks(ticks - 1)
        self.t = (self.k + 1) * self.cfg.period - 1e-6

    def wait(self, dt: float) -> None:
        """The worker waits (latency padding): the ticks due meanwhile run."""
        end = self.t + dt
        while (self.k + 1) * self.cfg.period <= end + 1e-12:
            self.run_ticks(1)
        self.t = max(self.t, end)

    def rows(self) -> np.ndarray:
        return self.state.ticks_ring.drain()

    def sent(self) -> np.ndarray:
        return np.array(self.bus.sent)

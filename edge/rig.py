"""The one rig builder: the motor bus and the loop's limits from the device profile, for a robot's
``--port`` and for ``--sim`` alike.

Everything the motors see comes from the profile (``[robot]``, ``[serial]``, ``[control]``):
- joint limits q_min / q_max (the loop clamps every setpoint to them, the bus and the
  controller clamp again), the speed cap (max_velocity) and the step limit per control tick
  (max_step, else max_velocity / rate_hz; the firmware controller gets it as its own per-tick
  step limit: it ticks at least as fast as the loop, so it never binds first, and it still stops
  a host gone wrong from jumping further per tick);
- the bus period (``[serial] stream_hz``, else the control rate), the watchdog, the servo ids and
  the calibration (a LeRobot JSON, ``[robot] calibration``);
- the ramp (``[control] ramp``, unless ``--ramp``), stale_ms and max_fault_ticks.
``--sim`` first writes the simulator's arm and device into the same fields (edge/simrig.py), so
what the sim tests exercise is what a robot runs. A bundle whose joint count or action range does
not fit the robot is refused in one line (:func:`check_fits`).

Order (edge/cli.py): everything is checked and built first; :meth:`Rig.start` is the first thing
that talks to the motors (handshake, torque), and it waits for the first telemetry with a deadline.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from edge.errors import BundleError, MethodError, ProfileError, UsageError
from edge.loop import LoopConfig
from edge.profiles import Profile, robot_calibration

TELEMETRY_WAIT_S = 3.0  # a freshly started controller needs a moment before its first frame


@dataclass(frozen=True)
class BusSpec:
    """How to build the bus: ``firmware_bridge.factory.open_bus(kind, **settings)``; picklable, so
    a child process can build it."""

    kind: str  # firmware | feetech | dynamixel
    settings: dict[str, Any]  # open_bus keyword arguments

    def open(self) -> Any:
        from firmware_bridge.factory import open_bus

        return open_bus(self.kind, **self.settings)


def stream_hz(prof: Profile) -> float:
    """The bus's setpoint stream rate: ``[serial] stream_hz``, else the control rate."""
    return float(prof.serial.stream_hz or prof.control.rate_hz)


def bus_spec(prof: Profile) -> BusSpec:
    """The bus the profile describes, on ``[serial] port``, with the robot's limits."""
    from firmware_bridge.config import JointLimits

    r, s = prof.robot, prof.serial
    rate = float(prof.control.rate_hz)
    limits = JointLimits(r.q_min, r.q_max, r.velocity(rate), r.step_per_tick(rate))
    hz = stream_hz(prof)
    if s.protocol == "firmware":
        return BusSpec("firmware", {"port": s.port, "limits": limits, "baudrate": s.baud,
                                    "watchdog_ms": s.watchdog_ms, "rate_hz": hz,
                                    "telemetry_hz": int(min(250.0, hz))})  # fmt: skip
    from firmware_bridge.calibration import Calibration

    cal = robot_calibration(prof) or Calibration.centered(tuple(s.ids))
    lo, hi = cal.limits()
    for j, name in enumerate(r.joints):
        if r.q_min[j] < lo[j] - 1e-6 or r.q_max[j] > hi[j] + 1e-6:
            src = f"calibration {r.calibration}" if r.calibration else "no calibration (half a turn each way)"
            raise ProfileError(f"{prof.path}: joint {name!r} limits [{r.q_min[j]:g}, {r.q_max[j]:g}] rad "
                               f"reach beyond what servo {s.ids[j]} reaches with {src}: "
                               f"[{lo[j]:.3f}, {hi[j]:.3f}] rad (fix [robot] q_min/q_max or the "
                               "calibration)")  # fmt: skip
    settings = {"port": s.port, "ids": tuple(s.ids), "baudrate": s.baud, "period_s": 1.0 / hz,
                "calibration": cal, "limits": limits, "watchdog_ms": s.watchdog_ms}  # fmt: skip
    if s.setup_timeout_ms is not None:
        settings["setup_timeout_s"] = s.setup_timeout_ms / 1000.0
    return BusSpec(s.protocol, settings)


def action_range(man: Any) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The joint range the model's actions span, where the manifest records it: the training
    task's arm limits (the simulator clamps every demonstrated action to them); None otherwise."""
    task = man.data.get("model", {}).get("task")
    arm = task.get("arm") if isinstance(task, dict) else None
    if not isinstance(arm, dict) or "q_min" not in arm or "q_max" not in arm:
        return None
    a = man.spec.action_dim
    return tuple(float(x) for x in arm["q_min"][:a]), tuple(float(x) for x in arm["q_max"][:a])


def check_fits(man: Any, prof: Profile) -> None:
    """Refuse a bundle whose joint count or action range does not fit the robot of the profile."""
    r, a = prof.robot, man.spec.action_dim
    src = f"bundle {man.path}"
    if a != r.n_joints:
        raise BundleError(f"{src} commands {a} joints; profile {prof.name}'s [robot] has {r.n_joints} "
                          f"({', '.join(r.joints)}): the model was trained for another arm")  # fmt: skip
    rng = action_range(man)
    if rng is None:
        return
    for j, name in enumerate(r.joints):
        lo, hi = rng[0][j], rng[1][j]
        if lo < r.q_min[j] - 1e-6 or hi > r.q_max[j] + 1e-6:
            raise BundleError(f"{src}: the model's actions for joint {name!r} span [{lo:g}, {hi:g}] rad "
                              f"(its training arm), beyond the robot's [{r.q_min[j]:g}, {r.q_max[j]:g}] "
                              f"(profile {prof.name} [robot]): they would be clamped, not "
                              "controlled")  # fmt: skip


def loop_config(man: Any, prof: Profile, latency_ms: float, ramp: int | None, max_step: float | None,
                seed: int) -> LoopConfig:  # fmt: skip
    """The loop's settings from the profile; ``ramp`` and ``max_step`` override the profile's."""
    c, r, spec = prof.control, prof.robot, man.spec
    rate = float(c.rate_hz)
    ramp = c.ramp if ramp is None else ramp
    if ramp > spec.r_max:
        raise MethodError(f"ramp r={ramp} is beyond the r_max={spec.r_max} bundle {man.path} was trained "
                          f"with (profile {prof.name} [control] ramp, or --ramp)")  # fmt: skip
    step = r.step_per_tick(rate) if max_step is None else (max_step,) * r.n_joints
    return LoopConfig(rate_hz=rate, execution_horizon=c.execution_horizon, d_max=c.d_max,
                      latency_window=c.latency_window, q_min=r.q_min, q_max=r.q_max, max_step=step,
                      ramp=ramp, latency_pad_s=latency_ms / 1000.0, seed=seed,
                      stale_s=r.stale_ms / 1000.0, max_fault_ticks=r.max_fault_ticks)  # fmt: skip


class Rig:
    """The bus built from the profile (not yet started), the camera and, with --sim, the simulated
    device on the other end of the bus's port (edge/simrig.py). The bus lives where the control
    clock runs: in the clock process (``clock="process"``, edge/clockproc.py: the bus is built
    there from ``spec``) or in this one (``"thread"``); ``rig.bus`` is that side either way (the
    calls the session and the sources make: telemetry, health, a setpoint between runs).
    :meth:`start` talks to the motors; :meth:`close` always leaves them safe (the bus's close:
    torque off or the controller's hold)."""

    def __init__(self, prof: Profile, spec: BusSpec, layout: Any, sim: Any = None, bus: Any = None,
                 clock: str = "process") -> None:  # fmt: skip
        from edge.clockproc import ClockHost, ClockProcess
        from edge.loopstate import LoopState

        self.prof, self.spec, self.sim = prof, spec, sim
        self.camera: Any = None  # a robot's camera (edge.sources.OpenCVSource), closed with the rig
        self.started = False
        if clock == "process" and bus is None:
            us = prof.power.cpu_wake_latency_us
            self.clock: Any = ClockProcess(layout, spec, wake_latency_us=us if us >= 0 else None)
        elif clock in ("process", "thread"):  # a test may hand in its own bus: it runs here
            self.clock = ClockHost(LoopState.local(layout), spec.open() if bus is None else bus)
        else:
            raise ValueError(f"clock must be process or thread, got {clock!r}")  # internal invariant
        self.bus: Any = self.clock

    @property
    def plant(self) -> Any:
        return self.sim.plant if self.sim is not None else None

    def start(self, timeout_s: float = TELEMETRY_WAIT_S) -> Any:
        """Handshake and enable the motors; returns the first telemetry (waited for until the deadline)."""
        self.clock.open()
        self.started = True
        return self.first_telemetry(timeout_s)

    def first_telemetry(
        self, timeout_s: float = TELEMETRY_WAIT_S, measured_after: float | None = None
    ) -> Any:
        """The newest telemetry, waiting until ``timeout_s`` for the first frame; with
        ``measured_after`` (a host time: a reconnect), for one that measured every joint since then
        (the newest there is when none comes in time: the loop then holds on its stale state)."""
        end = time.monotonic() + timeout_s
        while True:
            tel = self.clock.latest_telemetry()
            fresh = tel is not None and (
                measured_after is None or float(tel.measured_at.min()) >= measured_after
            )
            if fresh or (tel is not None and time.monotonic() >= end):
                return tel
            if time.monotonic() >= end:
                raise UsageError(f"no telemetry from the motor controller on {self.prof.serial.port} within "
                                 f"{timeout_s:g} s: is it powered, and is this its port?")  # fmt: skip
            time.sleep(0.005)

    def confirm_hold(self, hold: Any, timeout_s: float = 2.0) -> bool | None:
        """--sim: True once the device's target equals ``hold`` (waiting up to ``timeout_s``); None
        on a robot (not observable)."""
        return self.sim.confirm_hold(hold, timeout_s) if self.sim is not None else None

    def close(self) -> None:
        """The bus first (the hold, torque off), then the camera and the simulated device."""
        try:
            self.clock.close()
        finally:
            if self.camera is not None:
                self.camera.close()
            if self.sim is not None:
                self.sim.close()


def build_rig(man: Any, prof: Profile, *, port: str | None = None, sim: Any = None,
              clock: str = "process") -> Rig:  # fmt: skip
    """The rig for ``--port PORT`` (the profile's bus on that port) or ``--sim`` (``sim``: a started
    SimRig, whose arm and device the profile's fields then describe). Checks that the bundle fits
    the robot; opens nothing (:meth:`Rig.start` does). ``clock``: process (production) or thread."""
    if (port is None) == (sim is None):
        raise ValueError("build_rig needs exactly one of port and sim")  # internal invariant
    if sim is not None:
        prof = sim.profile()
    else:
        prof = dataclasses.replace(prof, serial=dataclasses.replace(prof.serial, port=port))
    check_fits(man, prof)
    from edge.loopstate import Layout

    layout = Layout(man.spec.horizon, man.spec.action_dim)
    return Rig(prof, bus_spec(prof), layout, sim, clock=clock)

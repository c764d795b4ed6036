"""Assembly of the robot program: bundle + profile -> engines -> denoiser -> loop -> bus, and the
session that runs it (episodes in --sim, a timed run on a port), drains the record rings and
reports. Used by `legato run` and `legato profile` (edge/cli.py). No torch; sim/ only on --sim.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.denoiser import ChunkDenoiser, mode_for
from edge.engine import EngineOptions, open_engine
from edge.errors import BundleError, LegatoError, MethodError, UsageError
from edge.loop import CHUNK_BASE_COLS, TICK_COLS, ControlLoop, LoopConfig


class PortLost(LegatoError):
    """The serial port vanished and did not come back in time (motors left in the controller's hold)."""


def load(bundle: str, profile: str, mode: str | None = None,
         fused: bool = False) -> tuple[Any, Any, ChunkDenoiser]:  # fmt: skip
    """Verify the bundle, load the profile, check they agree, open the engines, build the denoiser."""
    from edge.bundle import verify
    from edge.profiles import load_profile

    man = verify(bundle)
    prof = load_profile(profile)
    spec, c = man.spec, prof.control
    src = f"bundle {bundle}"
    if c.num_steps != spec.num_steps:
        raise MethodError(f"profile {prof.name} asks for N={c.num_steps} steps but {src} was trained with "
                          f"N={spec.num_steps}")  # fmt: skip
    if c.horizon != spec.horizon:
        raise MethodError(f"profile {prof.name} asks for H={c.horizon} but {src} has H={spec.horizon}")
    if c.d_max > spec.d_max:
        raise MethodError(f"profile {prof.name} allows delays up to d_max={c.d_max} but {src} was trained "
                          f"for d_max={spec.d_max}")  # fmt: skip
    engines = {}
    graphs = ("prefix", "flow_head", "fused") if fused else ("prefix", "flow_head")
    if fused and "fused" not in man.graphs:
        raise BundleError(f"{src} has no fused graph (--fused needs one; legato export writes it)")
    for g in graphs:
        st = prof.engine(g)
        opts = EngineOptions(backend=st.backend, providers=tuple(st.providers),
                             intra_op_threads=st.intra_op_threads, inter_op_threads=st.inter_op_threads,
                             cuda_graph=st.cuda_graphs)  # fmt: skip
        if st.backend == "tensorrt":
            info = man.engines.get(g)
            if not info:
                raise BundleError(f"{src}: profile {prof.name} runs {g} on TensorRT but the bundle has no "
                                  "engine for it (build it on the device: legato flash)")  # fmt: skip
            engines[g] = open_engine(Path(man.path) / info["file"], opts, name=g, key=info.get("key"))
        else:
            engines[g] = open_engine(man.graph_path(g), opts, name=g)
    den = ChunkDenoiser(spec, man.norm, engines["prefix"], engines["flow_head"], mode=mode or mode_for(spec),
                        source=src, fused=engines.get("fused"))  # fmt: skip
    return man, prof, den


def loop_config(man: Any, prof: Any, latency_ms: float, ramp: int | None, max_step: float | None,
                seed: int) -> LoopConfig:  # fmt: skip
    arm = man.data["model"]["task"]["arm"]
    c = prof.control
    rate = float(c.rate_hz)
    # default max step per tick: twice what the motors can move at their speed limit
    step = max_step if max_step is not None else 2.0 * float(arm["vel_max"]) / rate
    a = man.spec.action_dim
    return LoopConfig(rate_hz=rate, execution_horizon=c.execution_horizon, d_max=c.d_max,
                      latency_window=c.latency_window, q_min=tuple(arm["q_min"][:a]),
                      q_max=tuple(arm["q_max"][:a]), max_step=(step,) * a, ramp=ramp,
                      latency_pad_s=latency_ms / 1000.0, seed=seed)  # fmt: skip


@dataclass
class Records:
    """Everything drained from the loop's rings over a session."""

    ticks: list[np.ndarray] = field(default_factory=list)
    chunks: list[np.ndarray] = field(default_factory=list)
    stage_names: tuple[str, ...] = ()
    dropped: int = 0

    def drain(self, loop: ControlLoop) -> None:
        self.ticks.append(loop.ticks_ring.drain())
        self.chunks.append(loop.chunk_ring.drain())
        self.stage_names = loop.stage_names
        self.dropped = loop.ticks_ring.dropped + loop.chunk_ring.dropped

    def tick_array(self) -> np.ndarray:
        return np.concatenate(self.ticks) if self.ticks else np.zeros((0, len(TICK_COLS)))

    def chunk_array(self) -> np.ndarray:
        n = len(CHUNK_BASE_COLS) + len(self.stage_names)
        return np.concatenate(self.chunks) if self.chunks else np.zeros((0, n))


class _FirmwareTarget:
    """The firmware emulator's core as the rig sees it: the target it commands (float rad)."""

    atol = 1e-5

    def __init__(self, emu: Any) -> None:
        self.emu, self.core = emu, emu.core

    def attach(self, motor: Any) -> None:
        self.core.motor = motor

    def hold_at(self, q0: np.ndarray) -> np.ndarray:  # emulator lock held
        self.core.commanded[...] = q0
        self.core.target[...] = q0
        return self.core.commanded.copy()

    def commanded(self) -> np.ndarray:
        return self.core.commanded


class _ServoTarget:
    """The emulated servos as the rig sees them: their goal position registers (rad, in ticks)."""

    def __init__(self, emu: Any) -> None:
        self.emu = emu
        self.atol = 0.5 * 2 * math.pi / emu.config.ticks_per_rev + 1e-6  # half a tick

    def attach(self, motor: Any) -> None:
        self.emu.motor = motor

    def hold_at(self, q0: np.ndarray) -> np.ndarray:  # emulator lock held
        return self.emu.set_goals_rad(q0)

    def commanded(self) -> np.ndarray:
        return self.emu.goals_rad()


def sim_calibration(kind: str, ids: tuple[int, ...], q_min: tuple[float, ...], q_max: tuple[float, ...],
                    ticks_per_rev: int = 4096) -> Any:  # fmt: skip
    """The calibration of the emulated servos under the sim arm: joint value = the sim's q.

    The emulated encoder reads ``q`` as ``tpr/2 + q / k`` (k = 2 pi / tpr). A homing offset of
    ``shift`` ticks (the middle of the joint's travel) puts the travel in the middle of one turn,
    so no reported position wraps (joint 0, [-0.35, 3.49] rad, would reach 4323 without it). The
    calibration's zero (the middle of range_min..range_max) is the tick where q = 0, so the range
    is symmetric about it and may be wider than the travel, even reach below 0; the joint limits
    come from the arm, not from this range."""
    from firmware_bridge.calibration import Calibration, MotorCalibration

    k = 2 * math.pi / ticks_per_rev
    motors = []
    for sid, lo, hi in zip(ids, q_min, q_max, strict=True):
        shift = int(round((lo + hi) / 2 / k))
        zero = ticks_per_rev // 2 - shift  # reported tick at q = 0
        half = int(math.ceil(max(abs(lo), abs(hi)) / k)) + 1
        # Feetech reports encoder - offset, Dynamixel encoder + offset
        homing = shift if kind == "feetech" else -shift
        motors.append(MotorCalibration(sid, homing, zero - half, zero + half))
    return Calibration(tuple(motors), ticks_per_rev)


class SimRig:
    """The simulated arm behind an emulated bus on a pty, and the host's bus on it. The profile's
    ``[serial] protocol`` chooses: "firmware" the emulated motor controller and the FirmwareBridge;
    "feetech" or "dynamixel" emulated servos (``ids``) and the ServoBus, through ``open_bus``, with
    a calibration that maps the sim arm's joint ranges (``sim_calibration``)."""

    def __init__(self, man: Any, prof: Any, episodes: int, seed: int, tick_hz: float = 400.0) -> None:
        from edge.simplant import SimPlant
        from firmware_bridge.bridge import FirmwareBridge
        from firmware_bridge.config import BridgeConfig, JointLimits, LinkConfig
        from firmware_bridge.factory import open_bus
        from sim.task import TaskConfig

        task = TaskConfig.from_dict(man.data["model"]["task"])
        self.task = task
        arm = task.arm
        n = arm.num_joints
        self.protocol = protocol = prof.serial.protocol
        self._dir = tempfile.TemporaryDirectory(prefix="legato-sim-")
        self.link_path = str(Path(self._dir.name) / "ttyLEGATO")
        # the controller rate-limits targets per tick; the runtime's own max step is the real limit
        limits = JointLimits(tuple(arm.q_min), tuple(arm.q_max), (arm.vel_max * 2,) * n, (1.0,) * n)
        stream = min(float(prof.serial.stream_hz or prof.control.rate_hz), tick_hz / 2)
        if protocol == "firmware":
            from firmware_bridge.emulator import EmulatedController, EmulatorConfig

            ecfg = EmulatorConfig(n_joints=n, tick_hz=tick_hz, telemetry_hz=200,
                                  watchdog_ms=prof.serial.watchdog_ms)  # fmt: skip
            self.emu: Any = EmulatedController(ecfg, link_path=self.link_path)
            self.ctl: _FirmwareTarget | _ServoTarget = _FirmwareTarget(self.emu)
            bcfg = BridgeConfig(limits, rate_hz=stream, watchdog_ms=prof.serial.watchdog_ms, telemetry_hz=200)
            # quick reconnects: the tests unplug the emulated link
            link = LinkConfig(self.link_path, reconnect_min_s=0.02, reconnect_max_s=0.2)
            make_bus: Callable[[], Any] = lambda: FirmwareBridge(bcfg, link)  # noqa: E731
        else:
            from firmware_bridge.servo_emulator import EmulatedServoBus, ServoEmulatorConfig

            ids = tuple(int(i) for i in prof.serial.ids)
            if len(ids) != n:
                raise UsageError(f"profile {prof.name}: [serial] ids {list(ids)} name {len(ids)} servos, "
                                 f"the sim arm has {n} joints")  # fmt: skip
            scfg = ServoEmulatorConfig(protocol, ids, tick_hz=tick_hz)
            self.emu = EmulatedServoBus(scfg, link_path=self.link_path)
            self.ctl = _ServoTarget(self.emu)
            cal = sim_calibration(protocol, ids, arm.q_min, arm.q_max, scfg.ticks_per_rev)
            make_bus = lambda: open_bus(protocol, port=self.link_path, ids=ids, baudrate=prof.serial.baud,  # noqa: E731
                                        period_s=1.0 / stream, calibration=cal, limits=limits,
                                        watchdog_ms=prof.serial.watchdog_ms)  # fmt: skip
        self.plant = SimPlant(task, tick_hz, seed=seed, episodes=episodes, lock=self.emu.cond)
        self.ctl.attach(self.plant.motor)  # the controller drives the simulated arm
        self.plant.hold_at = self.ctl.hold_at
        self.emu.start()
        self.bus: Any = make_bus()
        try:
            self.bus.start()
        except BaseException:
            self.emu.close()
            raise

    def confirm_hold(self, hold: np.ndarray, timeout_s: float = 0.5) -> bool:
        """True once the controller's commanded target (the servos' goal registers) equals ``hold``:
        the hold reached the motors."""
        h = np.asarray(hold, np.float64)
        ctl = self.ctl
        return self.emu.wait_until(lambda _: bool(np.allclose(ctl.commanded(), h, atol=ctl.atol)), timeout_s)

    def close(self) -> None:
        self.bus.close()
        self.emu.close()
        self._dir.cleanup()


class Session:
    """Runs the loop: episodes on the sim rig, or a timed run on a port; SIGTERM/SIGINT stop it
    cleanly (hold, then close). ``status`` prints one line at most once a second."""

    def __init__(self, man: Any, prof: Any, den: ChunkDenoiser, cfg: LoopConfig, *, bus: Any,
                 make_source: Callable[[], Any], plant: Any = None, rig: SimRig | None = None,
                 status: Callable[[str], None] | None = None, reconnect_s: float = 5.0,
                 recorder: Any = None) -> None:  # fmt: skip
        self.man, self.prof, self.den, self.cfg = man, prof, den, cfg
        self.recorder = recorder  # --record (edge/recorder.py): fed from the worker and each drain
        self.bus, self.make_source, self.plant, self.rig = bus, make_source, plant, rig
        self.status_fn = status
        self.reconnect_s = reconnect_s
        self.records = Records()
        self.episodes: list[dict[str, Any]] = []
        self.stop_reason: str | None = None
        self.stop_event = threading.Event()
        self.totals: dict[str, Any] = {}
        self.errors: list[str] = []
        self.port_events: list[dict[str, Any]] = []
        self.d_hist: dict[int, int] = {}
        self.hold_sent = False
        self.hold_confirmed: bool | None = None  # --sim: the controller's target equals the hold
        self.loop: ControlLoop | None = None
        self.rtt: dict[str, Any] = {}
        self._last_status = 0.0
        self._last_ticks = 0
        self._last_loop: ControlLoop | None = None
        self._t0 = 0.0

    # ---- signals ---------------------------------------------------------------------------------
    def install_signals(self) -> Callable[[], None]:
        def on_signal(signum: int, frame: Any) -> None:
            self.stop_reason = signal.Signals(signum).name
            self.stop_event.set()

        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        return lambda: [signal.signal(s, h) for s, h in old.items()]  # type: ignore[func-returns-value]

    # ---- one run of the loop -------------------------------------------------------------------
    def _run_loop(self, hold: np.ndarray, until: Callable[[], bool], deadline: float,
                  seed: int | None = None) -> str:  # fmt: skip
        cfg = self.cfg if seed is None else dataclasses.replace(self.cfg, seed=seed)
        loop = ControlLoop(cfg, self.bus, self.make_source(), self.den, hold, recorder=self.recorder)
        self.loop = loop
        loop.start()
        why = "done"
        try:
            while True:
                if self.stop_event.wait(0.05):
                    why = self.stop_reason or "stopped"
                    break
                if until():
                    break
                if time.monotonic() >= deadline:
                    why = "time"
                    break
                if loop.errors:
                    why = "worker-error"
                    break
                if not self._connected():
                    why = "port-lost"
                    break
                self._status(loop)
                self._drain(loop)
        finally:
            loop.stop()
            self.hold_sent = True
            if self.rig is not None:
                self.hold_confirmed = self.rig.confirm_hold(loop.last)
            self._drain(loop)
            st = loop.status()
            for k, v in st.items():
                if isinstance(v, int):
                    self.totals[k] = self.totals.get(k, 0) + v
            self.errors.extend(st["worker_errors"])
        return why

    def _drain(self, loop: ControlLoop) -> None:
        self.records.drain(loop)
        if self.recorder is not None:
            try:
                tel = self.bus.latest_telemetry()
            except Exception:  # a closing bus: the tick rows still go to the recording
                tel = None
            self.recorder.on_ticks(self.records.ticks[-1], tel)

    def _connected(self) -> bool:
        h = getattr(self.bus, "health", None)
        if h is None:
            return True
        try:
            return bool(h().connected)
        except Exception:
            return True

    def _wait_reconnect(self) -> bool:
        t0 = time.monotonic()
        before = self.bus.health().reconnects
        while time.monotonic() - t0 < self.reconnect_s:
            if self.stop_event.wait(0.05):
                return False
            hl = self.bus.health()
            if hl.connected and hl.configured:
                self.port_events.append({"lost_at_s": round(t0 - self._t0, 3), "reconnected": True,
                                         "after_s": round(time.monotonic() - t0, 3),
                                         "reconnects": hl.reconnects - before})  # fmt: skip
                return True
        self.port_events.append({"lost_at_s": round(t0 - self._t0, 3), "reconnected": False,
                                 "after_s": round(time.monotonic() - t0, 3),
                                 "reconnects": self.bus.health().reconnects - before})  # fmt: skip
        return False

    def _status(self, loop: ControlLoop) -> None:
        now = time.monotonic()
        if self.status_fn is None or now - self._last_status < 1.0:
            return
        since = max(self._last_status, loop.started_at)
        base = self._last_ticks if self._last_loop is loop else 0
        ticks = loop.ticks - base
        self._last_ticks, self._last_loop = loop.ticks, loop
        self._last_status = now
        dt = now - since
        ep = f"episode {len(self.episodes) + 1} " if self.plant is not None else ""
        self.status_fn(f"{ep}rate {ticks / max(dt, 1e-9):5.1f} Hz  d {loop.d_est}  underruns "
                       f"{self.totals.get('underruns', 0) + loop.underruns}  faults "
                       f"{self.totals.get('faults', 0) + loop.faults}  chunks {loop.chunks}")  # fmt: skip

    # ---- sessions --------------------------------------------------------------------------------
    def run_sim(self, episodes: int | None, seconds: float | None) -> None:
        """Episodes 0.. on the plant until `episodes` are done or `seconds` have passed."""
        plant = self.plant
        self._t0 = time.monotonic()
        end = self._t0 + seconds if seconds else math.inf
        n = episodes if episodes is not None else plant.episodes
        period = self.cfg.period
        for i in range(n):
            if time.monotonic() >= end or self.stop_event.is_set():
                break
            i_ep = i % plant.episodes
            q0 = plant.load(i_ep)
            self.bus.send_setpoint(q0)
            self._wait_settled(q0)
            timeout = time.monotonic() + plant.task.max_steps * period * 3 + 5.0
            plant.go()
            # each episode its own sampling-noise stream (as the evaluation's batch draws differ)
            why = self._run_loop(q0, plant.done.is_set, min(end, timeout), seed=self.cfg.seed * 100_003 + i)
            r = plant.result
            if why in ("done",) or plant.done.is_set():
                self.episodes.append({"episode": i_ep, "success": r.success, "collided": r.collided,
                                      "steps": r.steps, "steps_to_success": r.steps_to_success})  # fmt: skip
            if why == "port-lost":
                if not self._wait_reconnect():
                    self.stop_reason = "port-lost"
                    break
            elif why not in ("done", "time"):
                self.stop_reason = self.stop_reason or why
                break

    def _wait_settled(self, q0: np.ndarray) -> None:
        """Wait (bounded) until telemetry shows the arm at its start posture."""
        t_end = time.monotonic() + 1.0
        while time.monotonic() < t_end:
            tel = self.bus.latest_telemetry()
            if tel is not None and np.max(np.abs(np.asarray(tel.positions) - q0)) < 1e-3 and \
                    np.max(np.abs(tel.velocities)) < 1e-3:  # fmt: skip
                return
            time.sleep(0.005)

    def run_timed(self, seconds: float | None) -> None:
        """A robot run: until `seconds` (or a signal); a lost port holds, waits to reconnect, resumes."""
        self._t0 = time.monotonic()
        end = self._t0 + seconds if seconds else math.inf
        while not self.stop_event.is_set() and time.monotonic() < end:
            tel = self.bus.latest_telemetry()
            hold = np.asarray(tel.positions, np.float32) if tel is not None else None
            if hold is None:
                raise UsageError("no telemetry from the motor controller: is it powered and on this port?")
            why = self._run_loop(hold, lambda: False, end)
            if why == "port-lost":
                if not self._wait_reconnect():
                    self.stop_reason = "port-lost"
                    return
            elif why != "time":
                self.stop_reason = self.stop_reason or why
                return

    # ---- report ----------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        from edge.profiler import latency_summary

        ticks, chunks = self.records.tick_array(), self.records.chunk_array()
        out: dict[str, Any] = {}
        if self.episodes:
            ok = np.array([e["success"] for e in self.episodes])
            steps = np.array([e["steps_to_success"] for e in self.episodes if e["success"]], float)
            out.update({"episodes": len(ok), "success_rate": float(ok.mean()),
                        "collision_rate": float(np.mean([e["collided"] for e in self.episodes])),
                        "completion_steps": float(steps.mean()) if len(steps) else None,
                        "completion_s": float(steps.mean() * self.cfg.period) if len(steps) else None,
                        # per episode, in order: S success, C collision, T timeout
                        "episode_outcomes": "".join("S" if e["success"] else "C" if e["collided"] else "T"
                                                    for e in self.episodes),
                        "episode_indices": [e["episode"] for e in self.episodes]})  # fmt: skip
        d_col = chunks[:, CHUNK_BASE_COLS.index("d")] if len(chunks) else np.zeros(0)
        est = [int(x) for x in d_col[1:]] if len(d_col) > 1 else []
        out["delay_estimate"] = int(self.loop.d_est) if self.loop else 0
        out["delay_hist"] = {str(k): est.count(k) for k in sorted(set(est))}
        out["delay_mode"] = int(max(set(est), key=est.count)) if est else 0
        for k in ("ticks", "chunks", "underruns", "start_holds", "faults", "nan_setpoints", "missed_ticks",
                  "step_clamped", "limit_clamped", "delay_clips", "tick_errors"):  # fmt: skip
            out[k] = int(self.totals.get(k, 0))
        out.update(latency_summary(ticks, chunks, self.records.stage_names, self.cfg.period))
        out["records_dropped"] = self.records.dropped
        out["shutdown"] = self.stop_reason or "completed"
        out["hold_sent"] = self.hold_sent
        out["hold_confirmed"] = self.hold_confirmed
        out["port_events"] = self.port_events
        out["errors"] = self.errors
        h = getattr(self.bus, "health", None)
        if h is not None:
            try:
                hl = h()
                out["telemetry.rtt_ms.p50"], out["telemetry.rtt_ms.p99"] = hl.rtt_p50_ms, hl.rtt_p99_ms
                out["bus.reconnects"] = hl.reconnects
                out["bus.setpoints_rejected"] = hl.setpoints_rejected
                out["bus.frames_sent"], out["bus.frames_received"] = hl.frames_sent, hl.frames_received
                if hasattr(hl, "reply_timeouts"):  # a servo bus: cycles each servo did not answer in
                    out["bus.reply_timeouts"] = list(hl.reply_timeouts)
            except Exception as e:  # a closed bus: the report still goes out
                out["errors"].append(f"bus health: {e}")
        return out


def eprint(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)

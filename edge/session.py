"""The session: runs the loop on a started rig (episodes in --sim, a timed run on a robot's port),
drains the record rings, watches the bus's health and reports.

It stops the loop when told (SIGTERM, SIGINT), when the inference worker fails, when
``max_fault_ticks`` consecutive ticks held for a fault, or when the port is gone; a lost port
holds, waits up to ``reconnect_s`` for the bus to come back, and resumes with a fresh start-up.
``status`` prints one line at most once a second. Used by `legato run` and `legato profile`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.loop import CHUNK_BASE_COLS, TICK_COLS, ControlLoop, LoopConfig
from firmware_bridge.servo_bus import ServoHealth

# loop counters that are summed over the session's loops (the others: the largest)
_SUMMED = ("ticks", "chunks", "underruns", "start_holds", "faults", "nan_setpoints", "stale_ticks",
           "missed_ticks", "step_clamped", "limit_clamped", "delay_clips", "tick_errors",
           "chunks_unavailable", "rerequests", "telemetry_skipped")  # fmt: skip


@dataclass
class Records:
    """Everything drained from the loop's rings over a session."""

    ticks: list[np.ndarray] = field(default_factory=list)
    chunks: list[np.ndarray] = field(default_factory=list)
    stage_names: tuple[str, ...] = ()
    dropped: int = 0

    def drain(self, loop: ControlLoop) -> np.ndarray:
        """Take the rows the loop wrote since the last drain; returns the new tick rows."""
        rows = loop.ticks_ring.drain()
        self.ticks.append(rows)
        self.chunks.append(loop.chunk_ring.drain())
        self.stage_names = loop.stage_names
        self.dropped = loop.ticks_ring.dropped + loop.chunk_ring.dropped
        return rows

    def tick_array(self) -> np.ndarray:
        return np.concatenate(self.ticks) if self.ticks else np.zeros((0, len(TICK_COLS)))

    def chunk_array(self) -> np.ndarray:
        n = len(CHUNK_BASE_COLS) + len(self.stage_names)
        return np.concatenate(self.chunks) if self.chunks else np.zeros((0, n))


class Session:
    """Runs the loop on ``rig`` (edge.rig.Rig, started). ``make_source()`` builds the observation
    source of each run of the loop. ``recorder`` (optional, edge/recorder.py): the worker hands it
    every chunk (``on_chunk``), each drain the new tick rows and the latest telemetry
    (``on_ticks(rows, telemetry)``); it must not block (the clock never waits for either)."""

    def __init__(self, man: Any, prof: Any, den: Any, cfg: LoopConfig, *, rig: Any,
                 make_source: Callable[[], Any], status: Callable[[str], None] | None = None,
                 reconnect_s: float = 5.0, recorder: Any = None) -> None:  # fmt: skip
        self.man, self.prof, self.den, self.cfg = man, prof, den, cfg
        self.recorder = recorder
        self.rig, self.bus, self.plant = rig, rig.bus, rig.plant
        self.make_source = make_source
        self.status_fn = status
        self.reconnect_s = reconnect_s
        self.records = Records()
        self.episodes: list[dict[str, Any]] = []
        self.stop_reason: str | None = None
        self.stop_detail: str | None = None  # the reason in words, where one number is not enough
        self.stop_event = threading.Event()
        self.totals: dict[str, Any] = {}
        self.errors: list[str] = []
        self.port_events: list[dict[str, Any]] = []
        self.hold_sent = False
        self.hold_confirmed: bool | None = None  # --sim: the controller's target equals the hold
        self.loop: ControlLoop | None = None
        self.scheduling: dict[str, Any] = {}  # the clock's scheduling class and priority, as it got them
        self._last_status = 0.0
        self._last_ticks = 0
        self._last_loop: ControlLoop | None = None
        self._t0 = 0.0
        self._lost = (0.0, 0)  # when the port was found gone, and the bus's reconnects then
        self._reconnects_seen = 0  # the bus's reconnect count when the session last looked

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
        loop = ControlLoop(cfg, self.rig.clock, self.make_source(), self.den, hold, recorder=self.recorder)
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
                # a lost port first: its stale ticks are not the policy's faults
                if not self.rig.clock.alive:
                    why = "clock-process-died"
                    self.errors.append("the clock process ended during the run (it held and closed the bus)")
                    break
                if self._port_lost():
                    why = "port-lost"
                    break
                if loop.fault_stop:
                    why = "faults"
                    st = loop.status()
                    self.stop_detail = (f"{cfg.max_fault_ticks} consecutive fault ticks ([robot] "
                                        f"max_fault_ticks): NaN/inf setpoints {st['nan_setpoints']}, "
                                        f"stale joint state {st['stale_ticks']}"
                                        f"{self._stale_names(st['stale_joints'])}")  # fmt: skip
                    break
                self._status(loop)
                self._drain(loop)
        finally:
            loop.stop()
            self.hold_sent = True
            # a lost port cannot carry the hold to the device: look once, do not wait for it
            self.hold_confirmed = self.rig.confirm_hold(loop.last, 0.0 if why == "port-lost" else 2.0)
            self._drain(loop)
            st = loop.status()
            for k, v in st.items():
                if isinstance(v, int):
                    old = self.totals.get(k, 0)
                    self.totals[k] = old + v if k in _SUMMED else max(old, v)
            sj = self.totals.setdefault("stale_joints", [0] * len(st["stale_joints"]))
            self.totals["stale_joints"] = [x + y for x, y in zip(sj, st["stale_joints"], strict=True)]
            self.scheduling = st.get("scheduling", self.scheduling)
            self.errors.extend(st["worker_errors"])
            # (no reference cycle keeps a finished loop: the tick ring is the session's shared
            # state, the clock thread belongs to the clock process's host and is dropped at stop,
            # and the worker's thread lets go of its target when it ends)
        return why

    def _drain(self, loop: ControlLoop) -> None:
        rows = self.records.drain(loop)
        if self.recorder is not None and len(rows):
            self.recorder.on_ticks(rows, self.bus.latest_telemetry())

    def _stale_names(self, counts: list[int]) -> str:
        names = [j for j, c in zip(self.prof.robot.joints, counts, strict=False) if c]
        return f" ({', '.join(names)} older than stale_ms {self.cfg.stale_s * 1e3:g})" if names else ""

    def _port_lost(self) -> bool:
        """Is the port gone? Then remember when, and the bus's reconnect count in the same health
        snapshot: the bus may be back before the session starts waiting (the hold, the drain)."""
        hl = self.bus.health()
        if hl.connected and hl.reconnects == self._reconnects_seen:
            return False
        # gone, or gone and back between two looks (a short unplug while the session waited for
        # telemetry, or a session starved on a loaded machine): the same path, so the event is in
        # the summary and the loop restarts from where the arm is now
        self._lost = (time.monotonic(), self._reconnects_seen)
        return True

    def _wait_reconnect(self) -> bool:
        t0, before = self._lost
        while time.monotonic() - t0 < self.reconnect_s:
            if self.stop_event.wait(0.05):
                return False
            hl = self.bus.health()
            if hl.connected and hl.configured:
                self._reconnects_seen = hl.reconnects
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
        st = loop.status()
        ticks = st["ticks"] - base
        self._last_ticks, self._last_loop = st["ticks"], loop
        self._last_status = now
        dt = now - since
        tot = self.totals.get
        ep = f"episode {len(self.episodes) + 1} " if self.plant is not None else ""
        late = f"  reply timeouts {self.bus.health().missed_replies}"
        self.status_fn(f"{ep}rate {ticks / max(dt, 1e-9):5.1f} Hz  d {st['d_est']}  underruns "
                       f"{tot('underruns', 0) + st['underruns']}  faults {tot('faults', 0) + st['faults']}  "
                       f"stale {tot('stale_ticks', 0) + st['stale_ticks']}{late}  "
                       f"chunks {st['chunks']}")  # fmt: skip

    # ---- sessions --------------------------------------------------------------------------------
    def run_sim(self, episodes: int | None, seconds: float | None) -> None:
        """Episodes 0.. on the plant until `episodes` are done or `seconds` have passed."""
        plant = self.plant
        self._t0 = time.monotonic()
        self._reconnects_seen = self.bus.health().reconnects
        end = self._t0 + seconds if seconds else math.inf
        # a timed run (no episode count) cycles the sampled episodes until its time is up
        if episodes is not None:
            count: Any = range(episodes)
        else:
            count = itertools.count() if seconds else range(plant.episodes)
        period = self.cfg.period
        for i in count:
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
        """A robot run: until `seconds` (or a signal); a lost port holds, waits to reconnect, resumes
        from where the arm is then."""
        self._t0 = time.monotonic()
        self._reconnects_seen = self.bus.health().reconnects
        end = self._t0 + seconds if seconds else math.inf
        since: float | None = None
        while not self.stop_event.is_set() and time.monotonic() < end:
            # after a reconnect: the arm where it is now, not where it was before the port went
            hold = np.asarray(self.rig.first_telemetry(measured_after=since).positions, np.float32)
            why = self._run_loop(hold, lambda: False, end)
            if why == "port-lost":
                since = time.monotonic()
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
        for k in (*_SUMMED, "max_fault_streak"):
            out[k] = int(self.totals.get(k, 0))
        stale = self.totals.get("stale_joints", [])
        out["stale_joints"] = dict(zip(self.prof.robot.joints, stale, strict=False))  # ticks, per joint
        sch = self.scheduling
        out["clock.process"] = sch.get("clock")
        out["clock.policy"], out["clock.priority"] = sch.get("policy"), sch.get("priority")
        out["clock.memory_locked"] = sch.get("memory_locked")
        out["clock.wake_latency_us"] = sch.get("wake_latency_us")  # the PM QoS limit held, or None
        out["clock.gc_frozen"] = sch.get("gc_frozen")  # objects the clock process froze at start-up
        out.update(latency_summary(ticks, chunks, self.records.stage_names, self.cfg.period))
        out["records_dropped"] = self.records.dropped
        out["shutdown"] = self.stop_reason or "completed"
        out["shutdown_reason"] = self.stop_detail
        out["hold_sent"] = self.hold_sent
        out["hold_confirmed"] = self.hold_confirmed
        out["port_events"] = self.port_events
        out["errors"] = self.errors
        # a remote denoiser (legato run --remote): the server chooses the graph; the link's counters
        counters = getattr(self.den, "counters", None)
        if counters is not None:
            out.update(counters())
        out["graph"] = getattr(self.den, "graph", None) or (
            "fused" if self.den.fused is not None else "stepwise"
        )
        hl = self.bus.health()  # a closed bus still reports its counters
        out["telemetry.rtt_ms.p50"], out["telemetry.rtt_ms.p99"] = hl.rtt_p50_ms, hl.rtt_p99_ms
        out["bus.reconnects"] = hl.reconnects
        out["bus.setpoints_rejected"] = hl.setpoints_rejected
        out["bus.frames_sent"], out["bus.frames_received"] = hl.frames_sent, hl.frames_received
        out["reply_timeouts"] = hl.missed_replies  # replies that did not come in time (every bus)
        if isinstance(hl, ServoHealth):  # a servo bus: cycles each servo did not answer in
            out["bus.reply_timeouts"] = list(hl.reply_timeouts)
        return out

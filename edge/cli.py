"""`legato run` and `legato profile`: the robot program and its profiler (robot side, no torch).

Imports nothing heavy at import time: numpy, onnxruntime, the bridge and (with --sim) sim/ load
inside the command. Flags and the summary keys are documented in docs/runtime.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edge.cliargs import float_in, int_in
from edge.record_cli import add_record_args, open_recorder, record_line

MODES = ("legato", "hard-prefix", "naive")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, help="bundle folder (legato export)")
    p.add_argument("--profile", default="x86-cpu", help="device profile name or .toml path")
    p.add_argument("--latency-ms", type=float_in(0.0, 10_000.0), default=0.0,
                   help="pad each inference (from the frame's capture) to at least this many ms")  # fmt: skip
    p.add_argument("--mode", choices=MODES, default=None,
                   help="sampler mode (default: the one the bundle's model was trained for)")  # fmt: skip
    p.add_argument("--ramp", type=int_in(0, 1024), default=None,
                   help="Legato ramp r (default: the evaluation's rule min(r_max, H - s - d))")  # fmt: skip
    p.add_argument(
        "--max-step",
        type=float_in(0.0, 10.0, lo_open=True),
        default=None,
        help="largest setpoint change per control tick, rad (default: 2 vel_max / rate)",
    )
    p.add_argument("--fused", action="store_true",
                   help="run the bundle's fused graph (prefix + N steps + blends in one call) instead of "
                   "the prefix graph and N flow-head calls (legato and naive modes)")  # fmt: skip
    p.add_argument("--seed", type=int_in(0, 2**31 - 1), default=1000,
                   help="held-out episode set (--sim) and sampling-noise seed")  # fmt: skip
    p.add_argument(
        "--camera",
        default=None,
        help="with --port: V4L2 index, GStreamer pipeline (with '!') or video file (OpenCV extra)",
    )
    p.add_argument("--tokens", default=None, help="with --port: instruction token ids, comma-separated")
    p.add_argument("--reconnect-s", type=float_in(0.0, 600.0), default=5.0,
                   help="how long a lost port may take to come back before the run stops")  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a bundle on the robot (or --sim): the real-time loop")
    _common(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--port", help="serial port of the motor controller (protocol from the profile)")
    g.add_argument("--sim", action="store_true", help="simulated arm behind the emulated controller on a pty")
    p.add_argument(
        "--seconds", type=float_in(0.0, 1e7, lo_open=True), default=None, help="stop after this long"
    )
    p.add_argument("--episodes", type=int_in(1, 100_000), default=None,
                   help="--sim: held-out episodes to run (default 10 unless --seconds is given)")  # fmt: skip
    p.add_argument("--summary-json", default=None, help="write the run's summary (JSON) to this file")
    p.add_argument(
        "--sim-state",
        choices=("telemetry", "plant"),
        default="telemetry",
        help="--sim: joint state from the bridge's telemetry (the robot's path) or the simulator",
    )
    p.add_argument("--quiet", action="store_true", help="no status line")
    add_record_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("profile", help="per-stage latency, control jitter, a trace and a picture")
    _common(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--port", help="serial port of the motor controller")
    g.add_argument("--sim", action="store_true", help="simulated arm behind the emulated controller")
    g.add_argument("--synthetic", action="store_true", help="time the engines alone, back to back")
    p.add_argument(
        "--seconds", type=float_in(0.0, 1e6, lo_open=True), required=True, help="how long to measure"
    )
    p.add_argument("--out", required=True, help="report folder (summary.json, trace.json, profile.png)")
    p.add_argument(
        "--observations",
        default=None,
        help="--synthetic: recorded observations (.npz: image, tokens, state), not random",
    )
    p.add_argument("--force", action="store_true", help="replace an existing report at --out")
    add_record_args(p)
    p.set_defaults(func=cmd_profile)


def _session(args: argparse.Namespace, episodes: int | None) -> tuple[Any, Any]:
    """Build (session, rig) for --sim or --port; the caller closes the rig / bus."""
    from edge.runtime import load, loop_config

    man, prof, den = load(args.bundle, args.profile, args.mode, args.fused)
    cfg = loop_config(man, prof, args.latency_ms, args.ramp, args.max_step, args.seed)
    recorder = open_recorder(args, man, prof, cfg, den)  # before any motor: a refused file stops here
    try:
        return _build(args, man, prof, den, cfg, episodes, recorder)
    except BaseException:
        if recorder is not None:
            recorder.close()
        raise


def _build(args: argparse.Namespace, man: Any, prof: Any, den: Any, cfg: Any, episodes: int | None,
           recorder: Any) -> tuple[Any, Any]:  # fmt: skip
    import numpy as np

    from edge.errors import UsageError
    from edge.runtime import Session, SimRig, eprint

    status = None if getattr(args, "quiet", False) else (lambda s: eprint("legato run: " + s))
    a = man.spec.action_dim
    if args.sim:
        from edge.sources import PlantSource, SimSource, TelemetryState

        rig = SimRig(man, prof, episodes=episodes or 1, seed=args.seed)
        plant, bus = rig.plant, rig.bus

        from_plant = getattr(args, "sim_state", "telemetry") == "plant"

        def make_source() -> Any:
            if from_plant:  # image and state of one instant, straight from the simulator
                return PlantSource(plant)
            # no extrapolation: the lockstep plant stands still between two setpoints
            return SimSource(plant.render, lambda: plant.tokens, TelemetryState(bus, a, extrapolate=False))

        return Session(man, prof, den, cfg, bus=bus, make_source=make_source, plant=plant, rig=rig,
                       status=status, reconnect_s=args.reconnect_s, recorder=recorder), rig  # fmt: skip
    from edge.sources import OpenCVSource, TelemetryState
    from firmware_bridge.config import JointLimits
    from firmware_bridge.factory import open_bus

    if args.camera is None:
        raise UsageError("--port needs --camera (V4L2 index, GStreamer pipeline or video file)")
    arm = man.data["model"]["task"]["arm"]
    s = prof.serial
    if s.protocol == "firmware":
        limits = JointLimits(tuple(arm["q_min"][:a]), tuple(arm["q_max"][:a]), (float(arm["vel_max"]),) * a,
                             (0.05,) * a)  # fmt: skip
        bus = open_bus("firmware", port=args.port, limits=limits, baudrate=s.baud, watchdog_ms=s.watchdog_ms,
                       rate_hz=float(s.stream_hz or prof.control.rate_hz))  # fmt: skip
    else:
        bus = open_bus(s.protocol, port=args.port, ids=list(s.ids), baudrate=s.baud)
    bus.start()
    tokens = np.array([int(x) for x in args.tokens.split(",")] if args.tokens else [0] * man.spec.max_tokens)
    ts = TelemetryState(bus, a)

    def make_cam() -> Any:
        return OpenCVSource(args.camera, man.spec.image_hw, tokens, ts, man.spec.state_dim)

    class _Rig:
        def close(self) -> None:
            bus.close()

    return Session(man, prof, den, cfg, bus=bus, make_source=make_cam, status=status,
                   reconnect_s=args.reconnect_s, recorder=recorder), _Rig()  # fmt: skip


def _cycle(seconds: float | None) -> int:
    """Held-out episodes to sample for a timed --sim run (they repeat when the run outlasts them)."""
    return max(1, min(int((seconds or 0) / 0.5) + 1, 200))


def _drive(args: argparse.Namespace, episodes: int | None, cycle: int) -> Any:
    """Build the session and run it (--sim episodes, or a timed run on the port) with SIGTERM and
    SIGINT handled; the rig is always closed: streaming stops, the hold is sent, the port closes."""
    session, rig = _session(args, cycle)
    restore = session.install_signals()
    try:
        if args.sim:
            session.run_sim(episodes, args.seconds)
        else:
            session.run_timed(args.seconds)
    except BaseException:
        if session.recorder is not None:
            session.recorder.close()  # what was recorded stays readable
        raise
    finally:
        rig.close()
        restore()
    return session


def _finish(session: Any) -> dict[str, Any]:
    s = session.summary()
    s.update({"bundle": session.man.path.as_posix() if hasattr(session.man.path, "as_posix") else
              str(session.man.path), "profile": session.prof.name, "mode": session.den.mode,
              "latency_ms": session.cfg.latency_pad_s * 1e3, "rate_hz": session.cfg.rate_hz})  # fmt: skip
    if session.recorder is not None:  # the summary goes into the recording, its counts into the summary
        s.update(session.recorder.close(s))
    return s


def cmd_run(args: argparse.Namespace) -> int:
    from edge.runtime import PortLost, eprint

    episodes = args.episodes if args.episodes is not None else (None if args.seconds else 10)
    if args.port and args.episodes is not None:
        from edge.errors import UsageError

        raise UsageError("--episodes needs --sim (a robot run stops after --seconds or on Ctrl-C)")
    session = _drive(args, episodes, episodes if episodes is not None else _cycle(args.seconds))
    summary = _finish(session)
    _write_summary(args.summary_json, summary)
    line = (f"legato run: {summary.get('episodes', 0)} episodes, success "
            f"{summary.get('success_rate', float('nan')):.3f}, d {summary['delay_mode']}, underruns "
            f"{summary['underruns']}, faults {summary['faults']}, missed ticks {summary['missed_ticks']}, "
            f"shutdown {summary['shutdown']}") if args.sim else (  # fmt: skip
        f"legato run: {summary['ticks']} ticks, d {summary['delay_mode']}, underruns {summary['underruns']}, "
        f"faults {summary['faults']}, shutdown {summary['shutdown']}")  # fmt: skip
    eprint(line)
    if "record.file" in summary:
        eprint("legato run: " + record_line(summary))
    if summary["shutdown"] == "port-lost":
        ev = summary["port_events"][-1] if summary["port_events"] else {}
        raise PortLost(f"serial port lost at {ev.get('lost_at_s', '?')} s and not back after "
                       f"{ev.get('after_s', '?')} s ({ev.get('reconnects', 0)} reconnects); the loop held "
                       "and stopped, the controller's watchdog holds the motors")  # fmt: skip
    if summary["errors"]:
        eprint("legato run: errors: " + "; ".join(summary["errors"]))
        return 1
    return 0


def _write_summary(path: str | None, summary: dict[str, Any]) -> None:
    if not path:
        return
    from edge.outputs import atomic_file

    atomic_file(path, (json.dumps(summary, indent=1, sort_keys=True) + "\n").encode(), replace=True)


def cmd_profile(args: argparse.Namespace) -> int:
    from edge.outputs import atomic_folder, check_target
    from edge.profiler import latency_summary, print_table, synthetic, write_report
    from edge.runtime import eprint

    check_target(Path(args.out), "profile", replace=args.force)  # refuse before measuring
    extra: dict[str, Any] = {"seconds": args.seconds}
    teg = None
    if args.synthetic:
        import numpy as np

        from edge.runtime import load

        man, prof, den = load(args.bundle, args.profile, args.mode, args.fused)
        obs = None
        if args.observations:
            with np.load(args.observations) as z:
                obs = {k: z[k] for k in ("image", "tokens", "state")}
        rows, names = synthetic(den, args.seconds, args.latency_ms / 1000.0, args.seed, obs)
        ticks = np.zeros((0, 9))
        summary = latency_summary(ticks, rows, names, 1.0 / prof.control.rate_hz)
        extra.update({"source": "synthetic", "bundle": str(man.path), "profile": prof.name,
                      "chunks": len(rows), "latency_ms": args.latency_ms})  # fmt: skip
        chunks = rows
    else:
        from edge.tegrastats import TegrastatsRecorder

        teg = TegrastatsRecorder.start_if_available()
        try:
            session = _drive(args, None, _cycle(args.seconds))
        finally:
            if teg is not None:
                teg.stop()
        summary = _finish(session)
        ticks, chunks, names = session.records.tick_array(), session.records.chunk_array(), \
            session.records.stage_names  # fmt: skip
        extra["source"] = "sim" if args.sim else "port"
    if teg is not None:
        extra.update(teg.summary())
    print_table(summary)
    with atomic_folder(args.out, "profile", replace=args.force) as tmp:
        write_report(tmp, summary, ticks, chunks, names, extra)
    eprint(f"legato profile: wrote {args.out} (summary.json, trace.json, profile.png)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: legato run | legato profile")

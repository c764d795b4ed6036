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


SUMMARY_KIND = "legato run summary"  # marks --summary-json files as this command's own


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", default=None, help="bundle folder (legato export); not with --remote")
    p.add_argument("--remote", default=None, metavar="ws://HOST:PORT",
                   help="chunks from a policy server (legato serve) instead of a local bundle")  # fmt: skip
    p.add_argument("--api-key-file", default=None, help="--remote: file whose first line is the server's key")
    p.add_argument("--remote-timeout-ms", type=float_in(1.0, 600_000.0), default=1000.0,
                   help="--remote: a chunk not back in this long is given up (hold, ask again)")  # fmt: skip
    p.add_argument("--profile", default="x86-cpu", help="device profile name or .toml path")
    p.add_argument("--latency-ms", type=float_in(0.0, 10_000.0), default=0.0,
                   help="pad each inference (from the frame's capture) to at least this many ms")  # fmt: skip
    p.add_argument("--mode", choices=MODES, default=None,
                   help="sampler mode (default: the one the bundle's model was trained for)")  # fmt: skip
    p.add_argument("--ramp", type=int_in(0, 1024), default=None,
                   help="Legato ramp r (default: the profile's [control] ramp)")  # fmt: skip
    p.add_argument(
        "--max-step",
        type=float_in(0.0, 10.0, lo_open=True),
        default=None,
        help="largest setpoint change per control tick, rad (default: the profile's [robot] max_step)",
    )
    p.add_argument("--graph", choices=("fused", "stepwise"), default=None,
                   help="fused: the bundle's one-call graph (prefix + N steps + blends); stepwise: the "
                   "prefix graph and N flow-head calls, with per-step timings (default: the profile's "
                   "[control] graph)")  # fmt: skip
    p.add_argument("--seed", type=int_in(0, 2**31 - 1), default=1000,
                   help="held-out episode set (--sim) and sampling-noise seed")  # fmt: skip
    p.add_argument(
        "--camera",
        action="append",
        default=None,
        help="with --port: V4L2 index, GStreamer pipeline (with '!') or video file (OpenCV extra); "
        "NAME=SPEC for one of several cameras (repeat it; default: the profile's [cameras] table)",
    )
    p.add_argument("--tokens", default=None,
                   help="with --port: instruction token ids, comma-separated (padded with the bundle's pad "
                   "id; default: all padding)")  # fmt: skip
    p.add_argument("--prompt", default=None,
                   help="with --port: the instruction as text, tokenized here with the tokenizer the bundle "
                   "carries (language extra: tokenizers)")  # fmt: skip
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
    p.add_argument("--summary-json", default=None,
                   help="write the run's summary (JSON) to this file (replaces only a summary it "
                   "wrote)")  # fmt: skip
    p.add_argument(
        "--sim-state",
        choices=("telemetry", "plant"),
        default="telemetry",
        help="--sim: joint state from the bridge's telemetry (the robot's path) or the simulator",
    )
    p.add_argument("--quiet", action="store_true", help="no status line")
    add_record_args(p)
    p.set_defaults(func=cmd_run, command="run")

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
    p.set_defaults(func=cmd_profile, command="profile")


def is_summary(path: Path) -> bool:
    """True when ``path`` is a summary `legato run --summary-json` wrote (so it may be replaced)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("kind") == SUMMARY_KIND


def _fused(args: argparse.Namespace) -> bool | None:
    return None if args.graph is None else args.graph == "fused"


def _load(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(model, profile, denoiser): a local bundle, or a policy server with --remote."""
    from edge.errors import UsageError

    if (args.bundle is None) == (args.remote is None):
        raise UsageError(
            "give --bundle (a local bundle) or --remote ws://HOST:PORT (a policy server), one of them"
        )
    if args.remote is None:
        from edge.assembly import load

        return load(args.bundle, args.profile, args.mode, _fused(args))
    if args.graph is not None:
        raise UsageError("--graph chooses the server's graphs: pass it to legato serve, not with --remote")
    from edge.remote.client import load_remote

    return load_remote(
        args.remote, args.profile, args.api_key_file, args.mode, args.remote_timeout_ms / 1000.0
    )


def _session(args: argparse.Namespace, episodes: int | None) -> Any:
    """The session of `legato run` / `legato profile` (edge.launch); the caller closes its rig."""
    from edge.launch import launch

    command = getattr(args, "command", "run")
    quiet = getattr(args, "quiet", False)
    loaded = _load(args)  # a bundle here, or the policy server of --remote
    status = None if quiet else (lambda s: eprint(f"legato {command}: {s}"))
    return launch(args.bundle, args.profile, port=args.port, sim=bool(args.sim), episodes=episodes,
                  mode=args.mode, fused=_fused(args), latency_ms=args.latency_ms, ramp=args.ramp,
                  max_step=args.max_step, seed=args.seed, camera=args.camera, tokens=args.tokens,
                  prompt=args.prompt, sim_state=getattr(args, "sim_state", "telemetry"),
                  reconnect_s=args.reconnect_s, status=status, loaded=loaded,
                  record=(lambda *a: open_recorder(args, *a)) if args.record else None)  # fmt: skip


def _cycle(seconds: float | None) -> int:
    """Held-out episodes to sample for a timed --sim run (they repeat when the run outlasts them)."""
    return max(1, min(int((seconds or 0) / 0.5) + 1, 200))


def _drive(args: argparse.Namespace, episodes: int | None, cycle: int) -> Any:
    """Build the session and run it (--sim episodes, or a timed run on the port) with SIGTERM and
    SIGINT handled; the rig is always closed: streaming stops, the hold is sent, the port closes."""
    session = _session(args, cycle)
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
        session.rig.close()
        restore()
        close = getattr(session.den, "close", None)  # a remote denoiser: its link
        if close is not None:
            close()
    return session


def _finish(session: Any) -> dict[str, Any]:
    s = session.summary()
    remote = getattr(session.man, "remote", False)  # legato run --remote: the server's URL as it is
    where = str(session.man.path) if remote else Path(session.man.path).as_posix()
    s.update({"kind": SUMMARY_KIND, "bundle": where, "profile": session.prof.name,
              "mode": session.den.mode, "latency_ms": session.cfg.latency_pad_s * 1e3,
              "rate_hz": session.cfg.rate_hz})  # fmt: skip
    if session.recorder is not None:  # the summary goes into the recording, its counts into the summary
        s.update(session.recorder.close(s))
    return s


def cmd_run(args: argparse.Namespace) -> int:
    from edge.errors import FaultStop, PortLost, UsageError

    episodes = args.episodes if args.episodes is not None else (None if args.seconds else 10)
    if args.port and args.episodes is not None:
        raise UsageError("--episodes needs --sim (a robot run stops after --seconds or on Ctrl-C)")
    if args.summary_json:  # refuse a foreign file before anything starts
        from edge.outputs import check_file_target

        check_file_target(args.summary_json, replace=True, what="run summary", own=is_summary)
    session = _drive(args, episodes, episodes if episodes is not None else _cycle(args.seconds))
    summary = _finish(session)
    _write_summary(args.summary_json, summary)
    head = (f"{summary.get('episodes', 0)} episodes, success {summary.get('success_rate', float('nan')):.3f}"
            if args.sim else f"{summary['ticks']} ticks")  # fmt: skip
    eprint(f"legato run: {head}, d {summary['delay_mode']}, underruns {summary['underruns']}, faults "
           f"{summary['faults']} (stale joint state {summary['stale_ticks']}), reply timeouts "
           f"{summary['reply_timeouts']}, missed ticks {summary['missed_ticks']}, shutdown "
           f"{summary['shutdown']}")  # fmt: skip
    if "record.file" in summary:
        eprint("legato run: " + record_line(summary))
    if summary["shutdown"] == "port-lost":
        ev = summary["port_events"][-1] if summary["port_events"] else {}
        raise PortLost(f"serial port lost at {ev.get('lost_at_s', '?')} s and not back after "
                       f"{ev.get('after_s', '?')} s ({ev.get('reconnects', 0)} reconnects); the loop held "
                       "and stopped, the controller's watchdog holds the motors")  # fmt: skip
    if summary["shutdown"] == "faults":
        raise FaultStop(f"stopped after {summary['shutdown_reason']}; the loop held the last safe setpoint")
    if summary["errors"]:
        eprint("legato run: errors: " + "; ".join(summary["errors"]))
        return 1
    return 0


def _write_summary(path: str | None, summary: dict[str, Any]) -> None:
    if not path:
        return
    from edge.outputs import atomic_file

    atomic_file(path, (json.dumps(summary, indent=1, sort_keys=True) + "\n").encode(), replace=True,
                what="run summary", own=is_summary)  # fmt: skip


def eprint(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_profile(args: argparse.Namespace) -> int:
    from edge.outputs import atomic_folder, check_target
    from edge.profiler import latency_summary, print_table, synthetic, write_report

    check_target(Path(args.out), "profile", replace=args.force)  # refuse before measuring
    if args.synthetic and args.record:
        from edge.errors import UsageError

        raise UsageError("--record needs --sim or --port (--synthetic runs the engines alone, no robot)")
    extra: dict[str, Any] = {"seconds": args.seconds}
    teg = None
    if args.synthetic:
        import numpy as np

        man, prof, den = _load(args)
        if getattr(man, "remote", False) and (args.prompt is not None or not den.takes_tokens):
            man.instruction(args.tokens, args.prompt)  # one line where the server takes the other
            den.set_task(lambda: str(args.prompt), [args.prompt])
        obs = None
        if args.observations:
            with np.load(args.observations) as z:
                obs = {k: z[k] for k in ("image", "tokens", "state")}
        rows, names = synthetic(den, man, args.seconds, args.latency_ms / 1000.0, args.seed, obs)
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
    if "record.file" in summary:
        eprint("legato profile: " + record_line(summary))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: legato run | legato profile")

"""`--record` on `legato run` / `legato profile`, and the `legato replay` and `legato view` commands
(robot side: no torch; matplotlib for the pictures, rerun-sdk for a Rerun recording, each named
in one line when missing). docs/record.md documents them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edge.cliargs import float_in, int_in


def add_record_args(p: argparse.ArgumentParser) -> None:
    """The --record flags of `legato run` and `legato profile`."""
    p.add_argument(
        "--record",
        default=None,
        metavar="FILE",
        help="record the run to this MCAP file: frames, state, tokens, every chunk with its inputs, "
        "every setpoint, telemetry (legato replay / legato view read it; Foxglove opens it)",
    )
    p.add_argument(
        "--record-image",
        choices=("png", "jpeg"),
        default="png",
        help="--record: frame encoding (png is lossless: a replay sees the same pixels)",
    )
    p.add_argument(
        "--record-max-mb",
        type=float_in(1.0, 1e7),
        default=1024.0,
        help="--record: stop recording (not the robot) before the file passes this size",
    )
    p.add_argument(
        "--record-overwrite",
        action="store_true",
        help="--record: replace an existing legato recording at FILE (any other file is refused)",
    )


def open_recorder(args: argparse.Namespace, man: Any, prof: Any, cfg: Any, den: Any) -> Any:
    """The Recorder for --record (None without it); opened before anything talks to a motor, so a
    refused file or a missing encoder stops the command first."""
    path = getattr(args, "record", None)
    if not path:
        return None
    from edge.recorder import Recorder, RecordOptions, run_metadata

    opts = RecordOptions(
        path=str(path),
        image_format=args.record_image,
        max_mb=args.record_max_mb,
        overwrite=args.record_overwrite,
    )
    extra = {
        "command": " ".join(["legato", *sys.argv[1:]]) if sys.argv else "legato",
        "sim": bool(getattr(args, "sim", False)),
        "seed": getattr(args, "seed", None),
    }
    return Recorder(opts, run_metadata(man, prof, cfg, den, opts, extra))


def record_line(stats: dict[str, Any]) -> str:
    """The one line `legato run` prints about its recording."""
    drops = stats["record.dropped_chunks"] + stats["record.dropped_ticks"]
    mb = (stats.get("record.bytes") or 0) / 1e6
    cams = stats.get("record.cameras") or []
    frames = f" ({stats['record.frames']} frames of {len(cams)} cameras)" if len(cams) > 1 else ""
    line = (
        f"recorded {stats['record.chunks']} chunks{frames}, {stats['record.ticks']} ticks to "
        f"{stats['record.file']} ({mb:.1f} MB, {drops} dropped)"
    )
    if stats.get("record.stopped"):
        line += f"; recording stopped early: {stats['record.stopped']} (the run went on)"
    if stats.get("record.errors"):
        line += f"; {stats['record.errors']} recorder error(s): please report it with the file"
    return line


# ---- legato replay / legato view -------------------------------------------------------------------
def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay",
        help="feed a recording's observations, references and noise through a bundle: "
        "per-chunk divergence from what the robot computed",
    )
    p.add_argument("file", help="recording (legato run --record FILE)")
    p.add_argument("--bundle", required=True, help="bundle to replay through (legato export)")
    p.add_argument("--profile", default=None, help="device profile (default: the recording's)")
    p.add_argument(
        "--graph",
        choices=("fused", "stepwise"),
        default=None,
        help="the bundle's fused graph or its prefix + flow-head graphs (default: the recording's)",
    )
    p.add_argument(
        "--mode",
        choices=("legato", "hard-prefix", "naive"),
        default=None,
        help="sampler mode (default: the recording's)",
    )
    p.add_argument(
        "--out", default=None, help="report folder: replay.json, replay.png (recorded vs replayed)"
    )
    p.add_argument("--force", action="store_true", help="replace an existing report at --out")
    p.add_argument(
        "--tolerance",
        type=float_in(0.0, 1e6),
        default=0.0,
        help="max abs divergence (rad) counted as agreement when naming the first divergence",
    )
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "view",
        help="a recording as a picture: frames, plans over joint traces, delay, "
        "latency, faults, underruns (PNG + HTML, or Rerun)",
    )
    p.add_argument("file", help="recording (legato run --record FILE)")
    p.add_argument("--out", required=True, help="folder: view.png, view.html (and view.rrd with --rerun)")
    p.add_argument("--rerun", action="store_true", help="also write a Rerun recording (rerun-sdk extra)")
    p.add_argument("--frames", type=int_in(1, 64), default=8, help="camera frames shown along the run")
    p.add_argument("--force", action="store_true", help="replace an existing view at --out")
    p.set_defaults(func=cmd_view)


def cmd_replay(args: argparse.Namespace) -> int:
    from edge.cli import eprint
    from edge.outputs import atomic_folder, check_target
    from edge.recording import read_recording
    from edge.replay import load_for_replay, print_report, replay, write_report

    if args.out:
        check_target(Path(args.out), "replay", replace=args.force)
    rec = read_recording(args.file)
    den, man, prof = load_for_replay(rec, args.bundle, args.profile, args.mode, args.graph)
    rep = replay(
        rec,
        den,
        tolerance=args.tolerance,
        progress=lambda i, n: eprint(f"legato replay: {i}/{n} chunks") if i % 50 == 0 else None,
    )
    rep["bundle"], rep["profile"] = str(man.path), prof.name
    print_report(rep)
    if args.out:
        with atomic_folder(args.out, "replay", replace=args.force) as tmp:
            write_report(tmp, rep, rec)
        eprint(f"legato replay: wrote {args.out} (replay.json, replay.png)")
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from edge.cli import eprint
    from edge.outputs import atomic_folder, check_target
    from edge.recording import read_recording
    from edge.view import write_view

    check_target(Path(args.out), "view", replace=args.force)
    rec = read_recording(args.file)
    with atomic_folder(args.out, "view", replace=args.force) as tmp:
        files = write_view(tmp, rec, frames=args.frames, rerun=args.rerun)
    eprint(f"legato view: wrote {args.out} ({', '.join(files)})")
    if rec.cut:
        eprint(f"legato view: the recording was cut off ({len(rec.chunks)} whole chunks read)")
    return 0


def dump(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode()

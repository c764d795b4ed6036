"""`legato servo ping | scan | calibrate`: the servos of a Feetech or Dynamixel bus, one-off.

- ``ping --port P --bus feetech --ids 1-6``: which of these ids answer, their model numbers and
  the error bits of their status packets; exit 1 when one does not answer.
- ``scan --port P --bus feetech``: every id (0..252, or ``--ids``) at each ``--baud``; exit 1
  when none answers.
- ``calibrate --port P --calibration FILE``: LeRobot's calibration procedure for a Feetech arm
  (SO-100 / SO-101; firmware_bridge/servo_tools.py), writing FILE in LeRobot's format byte for
  byte, so LeRobot and this stack read the same numbers. The motors are the profile's
  (``--profile``: ``[serial] ids`` and ``[robot] joints``, LeRobot's motor names), or ``--ids`` and
  ``--names``. Interactive: ENTER with the arm in the middle of its range, then ENTER when every
  joint has been through its range. ``--yes`` (the arm is in the middle now) and ``--record-s S``
  (record for S seconds) make it non-interactive. ``--from-file`` instead writes an existing
  LeRobot file's homing offsets and limits into the servos (a user who calibrated with LeRobot
  and replaced a servo, or another machine's arm).

Nothing here moves a motor: torque stays off (calibrate turns it off first). Files go through
edge/outputs.py: FILE is replaced only with ``--force`` and only if it is a calibration file.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from edge.cliargs import float_in, int_in
from edge.errors import UsageError

SO101_NAMES = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("servo", help="Feetech / Dynamixel servos: ping, scan, calibrate (LeRobot's file)")
    s = p.add_subparsers(dest="servo_command", metavar="{ping,scan,calibrate}")
    s.required = True

    def common(q: argparse.ArgumentParser, ids_default: str | None) -> None:
        q.add_argument("--port", required=True, help="serial device of the bus adapter, e.g. /dev/ttyACM0")
        q.add_argument("--bus", choices=("feetech", "dynamixel"), default="feetech", help="protocol")
        q.add_argument("--ids", default=ids_default, help="servo ids, e.g. 1-6 or 1,2,5 (0..252)")
        q.add_argument(
            "--timeout", type=float_in(0.001, 1.0), default=0.02, help="seconds to wait for each reply"
        )

    q = s.add_parser("ping", help="which of these ids answer: model numbers and error bits")
    common(q, "1-6")
    q.add_argument("--baud", type=int_in(9600, 4_000_000), default=1_000_000, help="bits/s")
    q.set_defaults(func=cmd_ping, command="servo")

    q = s.add_parser("scan", help="every id at each baud rate: which servos are on the bus")
    common(q, "0-252")
    q.add_argument("--baud", default="1000000", help="bits/s, one or several (comma separated)")
    q.set_defaults(func=cmd_scan, command="servo")

    q = s.add_parser("calibrate", help="LeRobot's calibration of a Feetech arm, in LeRobot's file format")
    q.add_argument("--port", required=True, help="serial device of the bus adapter, e.g. /dev/ttyACM0")
    q.add_argument(
        "--calibration",
        required=True,
        help="the LeRobot calibration JSON to write (or, with --from-file, to read)",
    )
    q.add_argument(
        "--profile",
        default=None,
        help="take ids and motor names from this profile ([serial] ids, [robot] joints)",
    )
    q.add_argument("--ids", default=None, help="servo ids in joint order (default 1-6 of an SO-101)")
    q.add_argument(
        "--names",
        default=None,
        help="LeRobot motor names in joint order (default the SO-101's, shoulder_pan .. gripper)",
    )
    q.add_argument("--baud", type=int_in(9600, 4_000_000), default=1_000_000, help="bits/s")
    q.add_argument(
        "--timeout", type=float_in(0.001, 1.0), default=0.05, help="seconds to wait for each reply"
    )
    q.add_argument(
        "--from-file",
        action="store_true",
        help="write FILE's homing offsets and limits into the servos instead of calibrating",
    )
    q.add_argument("--yes", action="store_true", help="the arm is in the middle of its range now: no prompt")
    q.add_argument(
        "--record-s",
        type=float_in(0.1, 600.0),
        default=None,
        help="record the ranges for this many seconds instead of until ENTER",
    )
    q.add_argument("--force", action="store_true", help="replace an existing calibration FILE")
    q.set_defaults(func=cmd_calibrate, command="servo")


def _ids(text: str) -> tuple[int, ...]:
    from firmware_bridge.servo_emulator import parse_ids

    try:
        return parse_ids(text)
    except ValueError as e:
        raise UsageError(f"--ids: {e}") from None


def _wire(port: str, bus: str, baud: int) -> Any:
    from firmware_bridge.servo_dialects import dialect
    from firmware_bridge.servo_port import ServoPort
    from firmware_bridge.servo_wire import ServoWire

    return ServoWire(ServoPort(port, baud), dialect(bus), baud)  # PortError: missing, busy, permission


def cmd_ping(args: argparse.Namespace) -> int:
    from firmware_bridge.servo_tools import ping

    ids = _ids(args.ids)
    wire = _wire(args.port, args.bus, args.baud)
    try:
        found = ping(wire, ids, args.timeout)
    finally:
        wire.port.close()
    for sid in ids:
        print(found[sid].describe() if sid in found else f"id {sid:3d}: no reply")
    missing = [sid for sid in ids if sid not in found]
    if missing:
        print(
            f"legato: {len(missing)} of {len(ids)} servos did not answer on {args.port} at {args.baud} "
            f"bit/s: {missing} (wiring, power, id, baud rate?)",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    from firmware_bridge.servo_tools import ping

    ids = _ids(args.ids)
    try:
        bauds = [int(b) for b in str(args.baud).split(",")]
    except ValueError:
        raise UsageError(f"--baud {args.baud!r}: expected bits/s, e.g. 1000000 or 1000000,500000") from None
    total = 0
    for baud in bauds:
        wire = _wire(args.port, args.bus, baud)
        try:
            found = ping(wire, ids, args.timeout, attempts=1)
        finally:
            wire.port.close()
        print(f"{args.bus} at {baud} bit/s: {len(found)} servo{'s' if len(found) != 1 else ''}", flush=True)
        for reply in found.values():
            print("  " + reply.describe())
        total += len(found)
    if not total:
        print(
            f"legato: no servo answered on {args.port} (ids {ids[0]}..{ids[-1]}, {args.bus}, "
            f"{', '.join(map(str, bauds))} bit/s): wiring, power, protocol?",
            file=sys.stderr,
        )
        return 1
    return 0


def _motors(args: argparse.Namespace) -> tuple[tuple[int, ...], tuple[str, ...]]:
    if args.profile is not None:
        if args.ids or args.names:
            raise UsageError("give --profile or --ids/--names, not both")
        from edge.profiles import load_profile

        prof = load_profile(args.profile)
        if prof.serial.protocol != "feetech":
            raise UsageError(
                f"profile {prof.name}: [serial] protocol is {prof.serial.protocol!r}; calibrate "
                "is for Feetech arms (SO-100 / SO-101)"
            )
        return tuple(prof.serial.ids), tuple(prof.robot.joints)
    ids = _ids(args.ids or "1-6")
    names = tuple(n.strip() for n in args.names.split(",")) if args.names else SO101_NAMES
    if len(names) != len(ids) or not all(names) or len(set(names)) != len(names):
        raise UsageError(f"--names: one distinct motor name per id {list(ids)} needed, got {list(names)}")
    return ids, names


def is_calibration_file(path: Path) -> bool:
    """A LeRobot calibration JSON (what --force may replace; anything else never is)."""
    from firmware_bridge.calibration import Calibration

    try:
        Calibration.from_lerobot(path)
    except (OSError, ValueError, TypeError, UnicodeDecodeError):
        return False
    return True


class _Enter:
    """ENTER on ``stream``, waited for in a thread, so a recording loop can poll it."""

    def __init__(self, stream: TextIO) -> None:
        self._ev = threading.Event()
        self._stream = stream
        threading.Thread(target=self._wait, name="servo-enter", daemon=True).start()

    def _wait(self) -> None:
        self._stream.readline()
        self._ev.set()

    def __call__(self) -> bool:
        return self._ev.is_set()


def cmd_calibrate(args: argparse.Namespace) -> int:
    from edge.outputs import atomic_file, check_file_target
    from firmware_bridge.calibration import Calibration
    from firmware_bridge.errors import LinkError
    from firmware_bridge.servo_tools import FeetechCalibrator

    ids, names = _motors(args)
    path = Path(args.calibration).expanduser()
    if args.from_file:
        try:
            cal = Calibration.from_lerobot(path)
        except FileNotFoundError:
            raise UsageError(f"--calibration {path}: no such file") from None
        except (OSError, ValueError, TypeError, UnicodeDecodeError) as e:
            raise UsageError(f"--calibration {path}: not a LeRobot calibration ({e})") from None
        if set(cal.names) != set(names):
            raise UsageError(
                f"--calibration {path} names motors {list(cal.names)}; the arm has {list(names)}"
            )
        order = [cal.names.index(n) for n in names]
        cal = Calibration(tuple(cal.motors[i] for i in order), cal.ticks_per_rev, names)
        if cal.ids != ids:
            raise UsageError(
                f"--calibration {path} gives ids {list(cal.ids)} for {list(names)}; the arm's are {list(ids)}"
            )
    else:  # refuse a target we may not write before anything talks to the servos
        check_file_target(path, replace=args.force, what="calibration file", own=is_calibration_file)
    wire = _wire(args.port, "feetech", args.baud)
    try:
        cb = FeetechCalibrator(wire, ids, names, timeout_s=args.timeout)
        cb.prepare()  # torque off first: the arm goes limp (support it)
        if args.from_file:
            cb.write(cal)
            back = cb.read_back()
            want = [(m.homing_offset, m.range_min, m.range_max) for m in cal.motors]
            if back != want:
                raise LinkError(f"the servos hold {back} after writing {want}: EEPROM not written")
            print(f"wrote {path} into servos {list(ids)} (homing offsets and position limits, read back)")
            return 0
        if not args.yes:
            _prompt("Move the arm to the middle of its range of motion (torque is off), then press ENTER")
            sys.stdin.readline()
        homings = cb.half_turn_homings()
        full = ", ".join(cb.full_turn) or "none"
        stop: Callable[[], bool]
        if args.record_s is not None:
            end = time.monotonic() + args.record_s
            stop = lambda: time.monotonic() >= end  # noqa: E731
            _prompt(f"Move every joint except {full} through its whole range: recording {args.record_s:g} s")
        else:
            _prompt(f"Move every joint except {full} through its whole range, then press ENTER")
            stop = _Enter(sys.stdin)
        mins, maxes = cb.record_ranges(stop, _show(names) if sys.stderr.isatty() else None)
        cal = cb.calibration(homings, mins, maxes)
        cb.write(cal)
    finally:
        wire.port.close()
    atomic_file(
        path,
        cal.lerobot_json().encode(),
        replace=args.force,
        what="calibration file",
        own=is_calibration_file,
    )
    print(
        json.dumps(
            {
                "calibration": str(path),
                **{n: [m.range_min, m.range_max] for n, m in zip(names, cal.motors, strict=True)},
            }
        )
    )
    return 0


def _prompt(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _show(names: tuple[str, ...]) -> Callable[[list[int], list[int], list[int]], None]:
    last = [0.0]

    def show(mins: list[int], pos: list[int], maxes: list[int]) -> None:
        now = time.monotonic()
        if now - last[0] < 0.2:
            return
        last[0] = now
        row = "  ".join(f"{n} {lo}<{p}<{hi}" for n, lo, p, hi in zip(names, mins, pos, maxes, strict=True))
        print("\r" + row, end="", file=sys.stderr, flush=True)

    return show

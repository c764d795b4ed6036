"""`legato firmware ...`: run an emulated controller or servo bus, ping a controller.

``register(subparsers)`` adds the ``firmware`` command to the main CLI's subparsers; every leaf
sets ``func(args) -> int``. Module-level imports stay light (argparse only): the heavy modules
load when a command runs. ``python -m firmware_bridge.cli firmware ...`` works on its own.

Every known failure prints one line, ``legato: error: ...``, and exits 2 (``LEGATO_DEBUG=1``
re-raises it for the traceback); the errors name the flag and the path.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
from collections.abc import Callable


def _one_line_errors(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Known failures of a firmware command -> ``legato: error: ...`` and exit status 2."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        from firmware_bridge.errors import LinkError, TransportError

        try:
            return fn(args)
        except (ValueError, TransportError, LinkError) as exc:  # LinkPathError, PortError included
            if os.environ.get("LEGATO_DEBUG"):
                raise
            print(f"legato: error: {exc}", file=sys.stderr)
            return 2

    return run


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``firmware emulate`` and ``firmware ping`` to ``subparsers``."""
    fw = subparsers.add_parser("firmware", help="serial link to motor controllers (emulator, ping)")
    sub = fw.add_subparsers(dest="firmware_command", metavar="{emulate,ping}")
    sub.required = True

    emu = sub.add_parser("emulate", help="run an emulated motor controller or servo bus on a pseudo-terminal")
    emu.add_argument(
        "--joints",
        type=int,
        default=None,
        help="joints of the emulated controller (1..32; needed without --bus)",
    )
    emu.add_argument("--bus", choices=("feetech", "dynamixel"), default=None,
                     help="emulate a servo bus instead of the controller (needs --ids)")  # fmt: skip
    emu.add_argument("--ids", default=None, help="servo ids on the emulated bus, e.g. 1-6 or 1,2,5 (0..252)")
    emu.add_argument(
        "--calibration",
        default=None,
        help="a LeRobot calibration JSON the emulated servos hold (homing offsets, position limits), "
        "as an arm calibrated with it does; its ids are the bus's unless --ids",
    )
    emu.add_argument(
        "--rate-hz", type=float, default=1000.0, help="control tick rate, Hz (1..20000; default 1000)"
    )
    emu.add_argument(
        "--telemetry-hz",
        type=int,
        default=50,
        help="telemetry rate until the host sets one, Hz (1..rate; default 50)",
    )
    emu.add_argument(
        "--watchdog-ms",
        type=int,
        default=100,
        help="watchdog timeout until the host sets one (5..60000; default 100)",
    )
    emu.add_argument("--link", default=None,
                     help="also make this path a symlink to the pty (stable name); never replaces a file, "
                     "a folder or another live emulator's link")  # fmt: skip
    emu.add_argument(
        "--duration", type=float, default=0.0, help="stop after this many seconds (>= 0; default 0: until ^C)"
    )
    emu.add_argument("--unplug", action="append", default=[], metavar="AT:FOR", type=_window,
                     help="fault injection: pull the port AT seconds after start, plug it back FOR seconds "
                     "later (repeatable)")  # fmt: skip
    emu.add_argument("--silent", action="append", default=[], metavar="ID:AT:FOR", type=_silent_window,
                     help="fault injection (--bus): servo ID stops answering AT seconds after start, for FOR "
                     "seconds (repeatable)")  # fmt: skip
    emu.set_defaults(func=_one_line_errors(cmd_emulate))

    ping = sub.add_parser("ping", help="HELLO and time-sync round trips to a controller")
    ping.add_argument("--port", required=True, help="serial device, e.g. /dev/ttyACM0 or a pty")
    ping.add_argument("--baud", type=int, default=1_000_000, help="bits/s (default 1000000; > 0)")
    ping.add_argument("--count", type=int, default=10, help="time-sync exchanges (default 10; >= 0)")
    ping.add_argument("--timeout", type=float, default=1.0,
                      help="seconds to wait for the port and for each reply (default 1.0; > 0)")  # fmt: skip
    ping.set_defaults(func=_one_line_errors(cmd_ping))


def _window(text: str) -> tuple[float, float]:
    """``AT:FOR`` seconds, both finite and >= 0."""
    try:
        at, dur = (float(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected AT:FOR in seconds, e.g. 2.5:1, got {text!r}") from None
    if not (math.isfinite(at) and math.isfinite(dur) and at >= 0 and dur >= 0):
        raise argparse.ArgumentTypeError(f"AT and FOR must be seconds >= 0, got {text!r}")
    return at, dur


def _silent_window(text: str) -> tuple[int, float, float]:
    """``ID:AT:FOR``: a servo id (0..252) and a window."""
    sid, _, rest = text.partition(":")
    try:
        i = int(sid)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ID:AT:FOR, e.g. 2:5:1, got {text!r}") from None
    if not 0 <= i <= 252:
        raise argparse.ArgumentTypeError(f"servo id {i} is outside 0..252")
    return (i, *_window(rest))


def _inject(emu: object, unplug: list[tuple[float, float]], silent: list[tuple[int, float, float]]) -> list:
    """Timers that pull and plug back the port, and silence servos, on schedule (from now)."""
    import threading

    def timer(at: float, fn: object, *a: object) -> threading.Timer:
        t = threading.Timer(at, fn, a)  # type: ignore[arg-type]
        t.daemon = True
        t.start()
        return t

    timers = []
    for at, dur in unplug:
        timers += [timer(at, emu.unplug), timer(at + dur, emu.replug)]  # type: ignore[attr-defined]
    for sid, at, dur in silent:
        timers += [timer(at, emu.set_silent, sid, True), timer(at + dur, emu.set_silent, sid, False)]  # type: ignore[attr-defined]
    return timers


def _serve(ctrl: object, stop_after: float, banner: str) -> None:
    """Print the port (the first stdout line: scripts read it), then run until ^C, SIGTERM or
    ``stop_after`` seconds; always close."""
    import signal
    import threading

    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        print(ctrl.port, flush=True)  # type: ignore[attr-defined]
        print(banner, file=sys.stderr)
        stop.wait(stop_after if stop_after > 0 else None)
    except KeyboardInterrupt:
        pass  # ^C is the normal way to stop
    finally:
        ctrl.close()  # type: ignore[attr-defined]
        signal.signal(signal.SIGTERM, previous)


def cmd_emulate(args: argparse.Namespace) -> int:
    if not (math.isfinite(args.duration) and args.duration >= 0):
        raise ValueError(f"--duration must be >= 0 seconds, got {args.duration}")
    if args.bus is not None:
        return _emulate_bus(args)
    if args.ids is not None:
        raise ValueError("--ids needs --bus feetech|dynamixel")
    if args.joints is None:
        raise ValueError("give --joints N (an emulated controller) or --bus feetech|dynamixel --ids 1-6")
    from firmware_bridge.emulator import EmulatedController, EmulatorConfig, describe

    try:
        cfg = EmulatorConfig(
            args.joints, tick_hz=args.rate_hz, telemetry_hz=args.telemetry_hz, watchdog_ms=args.watchdog_ms
        )
    except ValueError as exc:
        raise ValueError(f"firmware emulate: {exc}") from None
    if args.silent:
        raise ValueError("--silent needs --bus (servos answer one by one; the controller answers as one)")
    ctrl = EmulatedController(cfg, link_path=args.link).start()
    timers = _inject(ctrl, args.unplug, [])
    _serve(
        ctrl,
        args.duration,
        f"emulating {args.joints} joints at {args.rate_hz:g} Hz on {ctrl.port}; ^C to stop",
    )
    for t in timers:
        t.cancel()
    print(describe(ctrl), file=sys.stderr)
    return 0


def _emulate_bus(args: argparse.Namespace) -> int:
    from firmware_bridge.servo_emulator import EmulatedServoBus, ServoEmulatorConfig, parse_ids

    cal = None
    if args.calibration is not None:
        from firmware_bridge.calibration import Calibration

        try:
            cal = Calibration.from_lerobot(os.path.expanduser(args.calibration))
        except FileNotFoundError:
            raise ValueError(f"--calibration {args.calibration}: no such file") from None
        except (OSError, ValueError, TypeError, UnicodeDecodeError) as exc:
            raise ValueError(f"--calibration {args.calibration}: not a LeRobot calibration ({exc})") from None
    if args.ids is None and cal is None:
        raise ValueError(f"--bus {args.bus} needs --ids, e.g. --ids 1-6 (or --calibration FILE)")
    if args.joints is not None:
        raise ValueError("--joints is for the emulated controller; a servo bus has one joint per --ids entry")
    ids = parse_ids(args.ids) if args.ids is not None else tuple(sorted(cal.ids))  # type: ignore[union-attr]
    cfg = ServoEmulatorConfig(args.bus, ids)
    unknown = [sid for sid, _, _ in args.silent if sid not in cfg.ids]
    if unknown:
        raise ValueError(f"--silent names servo {unknown[0]}, not one of --ids {list(cfg.ids)}")
    bus = EmulatedServoBus(cfg, link_path=args.link)
    try:
        if cal is not None:
            bus.load_calibration(cal)  # ValueError: an id the bus does not have
    except BaseException:
        bus.close()
        raise
    bus.start()
    timers = _inject(bus, args.unplug, args.silent)
    _serve(bus, args.duration, f"emulating {args.bus} servos {list(cfg.ids)} on {bus.port}; ^C to stop")
    for t in timers:
        t.cancel()
    print(f"replies={bus.replies}", file=sys.stderr)
    return 0


def cmd_ping(args: argparse.Namespace) -> int:
    import threading
    import time

    from firmware_bridge.config import LinkConfig
    from firmware_bridge.errors import LinkError
    from firmware_bridge.link import SerialLink
    from firmware_bridge.messages import Capabilities, Frame, Hello, TimeSyncRequest, TimeSyncResponse
    from firmware_bridge.timesync import ClockSync

    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise ValueError(f"--timeout must be a number of seconds > 0, got {args.timeout}")
    if args.count < 0:
        raise ValueError(f"--count must be >= 0, got {args.count}")
    if args.baud <= 0:
        raise ValueError(f"--baud must be > 0, got {args.baud}")
    from firmware_bridge.portcheck import check_port

    check_port(args.port)  # missing, busy (naming the holder), not a tty, not permitted: PortError
    caps: list[Capabilities] = []
    got = threading.Event()
    sync = ClockSync()
    rtts: list[float] = []

    def on_frame(frame: Frame, now: float) -> None:
        m = frame.msg
        if isinstance(m, Capabilities):
            caps.append(m)
            got.set()
        elif isinstance(m, TimeSyncResponse):
            t4 = int(now * 1e6)
            sync.add(m.t1_us, m.t2_us, m.t3_us, t4)
            rtts.append((t4 - m.t1_us) / 1e3)
            got.set()

    link = SerialLink(LinkConfig(args.port, args.baud), on_frame=on_frame)
    try:
        if not link.start(wait_s=args.timeout):
            check_port(args.port)  # taken or gone since the check: say which
            raise LinkError(f"cannot open {args.port} within {args.timeout} s")
        got.clear()
        link.send(Hello())
        if not got.wait(args.timeout) or not caps:
            raise LinkError(f"no CAPABILITIES reply from {args.port} within --timeout {args.timeout} s "
                            "(not a legato controller, wrong --baud, or a servo bus?)")  # fmt: skip
        c = caps[-1]
        print(f"{c.name.decode(errors='replace')}: protocol v{c.version}, {c.n_joints} joints, "
              f"tick {c.tick_hz} Hz, telemetry {c.telemetry_hz} Hz, watchdog {c.watchdog_ms} ms")  # fmt: skip
        for _ in range(args.count):
            got.clear()
            link.send(TimeSyncRequest(int(time.monotonic() * 1e6)))
            if not got.wait(args.timeout):
                print("time-sync reply lost", file=sys.stderr)
        est = sync.estimate
        if rtts and est is not None:
            rtts.sort()
            print(f"round trip min/median/max {rtts[0]:.3f}/{rtts[len(rtts) // 2]:.3f}/{rtts[-1]:.3f} ms; "
                  f"clock offset {est.offset_us / 1e3:+.3f} ms")  # fmt: skip
        return 0
    finally:
        link.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m firmware_bridge.cli")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

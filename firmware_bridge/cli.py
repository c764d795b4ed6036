"""`legato firmware ...`: run the emulated controller, ping a controller.

``register(subparsers)`` adds the ``firmware`` command to the main CLI's subparsers; every leaf
sets ``func(args) -> int``. Module-level imports stay light (argparse only): the heavy modules
load when a command runs. ``python -m firmware_bridge.cli firmware ...`` works on its own.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``firmware emulate`` and ``firmware ping`` to ``subparsers``."""
    fw = subparsers.add_parser("firmware", help="serial link to motor controllers (emulator, ping)")
    sub = fw.add_subparsers(dest="firmware_command", metavar="{emulate,ping}")
    sub.required = True

    emu = sub.add_parser("emulate", help="run an emulated motor controller on a pseudo-terminal")
    emu.add_argument("--joints", type=int, required=True, help="number of joints (1..32)")
    emu.add_argument("--rate-hz", type=float, default=1000.0, help="control tick rate (default 1000)")
    emu.add_argument("--telemetry-hz", type=int, default=250, help="telemetry rate until the host sets one")
    emu.add_argument("--watchdog-ms", type=int, default=100, help="watchdog timeout until the host sets one")
    emu.add_argument("--link", default=None, help="also make this path a symlink to the pty (stable name)")
    emu.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: until ^C)")
    emu.set_defaults(func=cmd_emulate)

    ping = sub.add_parser("ping", help="HELLO and time-sync round trips to a controller")
    ping.add_argument("--port", required=True, help="serial device, e.g. /dev/ttyACM0 or a pty")
    ping.add_argument("--baud", type=int, default=1_000_000)
    ping.add_argument("--count", type=int, default=10, help="time-sync exchanges")
    ping.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for the port, each reply")
    ping.set_defaults(func=cmd_ping)


def cmd_emulate(args: argparse.Namespace) -> int:
    import signal
    import threading

    from firmware_bridge.emulator import EmulatedController, EmulatorConfig, describe

    try:
        cfg = EmulatorConfig(
            args.joints, tick_hz=args.rate_hz, telemetry_hz=args.telemetry_hz, watchdog_ms=args.watchdog_ms
        )
    except ValueError as exc:
        print(f"legato firmware emulate: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ctrl = EmulatedController(cfg, link_path=args.link).start()
    try:
        print(ctrl.port, flush=True)  # the first stdout line is the port: scripts read it
        msg = f"emulating {args.joints} joints at {args.rate_hz:g} Hz on {ctrl.port}; ^C to stop"
        print(msg, file=sys.stderr)
        stop.wait(args.duration if args.duration > 0 else None)
    except KeyboardInterrupt:
        pass  # ^C is the normal way to stop
    finally:
        ctrl.close()
        signal.signal(signal.SIGTERM, previous)
    print(describe(ctrl), file=sys.stderr)
    return 0


def cmd_ping(args: argparse.Namespace) -> int:
    import threading
    import time

    from firmware_bridge.config import LinkConfig
    from firmware_bridge.errors import LinkError
    from firmware_bridge.link import SerialLink
    from firmware_bridge.messages import Capabilities, Frame, Hello, TimeSyncRequest, TimeSyncResponse
    from firmware_bridge.timesync import ClockSync

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
            print(f"cannot open {args.port}", file=sys.stderr)
            return 1
        got.clear()
        link.send(Hello())
        if not got.wait(args.timeout) or not caps:
            print(f"no CAPABILITIES reply from {args.port} within {args.timeout} s", file=sys.stderr)
            return 1
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
    except LinkError as exc:
        print(f"ping failed: {exc}", file=sys.stderr)
        return 1
    finally:
        link.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m firmware_bridge.cli")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

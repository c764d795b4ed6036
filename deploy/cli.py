"""`legato flash`, `legato service`, `legato doctor`: register(subparsers) for legato/cli.py.

Imports nothing heavy at module level (argparse and edge.cliargs only): each command imports
its module when it runs, so all three work with the core install (no torch) on Python 3.10.
"""

from __future__ import annotations

import argparse

from edge.cliargs import int_in


def _lazy_demo(a: argparse.Namespace) -> int:
    from deploy.demo import run

    return run(a)


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="the whole robot stack without a robot: bundle, emulated controller, simulator, summary",
        description="Runs the committed reference bundle through `legato run --sim` (onnxruntime on the CPU, "
        "the emulated motor controller on a pseudo-terminal, the simulator's camera) for a few episodes, "
        "then prints success with its 95 % interval, smoothness, delay, underruns and a latency table, "
        "and writes plots and a Perfetto trace (make demo).",
    )
    from deploy.demo import add_arguments

    add_arguments(demo)
    demo.set_defaults(func=_lazy_demo)
    f = subparsers.add_parser(
        "flash",
        help="put a bundle on targets (folders or ssh://user@host[:port]/path), switch atomically",
        description="Verify a bundle, copy what each target lacks, check every sha256 there, build TensorRT "
        "engines on the device when the profile asks, and switch DEST/current atomically "
        "(DEST/previous keeps the one before). Several targets are flashed in parallel.",
    )
    f.add_argument("--bundle", help="bundle folder (legato export)")
    f.add_argument("--profile", help="device profile name or .toml (legato profiles)")
    f.add_argument(
        "--target",
        action="append",
        required=True,
        metavar="DEST",
        help="a folder, or ssh://[user@]host[:port]/path (~/path: the login's home); repeat for a fleet",
    )
    what = f.add_mutually_exclusive_group()
    what.add_argument("--rollback", action="store_true", help="make DEST/previous current again")
    what.add_argument(
        "--check", action="store_true", help="verify DEST/current on each target (every sha256)"
    )
    f.add_argument(
        "--target-python",
        default=None,
        help="the device's Python with legato-edge installed [default ~/legato-edge/.venv/bin/python]",
    )
    f.add_argument("--ssh-config", default=None, help="ssh config file (ssh -F); default: your ~/.ssh/config")
    f.add_argument(
        "--connect-timeout", type=int_in(1, 300), default=10, help="seconds to wait for a target to answer"
    )
    f.add_argument("--jobs", type=int_in(1, 64), default=8, help="targets flashed at once")
    f.add_argument(
        "--keep",
        type=int_in(0, 50),
        default=1,
        help="older releases kept on the target besides current and previous",
    )
    f.set_defaults(func=cmd_flash)

    s = subparsers.add_parser("service", help="the systemd unit and udev rule that run the bundle standalone")
    ssub = s.add_subparsers(dest="service_command", metavar="{install,status}")
    ssub.required = True
    i = ssub.add_parser("install", help="write the systemd unit and the udev rule (root), or --print them")
    i.add_argument("--profile", required=True, help="device profile name or .toml")
    i.add_argument(
        "--bundle-dir", default="/opt/legato", help="the flash target on this device (DIR/current runs)"
    )
    i.add_argument("--print", action="store_true", dest="print_only", help="show both files, install nothing")
    i.add_argument(
        "--user",
        default=None,
        help="non-root user the loop runs as (must exist) [default: the sudo caller; --print: a placeholder]",
    )
    i.add_argument("--name", default="legato", help="unit name")
    i.add_argument("--link", default="legato-arm", help="stable device name under /dev")
    i.add_argument("--usb-id", default=None, metavar="VID:PID[:SERIAL]", help="match a USB serial adapter")
    i.add_argument(
        "--camera", default="0", help="legato run --camera: V4L2 index, GStreamer pipeline or file"
    )
    i.add_argument("--legato", default=None, help="absolute path of legato on the device [default: this one]")
    i.add_argument("--root", default="/", help="write under this root instead of / (images, tests)")
    i.set_defaults(func=cmd_service_install)
    st = ssub.add_parser("status", help="is the service running, and its last status line")
    st.add_argument("--name", default="legato", help="unit name")
    st.set_defaults(func=cmd_service_status)

    d = subparsers.add_parser("doctor", help="check this device can run a bundle; each problem with its fix")
    d.add_argument(
        "--profile", default=None, help="profile to check against [default: the one flashed with DIR/current]"
    )
    d.add_argument(
        "--bundle-dir", default="/opt/legato", help="the flash target on this device (relative: from here)"
    )
    d.add_argument("--port", default=None, help="serial port to check [default: the profile's]")
    d.add_argument("--root", default="/", help="read /proc, /sys, /etc, /dev under this root (tests, images)")
    d.add_argument("--json", action="store_true", help="machine-readable checks and facts")
    d.set_defaults(func=cmd_doctor)


def cmd_flash(args: argparse.Namespace) -> int:
    from deploy import flash
    from deploy.targets import DEFAULT_TARGET_PYTHON, FlashError

    ssh_opts = {
        "ssh_config": args.ssh_config,
        "connect_timeout": args.connect_timeout,
        "python": args.target_python or DEFAULT_TARGET_PYTHON,
    }
    if args.rollback:
        return flash.run_all(args.target, flash.rollback_one, jobs=args.jobs, ssh_opts=ssh_opts)
    if args.check:
        return flash.run_all(args.target, flash.check_one, jobs=args.jobs, ssh_opts=ssh_opts)
    if not args.bundle or not args.profile:
        raise FlashError("flash needs --bundle and --profile (or --rollback / --check)")
    payload = flash.prepare(args.bundle, args.profile)
    return flash.run_all(
        args.target, lambda t: flash.flash_one(t, payload, keep=args.keep), jobs=args.jobs, ssh_opts=ssh_opts
    )


def cmd_service_install(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from deploy import service

    spec = service.spec_from_args(
        args.profile, args.bundle_dir, args.user, args.name, args.link, args.usb_id, args.legato, args.camera,
        print_only=args.print_only, root=Path(args.root), warn=lambda line: print(line, file=sys.stderr),
    )  # fmt: skip
    if args.print_only:
        unit, rule = service.unit_paths(Path("/"), spec)
        print(f"# {unit}\n{service.render_unit(spec)}\n# {rule}\n{service.render_rule(spec)}", end="")
        return 0
    for line in service.install(spec, Path(args.root)):
        print(line)
    return 0


def cmd_service_status(args: argparse.Namespace) -> int:
    from deploy import service

    rc, lines = service.status(args.name)
    for line in lines:
        print(line)
    return rc


def cmd_doctor(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from deploy import doctor

    env = doctor.Env(root=Path(args.root))
    prof = doctor.load_profile_for(env, args.profile, Path(args.bundle_dir))
    checks, facts = doctor.run_checks(env, prof, args.bundle_dir, args.port)
    if args.json:
        print(json.dumps({"checks": [c.to_dict() for c in checks], "facts": facts}, indent=1))
    else:
        for line in doctor.format_checks(checks):
            print(line)
    return 1 if any(c.status == doctor.FAIL for c in checks) else 0

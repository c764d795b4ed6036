"""`legato serve`: a bundle behind openpi's websocket protocol (docs/remote.md). Robot-safe imports:
the bundle, engines and websockets load inside the command; Ray only with --replicas."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import sys
import time
from typing import Any

from edge.cliargs import float_in, int_in

DEFAULT_PORT = 8000  # openpi's


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a bundle to robots over openpi's websocket protocol")
    p.add_argument("--bundle", required=True, help="bundle folder (legato export)")
    p.add_argument(
        "--profile", default="x86-cpu", help="device profile of this machine (its engines' backend)"
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (0.0.0.0 for every interface: then use --api-key-file)",
    )
    p.add_argument("--port", type=int_in(0, 65535), default=DEFAULT_PORT, help="TCP port (0: any free one)")
    p.add_argument(
        "--api-key-file",
        default=None,
        help="file whose first line is the key clients must send (Authorization: Api-Key KEY)",
    )
    p.add_argument(
        "--mode",
        choices=("legato", "hard-prefix", "naive"),
        default=None,
        help="sampler mode (default: the one the bundle's model was trained for)",
    )
    p.add_argument(
        "--graph",
        choices=("fused", "stepwise"),
        default=None,
        help="fused: the bundle's one-call graph; stepwise: prefix + N flow-head calls, per-step timings "
        "(default: the profile's [control] graph)",
    )
    p.add_argument(
        "--replicas",
        type=int_in(1, 64),
        default=1,
        help="K > 1: K replicas behind Ray Serve's proxy (pip install 'legato-edge[serve]')",
    )
    p.add_argument(
        "--ray-cpus",
        type=int_in(1, 1024),
        default=None,
        help="--replicas: CPUs the local Ray instance may use (default: K + 1)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="--replicas: join this Ray cluster (ray start on each GPU machine) instead of a local one",
    )
    p.add_argument("--max-sessions", type=int_in(1, 10_000), default=64, help="open sessions at most")
    p.add_argument(
        "--max-message-kb",
        type=int_in(1, 1 << 20),
        default=None,
        help="largest request accepted (default: 1 MiB or 4x the largest valid request)",
    )
    p.add_argument("--seed", type=int_in(0, 2**31 - 1), default=0, help="noise for requests that send none")
    p.add_argument(
        "--delay-ms",
        type=float_in(0.0, 60_000.0),
        default=0.0,
        help="hold every reply back this long (what-ifs: a slow server)",
    )
    p.add_argument("--quiet", action="store_true", help="no status line")
    p.set_defaults(func=cmd_serve)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def eprint(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_service(args: argparse.Namespace) -> Any:
    from edge.assembly import load
    from edge.remote.service import PolicyService, read_api_key

    key = read_api_key(args.api_key_file)
    fused = None if args.graph is None else args.graph == "fused"
    man, prof, den = load(args.bundle, args.profile, args.mode, fused)
    limit = args.max_message_kb * 1024 if args.max_message_kb else None
    return PolicyService(
        man, prof, den, api_key=key, max_message=limit, seed=args.seed, delay_s=args.delay_ms / 1000.0
    )


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import msgpack  # noqa: F401
        import websockets  # noqa: F401
    except ImportError as e:
        from edge.errors import LegatoError

        raise LegatoError(f"legato serve needs {e.name}: pip install 'legato-edge'") from None
    if not _loopback(args.host) and args.api_key_file is None:
        eprint(
            f"legato serve: warning: --host {args.host} accepts any client on the network "
            "without --api-key-file"
        )
    if args.replicas > 1:
        from edge.remote.replicas import serve_replicas

        return serve_replicas(args)
    service = build_service(args)
    from edge.remote.server import serve

    spec = service.den.spec

    def ready(host: str, port: int) -> None:
        eprint(
            f"legato serve: {service.man.name} ({service.den.mode}, H {spec.horizon}, a {spec.action_dim}, "
            f"{service.prof.name}) on ws://{host}:{port} (GET /healthz); Ctrl-C stops"
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for s in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(s, stop.set)
        status = None if args.quiet else asyncio.create_task(_status(service, stop))
        try:
            await serve(service, args.host, args.port, stop, ready, args.max_sessions)
        finally:
            if status is not None:
                status.cancel()

    try:
        asyncio.run(main())
    except OSError as e:
        from edge.errors import LegatoError

        raise LegatoError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    finally:
        service.close()
    st = service.stats()
    eprint(
        f"legato serve: stopped after {st['sessions_total']} sessions, {st['requests']} chunks, "
        f"{st['refused']} refused, {st['failed']} failed"
    )
    return 0


async def _status(service: Any, stop: asyncio.Event, every_s: float = 10.0) -> None:
    last, t_last = 0, time.monotonic()
    while not stop.is_set():
        await asyncio.sleep(every_s)
        st, now = service.stats(), time.monotonic()
        rate = (st["requests"] - last) / max(now - t_last, 1e-9)
        last, t_last = st["requests"], now
        eprint(
            f"legato serve: {st['sessions_open']} sessions, {rate:.1f} chunks/s, {st['requests']} chunks, "
            f"{st['refused']} refused, {st['failed']} failed"
        )

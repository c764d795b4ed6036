"""`legato serve --replicas K`: the same policy service as a Ray Serve deployment of K replicas
behind Ray Serve's HTTP proxy (pip install 'legato-edge[serve]'; docs/remote.md).

Each replica is one Ray actor (a process) holding its own PolicyService (runtime.load: the same
engines, profile and checks as `legato serve`), exposed through a FastAPI ingress: ``/`` is the
websocket session (edge.remote.service.run_session: the same protocol, byte for byte), ``/healthz``
and ``/stats`` as in the single-process server. Ray Serve's proxy routes each websocket connection
to one replica for its whole life, so a session sticks to its replica; the continuation state
travels in every request, so a robot that reconnects to another replica loses nothing.

Why Ray Serve and not Triton (nvidia-pytriton): the protocol is openpi's websocket; Ray Serve's
proxy carries websockets to Python replicas unchanged, Triton's front ends are HTTP/gRPC
inference calls, so Triton would need a websocket bridge of our own in front of it (a home-made
pool by another name) and our sampler (numpy between engine calls) as a Python backend anyway.

Ray here is kept small: a local instance with ``num_cpus`` = K + 1 by default (one per replica, the
proxy takes none), no dashboard, an 80 MB object store (its minimum); a GPU profile gives each replica
``1 / K`` of the GPU (``num_gpus``), so K replicas share one workstation GPU.
"""

# No `from __future__ import annotations` here: FastAPI reads the route methods' annotations
# (WebSocket, imported inside build_app) as objects; as strings it could not resolve them and would
# take the websocket for a query parameter (a 1008 close on every connect).
import argparse
import signal
import sys
import threading
from typing import Any

from edge.errors import LegatoError


def _import_serve() -> Any:
    try:
        from ray import serve
    except ImportError:
        raise LegatoError("--replicas needs Ray Serve: pip install 'legato-edge[serve]'") from None
    return serve


class _StarletteConnection:
    """Starlette's WebSocket (what Ray Serve's proxy hands a replica) as service.Connection."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def recv(self) -> bytes | str | None:
        msg = await self.ws.receive()
        if msg["type"] == "websocket.disconnect":
            return None
        if msg.get("bytes") is not None:
            return bytes(msg["bytes"])
        return str(msg.get("text", ""))

    async def send(self, data: bytes | str) -> None:
        if isinstance(data, bytes):
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_text(data)

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, reason)


def build_app(options: dict[str, Any], replicas: int, gpus_per_replica: float) -> Any:
    """The Ray Serve application: ``options`` are the `legato serve` arguments each replica needs
    (bundle, profile, mode, graph, api_key_file, max_message_kb, seed, delay_ms, max_sessions)."""
    serve = _import_serve()
    from fastapi import FastAPI, WebSocket
    from starlette.responses import Response

    app = FastAPI()

    @serve.deployment(
        num_replicas=replicas,
        max_ongoing_requests=int(options["max_sessions"]),
        ray_actor_options={"num_cpus": 1, "num_gpus": gpus_per_replica},
    )
    @serve.ingress(app)
    class LegatoReplica:
        def __init__(self) -> None:
            from edge.remote.cli import build_service

            self.service = build_service(argparse.Namespace(**options))
            self.max_sessions = int(options["max_sessions"])

        def _http(self, path: str, auth: str | None) -> Response | None:
            from edge.remote.server import http_reply

            r = http_reply(self.service, path, auth, self.max_sessions)
            if r is None:
                return None
            status, ctype, body = r
            return Response(body, status_code=status, media_type=ctype)

        @app.get("/healthz")
        def healthz(self) -> Response:
            r = self._http("/healthz", None)
            assert r is not None
            return r

        @app.get("/stats")
        def stats(self) -> Response:
            r = self._http("/stats", None)
            assert r is not None
            return r

        @app.websocket("/")
        async def session(self, websocket: WebSocket) -> None:
            from edge.remote.service import run_session

            denial = self._http("/", websocket.headers.get("authorization"))
            if denial is not None:  # 401 / 503 with the body, where the proxy passes denials on
                try:
                    await websocket.send_denial_response(denial)
                except RuntimeError:  # no denial extension: an HTTP 403 without the line
                    await websocket.close(1008)
                return
            await websocket.accept()
            # in the worker thread: this event loop also carries Ray's own traffic
            await run_session(_StarletteConnection(websocket), self.service, inline=False)

    return LegatoReplica.bind()


def serve_replicas(args: argparse.Namespace) -> int:
    """Start a local Ray instance, deploy K replicas, serve until SIGINT / SIGTERM."""
    serve = _import_serve()
    import ray
    from ray.serve.config import HTTPOptions

    from edge.profiles import load_profile
    from edge.remote.cli import eprint
    from edge.remote.service import read_api_key

    read_api_key(args.api_key_file)  # a bad key file is one line before Ray starts
    prof = load_profile(args.profile)
    k = args.replicas
    eng = prof.engine("flow_head")
    gpu = eng.backend == "tensorrt" or any("CUDA" in p or "Tensorrt" in p for p in eng.providers)
    if args.port == 0:
        raise LegatoError("--replicas needs a fixed --port (Ray Serve's proxy does not pick one)")
    from pathlib import Path

    # replicas are other processes with their own working directory: absolute paths
    profile = str(Path(args.profile).resolve()) if Path(args.profile).suffix == ".toml" else args.profile
    key_file = str(Path(args.api_key_file).resolve()) if args.api_key_file else None
    options = {
        "bundle": str(Path(args.bundle).resolve()),
        "profile": profile,
        "mode": args.mode,
        "graph": args.graph,
        "api_key_file": key_file,
        "max_message_kb": args.max_message_kb,
        "seed": args.seed,
        "delay_ms": args.delay_ms,
        "max_sessions": args.max_sessions,
    }
    # Ray's own services on loopback only
    if (
        args.ray_address
    ):  # a cluster of GPU machines someone started (docs/remote.md): replicas spread over it
        ray.init(address=args.ray_address, configure_logging=False, log_to_driver=False)
    else:
        ray.init(
            num_cpus=args.ray_cpus or k + 1,
            num_gpus=1 if gpu else 0,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            object_store_memory=80 * 1024 * 1024,
            configure_logging=False,
            log_to_driver=False,
        )
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        serve.start(http_options=HTTPOptions(host=args.host, port=args.port))
        serve.run(build_app(options, k, 1.0 / k if gpu else 0.0), name="legato", route_prefix="/")
        eprint(
            f"legato serve: {k} replicas of {args.bundle} ({args.profile}) on Ray Serve, "
            f"on ws://{args.host}:{args.port} (GET /healthz); Ctrl-C stops"
        )
        while not stop.wait(0.5):
            pass
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    eprint("legato serve: replicas stopped")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: legato serve --replicas K")

"""`legato serve` on the ``websockets`` package: openpi's server, byte for byte where it matters.

As openpi's WebsocketPolicyServer: one websocket per session on any path, no compression, the
metadata map first, then msgpack request -> msgpack reply; ``GET /healthz`` answers 200 "OK".
Safer by default: it binds 127.0.0.1 unless told otherwise, bounds every message
(``max_size``: a larger frame is closed with 1009 before it is read), checks the API key in the
handshake (``Authorization: Api-Key KEY``, what openpi-client sends; 401 without it), caps the
number of open sessions (503 past it), and answers a bad request with a line and a close
instead of ending the process. ``GET /stats`` returns the counters as JSON.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
from collections.abc import Callable
from typing import Any

from edge.remote.service import PolicyService, run_session

log = logging.getLogger("legato.serve")


class _WsConnection:
    """websockets' ServerConnection as edge.remote.service.Connection."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    async def recv(self) -> bytes | str | None:
        from websockets.exceptions import ConnectionClosed

        try:
            return await self.ws.recv()
        except ConnectionClosed:
            return None

    async def send(self, data: bytes | str) -> None:
        await self.ws.send(data)

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, reason)


def http_reply(
    service: PolicyService, path: str, auth: str | None, max_sessions: int
) -> tuple[int, str, str] | None:
    """The HTTP answer to a request before the websocket upgrade (status, content type, body), or
    None to go on with the upgrade. Shared by both transports."""
    if path == "/healthz":
        return 200, "text/plain", "OK\n"
    if path == "/stats":
        return 200, "application/json", json.dumps(service.stats()) + "\n"
    if not service.authorized(auth):
        return (
            401,
            "text/plain",
            "legato serve: missing or wrong API key (send 'Authorization: Api-Key KEY')\n",
        )
    if service.sessions_open >= max_sessions:
        return 503, "text/plain", f"legato serve: {max_sessions} sessions open, no room for another\n"
    return None


async def serve(
    service: PolicyService,
    host: str,
    port: int,
    stop: asyncio.Event,
    ready: Callable[[str, int], None] | None = None,
    max_sessions: int = 64,
) -> None:
    """Serve until ``stop`` is set; ``ready(host, port)`` once listening (port 0: the one chosen)."""
    from websockets.asyncio.server import serve as ws_serve
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    def process_request(connection: Any, request: Any) -> Any:
        r = http_reply(
            service, request.path.split("?", 1)[0], request.headers.get("Authorization"), max_sessions
        )
        if r is None:
            return None
        status, ctype, body = r
        raw = body.encode()
        headers = Headers(
            [
                ("Content-Type", f"{ctype}; charset=utf-8"),
                ("Content-Length", str(len(raw))),
                ("Connection", "close"),
            ]
        )
        return Response(status, http.HTTPStatus(status).phrase, headers, raw)

    async def handler(ws: Any) -> None:
        await run_session(_WsConnection(ws), service)

    async with ws_serve(
        handler,
        host,
        port,
        compression=None,
        max_size=service.max_message,
        process_request=process_request,
        ping_interval=20,
        ping_timeout=20,
        open_timeout=10,
        close_timeout=2,
    ) as server:
        sock = next(iter(server.sockets))
        bound_host, bound_port = sock.getsockname()[:2]
        if ready is not None:
            ready(str(bound_host), int(bound_port))
        await stop.wait()

"""A blocking websocket client driven in the caller's thread: websockets' sans-I/O
``ClientProtocol`` on a plain socket, with a timeout on every wait.

Why not ``websockets.sync.client``: it reads the socket in a thread of its own and hands each
message to the caller through a queue, so every reply wakes two threads that have slept through
the server's inference (on a VM's vCPU each such wake costs 0.1-0.3 ms; bench/bench_remote.py
overhead). Here the thread that waits for the reply is the one that reads it. The protocol
(framing, masking, ping -> pong, the close handshake, size limits) stays websockets'.

Nothing reads between two requests: :meth:`alive`, called before each, answers the pings that
came meanwhile and tells whether the peer has closed (a server that timed out an idle robot),
so a closed link is renewed before the request instead of losing it.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri


class LinkClosed(ConnectionError):
    """The peer closed the websocket or the TCP connection (the reason in one line)."""


class WsLink:
    """One websocket connection to ``url`` (ws:// or wss://); every method blocks the caller."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        max_size: int,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Connect and complete the handshake within ``timeout_s``; a refused upgrade raises
        websockets' ``InvalidStatus`` (its ``response`` holds the status and body)."""
        uri = parse_uri(url)
        self._proto = ClientProtocol(uri, max_size=max_size)
        self.send_timeout_s = timeout_s  # a full socket buffer for this long: the link is gone
        deadline = time.monotonic() + timeout_s
        sock = socket.create_connection((uri.host, uri.port), timeout=timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a request is one write
            if uri.secure:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=uri.host)
            self._sock = sock
            request = self._proto.connect()
            for k, v in (headers or {}).items():
                request.headers[k] = v
            self._proto.send_request(request)
            self._flush()
            while self._proto.handshake_exc is None and self._proto.state is State.CONNECTING:
                self._read(deadline)
            if self._proto.handshake_exc is not None:
                raise self._proto.handshake_exc
        except BaseException:
            sock.close()
            raise
        self._parts: list[bytes] = []
        self._text = False
        # frames not yet returned (the server's first message may come with the handshake's answer)
        self._pending: list[Any] = [e for e in self._proto.events_received() if isinstance(e, Frame)]

    def send(self, data: bytes) -> None:
        """One binary message."""
        if self._proto.state is not State.OPEN:
            raise LinkClosed(self._why_closed())
        self._proto.send_binary(data)
        self._sock.settimeout(self.send_timeout_s)
        self._flush()

    def alive(self) -> bool:
        """Take in what has arrived, without waiting (pings are answered); False once the peer
        has closed the connection or the socket has failed."""
        try:
            self._sock.setblocking(False)
            try:
                while True:
                    data = self._sock.recv(1 << 16)
                    if not data:
                        self._proto.receive_eof()
                        break
                    self._proto.receive_data(data)
            except (BlockingIOError, ssl.SSLWantReadError):
                pass  # nothing more has arrived
            self._sock.settimeout(self.send_timeout_s)
            self._flush()
        except OSError:
            return False
        self._pending.extend(self._proto.events_received())
        return self._proto.state is State.OPEN

    def recv(self, timeout_s: float) -> bytes | str:
        """The next whole message (bytes for binary, str for text); ``TimeoutError`` when none
        completes within ``timeout_s`` (what has arrived of it is kept for the next call)."""
        deadline = time.monotonic() + timeout_s
        while True:
            while self._pending:
                msg = self._take(self._pending.pop(0))
                if msg is not None:
                    return msg
            if self._proto.state is State.CLOSED:
                raise LinkClosed(self._why_closed())
            self._read(deadline)
            self._pending.extend(self._proto.events_received())

    def close(self) -> None:
        """Send the close frame and release the socket (without waiting for the peer's); a
        thread blocked in :meth:`recv` wakes (shutdown, not just close, does that on Linux)."""
        try:
            if self._proto.state is State.OPEN:
                self._proto.send_close(1000)
                self._flush()
        except OSError:  # already gone: nothing to say goodbye to
            pass
        finally:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()

    # ---- internals ---------------------------------------------------------------------------
    def _take(self, frame: Any) -> bytes | str | None:
        """Assemble data frames into messages; control frames are the protocol's business."""
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            self._parts, self._text = [frame.data], frame.opcode is Opcode.TEXT
        elif frame.opcode is Opcode.CONT:
            self._parts.append(frame.data)
        else:
            return None  # ping (answered in _read), pong, close (seen as the state)
        if not frame.fin:
            return None
        data, self._parts = b"".join(self._parts), []
        return data.decode("utf-8", "replace") if self._text else data

    def _read(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no message in time")
        self._sock.settimeout(left)
        try:
            data = self._sock.recv(1 << 16)
        except TimeoutError:  # socket.timeout is its alias on 3.10+
            raise TimeoutError("no message in time") from None
        if data:
            self._proto.receive_data(data)
        else:
            self._proto.receive_eof()
        self._flush()  # pongs, the close reply
        if self._proto.parser_exc is not None and self._proto.state is not State.OPEN:
            raise LinkClosed(f"bad frame from the server ({self._proto.parser_exc})")

    def _flush(self) -> None:
        for chunk in self._proto.data_to_send():
            if chunk:
                self._sock.sendall(chunk)
            else:  # the protocol is done with the connection: half-close as it asks
                with contextlib.suppress(OSError):  # the peer is already gone
                    self._sock.shutdown(socket.SHUT_WR)

    def _why_closed(self) -> str:
        rcvd = self._proto.close_rcvd
        if rcvd is not None:
            why = f"{rcvd.code}: {rcvd.reason}" if rcvd.reason else str(rcvd.code)
            return f"the server closed the connection ({why})"
        return "the connection closed"

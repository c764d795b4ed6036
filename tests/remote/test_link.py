"""WsLink, the robot's websocket client driven in its own thread, against websockets' server:
whole messages out of fragments, a timeout that keeps what has arrived, pings answered between
requests, and a close seen before the next request."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from edge.remote.link import LinkClosed, WsLink


class Peer:
    """websockets' asyncio server in a thread, running ``handler(ws)`` per connection."""

    def __init__(self, handler, **serve_kw):
        from websockets.asyncio.server import serve

        self.port = 0
        self.connections = 0
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()

        async def counted(ws):
            self.connections += 1
            await handler(ws)

        async def main():
            async with serve(counted, "127.0.0.1", 0, compression=None, **serve_kw) as srv:
                self.port = next(iter(srv.sockets)).getsockname()[1]
                ready.set()
                await self._stop.wait()

        self._thread = threading.Thread(target=lambda: self._loop.run_until_complete(main()), daemon=True)
        self._thread.start()
        assert ready.wait(10)
        self.url = f"ws://127.0.0.1:{self.port}"

    def stop(self):
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def peers():
    made = []
    yield lambda handler, **kw: made.append(Peer(handler, **kw)) or made[-1]
    for p in made:
        p.stop()


def test_fragments_become_one_message_and_text_stays_text(peers):
    async def handler(ws):
        await ws.send(b"hello")  # the first message may share a segment with the handshake's answer
        async for msg in ws:
            await ws.send([msg[:3], msg[3:7], msg[7:]])  # an iterable: sent as fragments
            await ws.send("a line")

    link = WsLink(peers(handler).url, timeout_s=5, max_size=1 << 20)
    try:
        assert link.recv(5) == b"hello"
        link.send(b"0123456789" * 100)
        assert link.recv(5) == b"0123456789" * 100
        assert link.recv(5) == "a line"
    finally:
        link.close()


def test_a_timeout_keeps_what_has_arrived_and_the_late_message_comes_next(peers):
    async def handler(ws):
        async for msg in ws:
            await asyncio.sleep(0.3)
            await ws.send(msg)

    link = WsLink(peers(handler).url, timeout_s=5, max_size=1 << 20)
    try:
        link.send(b"first")
        with pytest.raises(TimeoutError):
            link.recv(0.05)
        link.send(b"second")
        assert link.recv(5) == b"first"
        assert link.recv(5) == b"second"
    finally:
        link.close()


def test_pings_between_requests_are_answered_and_an_idle_close_is_seen_before_sending(peers):
    async def echo(ws):
        async for msg in ws:
            await ws.send(msg)

    peer = peers(echo, ping_interval=0.1, ping_timeout=1.0)
    link = WsLink(peer.url, timeout_s=5, max_size=1 << 20)
    try:
        # each gap idle past a ping interval and far inside its timeout; all of them past the
        # timeout, so a client that never answered would have been closed
        for _ in range(12):
            time.sleep(0.15)
            assert link.alive()
            link.send(b"x")
            assert link.recv(5) == b"x"
        assert peer.connections == 1
    finally:
        link.close()

    async def close_soon(ws):
        await ws.close(1001, "going away")

    link = WsLink(peers(close_soon).url, timeout_s=5, max_size=1 << 20)
    deadline = time.monotonic() + 5
    while link.alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not link.alive()
    with pytest.raises(LinkClosed, match="1001: going away"):
        link.send(b"x")
    link.close()


def test_a_reply_over_the_limit_closes_the_link(peers):
    async def flood(ws):
        async for _ in ws:
            await ws.send(b"z" * 4096)

    link = WsLink(peers(flood).url, timeout_s=5, max_size=1024)
    try:
        link.send(b"x")
        with pytest.raises(LinkClosed):
            link.recv(5)
    finally:
        link.close()


def test_a_refused_upgrade_carries_the_status_and_body(peers):
    from websockets.exceptions import InvalidStatus

    def deny(connection, request):
        return connection.respond(401, "no key\n")

    async def never(ws):
        raise AssertionError("upgraded")

    with pytest.raises(InvalidStatus) as e:
        WsLink(peers(never, process_request=deny).url, timeout_s=5, max_size=1 << 20)
    assert e.value.response.status_code == 401 and e.value.response.body == b"no key\n"


def deaf_peer():
    """A server that completes the websocket handshake, then never reads or answers again (a
    host that hung): only the robot's own side can end a wait on it."""
    from websockets.server import ServerProtocol

    srv = socket.create_server(("127.0.0.1", 0))
    held = []

    def run():
        conn, _ = srv.accept()
        proto = ServerProtocol()
        while not (events := proto.events_received()):
            proto.receive_data(conn.recv(65536))
        proto.send_response(proto.accept(events[0]))
        for data in proto.data_to_send():
            conn.sendall(data)
        held.append(conn)

    threading.Thread(target=run, daemon=True).start()
    return f"ws://127.0.0.1:{srv.getsockname()[1]}", srv, held


def test_close_from_another_thread_wakes_a_reader_even_when_the_peer_is_hung():
    url, srv, held = deaf_peer()
    link = WsLink(url, timeout_s=5, max_size=1 << 20)
    link.send(b"x")
    errors = []

    def read():
        try:
            link.recv(30)
        except (OSError, TimeoutError) as e:
            errors.append(e)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.1)
    link.close()
    reader.join(10)
    try:
        assert not reader.is_alive() and errors and not isinstance(errors[0], TimeoutError)
    finally:
        srv.close()
        for c in held:
            c.close()

"""RemoteDenoiser against real and misbehaving servers: the chunk the local denoiser would make,
and every fault of the link as ChunkUnavailable (counted, one line) rather than a crash."""

from __future__ import annotations

import asyncio
import select
import threading

import numpy as np
import pytest
from remote_helpers import BUNDLE, ServerThread, make_service

from edge.errors import ChunkUnavailable, LegatoError
from edge.policy import ChunkRequest
from edge.remote.client import RemoteDenoiser, RemoteMismatch


def observation(rng, spec):
    h, w = spec.image_hw
    return (
        rng.integers(0, 255, (h, w, 3)).astype(np.uint8),
        rng.integers(0, 14, spec.max_tokens),
        rng.standard_normal(spec.state_dim).astype(np.float32),
    )


def test_remote_chunk_is_the_local_chunk_and_the_stages_add_up(server):
    from edge.assembly import load

    rng = np.random.default_rng(0)
    den = RemoteDenoiser(server.url)
    _, _, local = load(str(BUNDLE), "x86-cpu")
    try:
        assert den.spec == local.spec and den.mode == "legato"
        for tail, req in (
            (None, ChunkRequest(0, 8, 0)),
            (rng.standard_normal((8, 3)).astype(np.float32), ChunkRequest(2, 8, 4)),
        ):
            obs = observation(rng, den.spec)
            eps = rng.standard_normal((1, 16, 3)).astype(np.float32)
            den.set_observation(*obs)
            local.set_observation(*obs)
            np.testing.assert_array_equal(den.denoise(eps, tail, req), local.denoise(eps, tail, req))
        st = dict(zip(den.stage_names, den.stage_ns, strict=True))
        assert st["request"] + st["network"] + st["server"] + st["reply"] == st["chunk"]
        # (in one process the server's thread and this one share the GIL, so the split between the
        # stages is not a measurement here; bench/bench_remote.py measures it across processes)
        assert st["engines"] > 0 and min(st.values()) >= 0 and den.server_stages["engines"] > 0
    finally:
        den.close()


class ScriptedServer(ServerThread):
    """The real service's metadata and chunks, with per-request misbehaviour from ``script``:
    "ok", "late" (answer after ``late_s``), "garbage", "text", "drop" (close without a reply),
    "bye" (reply, then close the session as a server that times out an idle robot does)."""

    def __init__(self, service, script, late_s=0.35, port=0):
        from websockets.asyncio.server import serve

        self.service, self.script, self.port = service, list(script), port
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()

        async def handler(conn):
            await conn.send(service.meta_bytes)
            async for msg in conn:
                what = self.script.pop(0) if self.script else "ok"
                if what == "drop":
                    await conn.close()
                    return
                if what == "garbage":
                    await conn.send(b"\xc1\xc1 not msgpack")
                    continue
                if what == "text":
                    await conn.send("legato serve: internal error: engine fell over")
                    continue
                reply = await self._loop.run_in_executor(service.executor, service.infer, msg, 0.0, None)
                if what == "late":
                    await asyncio.sleep(late_s)
                await conn.send(reply)
                if what == "bye":
                    await conn.close(1001, "idle")
                    return

        async def main():
            async with serve(handler, "127.0.0.1", self.port, compression=None) as srv:
                self.port = next(iter(srv.sockets)).getsockname()[1]
                self._ready.set()
                await self._stop.wait()

        self.thread = threading.Thread(target=lambda: self._loop.run_until_complete(main()), daemon=True)
        self.thread.start()
        assert self._ready.wait(10)


def _chunk(den, rng):
    den.set_observation(*observation(rng, den.spec))
    return den.denoise(rng.standard_normal((1, 16, 3)).astype(np.float32), None, ChunkRequest(0, 8, 0))


def test_a_late_reply_is_given_up_then_dropped_as_stale():
    s = ScriptedServer(make_service(), ["late"])
    den = RemoteDenoiser(s.url, reply_timeout_s=0.2)
    rng = np.random.default_rng(1)
    try:
        with pytest.raises(ChunkUnavailable, match="no reply in 0.20 s"):
            _chunk(den, rng)
        den.reply_timeout_s = 10.0  # now wait: the late answer to chunk 0 arrives first and is dropped
        assert _chunk(den, rng).shape == (16, 3)
        assert (den.timeouts, den.stale_replies, den.chunks, den.disconnects) == (1, 1, 1, 0)
    finally:
        den.close()
        s.stop()


@pytest.mark.parametrize(
    ("what", "counter", "words"),
    [("garbage", "garbage_replies", "not a chunk reply"), ("text", "server_errors", "engine fell over")],
)
def test_garbage_or_an_error_line_is_one_line_then_the_link_is_renewed(what, counter, words):
    s = ScriptedServer(make_service(), [what, what])
    den = RemoteDenoiser(s.url, backoff_min_s=0.01)
    rng = np.random.default_rng(2)
    try:
        for _ in range(2):
            with pytest.raises(ChunkUnavailable, match=words):
                _chunk(den, rng)
        assert _chunk(den, rng).shape == (16, 3)
        assert getattr(den, counter) == 2 and den.reconnects == 2
        assert len(den.errors) == 1 and "\n" not in den.errors[0] and words in den.errors[0]  # one line
    finally:
        den.close()
        s.stop()


def test_a_session_the_server_closed_while_idle_is_renewed_before_the_next_request():
    s = ScriptedServer(make_service(), ["bye"])
    den = RemoteDenoiser(s.url)
    rng = np.random.default_rng(5)
    try:
        assert _chunk(den, rng).shape == (16, 3)
        # the close arrives while the robot executes its chunk (waited for, not slept on)
        assert select.select([den._ws._sock], [], [], 10)[0]
        assert _chunk(den, rng).shape == (16, 3)  # no ChunkUnavailable: nothing held for it
        assert (den.unavailable, den.disconnects, den.reconnects, den.chunks) == (0, 1, 1, 2)
    finally:
        den.close()
        s.stop()


def test_a_lost_server_is_retried_with_backoff_and_the_same_model_resumes():
    s = ScriptedServer(make_service(), ["drop"])
    port = s.port
    den = RemoteDenoiser(s.url, backoff_min_s=0.02, backoff_max_s=0.08)
    rng = np.random.default_rng(3)
    try:
        with pytest.raises(ChunkUnavailable, match="connection lost"):
            _chunk(den, rng)
        s.stop()
        waits = []
        for _ in range(4):
            with pytest.raises(ChunkUnavailable, match="not reachable"):
                _chunk(den, rng)
            waits.append(den._next_attempt)
        gaps = np.diff(waits)
        assert (gaps >= [0.02, 0.04, 0.08]).all()  # exponential, capped at backoff_max_s
        s = ScriptedServer(make_service(), [], port=port)
        assert _chunk(den, rng).shape == (16, 3)
        assert den.reconnects == 1 and den.disconnects == 1 and den.unavailable == 5
    finally:
        den.close()
        s.stop()


def test_a_server_back_with_another_model_stops_the_run():
    s = ScriptedServer(make_service(), ["drop"])
    port = s.port
    den = RemoteDenoiser(s.url, backoff_min_s=0.01)
    rng = np.random.default_rng(4)
    try:
        with pytest.raises(ChunkUnavailable):
            _chunk(den, rng)
        s.stop()
        other = make_service()
        other.meta["model"] = {**other.meta["model"], "method": "plain"}
        from edge.remote import wire

        other.meta_bytes = wire.packb(other.meta)
        s = ScriptedServer(other, [], port=port)
        with pytest.raises(RemoteMismatch, match="another model"):
            _chunk(den, rng)
    finally:
        den.close()
        s.stop()


def test_unreachable_server_and_wrong_key_are_one_line_at_start():
    s = ServerThread(make_service(api_key="k1"))
    try:
        with pytest.raises(LegatoError, match=r"HTTP 401: legato serve: missing or wrong API key"):
            RemoteDenoiser(s.url, api_key="k2")
        RemoteDenoiser(s.url, api_key="k1").close()
    finally:
        s.stop()
    with pytest.raises(LegatoError, match="cannot reach the policy server"):
        RemoteDenoiser(s.url, connect_timeout_s=0.5)
    with pytest.raises(LegatoError, match="expected ws://HOST:PORT"):
        RemoteDenoiser("http://127.0.0.1:8000")


def test_a_server_whose_policy_takes_what_a_robot_cannot_send_is_one_line_at_start():
    """A robot sends its cameras by name, the state and the instruction (ids or a prompt): a
    served policy that takes anything else (here a depth map) stops `legato run --remote` at the
    start, in one line, before any motor."""
    from edge.remote import wire

    service = make_service()
    depth = {"observation.depth": {"shape": [48, 64], "dtype": "<f4"}}
    service.meta["observation"] = dict(service.meta["observation"]) | depth
    service.meta_bytes = wire.packb(service.meta)
    s = ServerThread(service)
    try:
        words = r"the server expects observation .*observation\.depth.*a robot sends"
        with pytest.raises(RemoteMismatch, match=words) as e:
            RemoteDenoiser(s.url)
        assert "\n" not in str(e.value)
    finally:
        s.stop()


def test_a_served_policy_with_a_tokenizer_takes_the_task_as_openpis_prompt_or_as_ids():
    """The reference bundle carries a tokenizer: its server takes the instruction as token ids or
    as openpi's ``prompt`` string (one of the two, tokenized on the server), and both give the
    same chunk; both at once, or neither, is one line."""
    pytest.importorskip("tokenizers", reason="the language extra (tokenizers) is not installed")
    from edge.remote import protocol, wire
    from sim.language import tokenize

    service = make_service()
    obs_meta = service.meta["observation"]
    assert obs_meta["prompt"] == {"type": "text", "max_chars": 1000, "or": "observation.language.tokens"}
    assert obs_meta["observation.language.tokens"]["or"] == "prompt"
    assert service.meta["sim_token_ids"] is True and service.meta["cameras"][0]["key"] == "observation.image"
    rng = np.random.default_rng(0)
    base = {
        "observation.image": rng.integers(0, 255, (48, 64, 3), dtype=np.uint8),
        "observation.state": rng.normal(size=6).astype(np.float32),
    }
    task = "reach the red target"
    ids = tokenize(task, obs_meta["observation.language.tokens"]["shape"][0])
    leg = {"legato": {"noise": rng.normal(size=(16, 3)).astype(np.float32)}}
    a = wire.unpackb(service.infer(wire.packb({**base, "prompt": task, **leg}), 0.0, None), 1 << 24)
    by_ids = {**base, "observation.language.tokens": ids, **leg}
    b = wire.unpackb(service.infer(wire.packb(by_ids), 0.0, None), 1 << 24)
    np.testing.assert_array_equal(a["actions"], b["actions"])
    for bad, match in (({"prompt": task, "observation.language.tokens": ids}, "not both"),
                       ({}, "missing observation.language.tokens or prompt")):  # fmt: skip
        with pytest.raises(protocol.Refusal, match=match):
            service.infer(wire.packb({**base, **bad, **leg}), 0.0, None)

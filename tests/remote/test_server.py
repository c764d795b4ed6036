"""`legato serve` seen by a hand-written websocket client: the metadata handshake, /healthz, the
chunks, and every bad request refused with a reply while the other sessions go on."""

from __future__ import annotations

import http.client
import json
import time

import msgpack
import numpy as np
import pytest
from remote_helpers import BUNDLE, ServerThread, make_service
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from edge.remote import wire


def ws(url, **kw):
    return connect(url, compression=None, max_size=None, proxy=None, open_timeout=5, **kw)


def request_from(meta, rng, **legato):
    """A conforming request built from the metadata alone."""
    obs = {}
    for key, t in meta["observation"].items():
        if t.get("type") == "text":  # the task as text: where ids may go instead, the ids
            if "or" not in t:
                obs[key] = "reach the red target"
            continue
        dt = np.dtype(t["dtype"])
        lo, hi = t.get("range", (0, 255))
        obs[key] = (
            rng.integers(lo, hi + 1, t["shape"]) if dt.kind in "iu" else rng.standard_normal(t["shape"])
        ).astype(dt)
    if legato:
        obs["legato"] = legato
    return obs


def infer(conn, obs):
    conn.send(wire.packb(obs))
    return wire.unpackb(conn.recv(timeout=10), 1 << 24)


def get(port, path, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    return r.status, r.read().decode()


def test_healthz_and_stats(server):
    assert get(server.port, "/healthz") == (200, "OK\n")
    status, body = get(server.port, "/stats")
    assert status == 200 and json.loads(body)["sessions_open"] == 0


def test_metadata_describes_what_it_serves_and_a_request_built_from_it_gets_a_chunk(server):
    rng = np.random.default_rng(0)
    with ws(server.url) as c:
        meta = wire.unpackb(c.recv(timeout=5), 1 << 24)  # the server speaks first
        manifest = json.loads((BUNDLE / "manifest.json").read_text())
        pol = manifest["model"]["policy"]
        assert meta["protocol"] == "openpi-websocket"
        assert meta["observation"] == {
            "observation.image": {"shape": [*pol["image_hw"], 3], "dtype": "|u1"},
            "observation.state": {"shape": [pol["state_dim"]], "dtype": "<f4"},
            "observation.language.tokens": {
                "shape": [pol["max_tokens"]],
                "dtype": "<i8",
                "range": [0, pol["vocab_size"] - 1],
                "or": "prompt",  # the bundle carries a tokenizer: the task as text works too
            },
            "prompt": {"type": "text", "max_chars": 1000, "or": "observation.language.tokens"},
        }
        assert meta["prompt"] == {"key": "prompt", "template": None}
        cam = manifest["adapter"]["observation"]["cameras"][0]["name"]  # "top"
        assert meta["cameras"] == [{"name": cam, "height": pol["image_hw"][0], "width": pol["image_hw"][1],
                                    "key": "observation.image"}]  # fmt: skip
        assert meta["spec"]["horizon"] == pol["horizon"] and meta["sim_token_ids"] is True
        assert meta["action"]["horizon"] == pol["horizon"] and meta["action"]["dim"] == pol["action_dim"]
        assert meta["action"]["units"] == "rad"
        assert (meta["num_steps"], meta["d_max"]) == (
            pol["num_steps"],
            manifest["model"]["schedule"]["d_max"],
        )
        assert meta["control_hz"] == 50.0 and meta["policy"]["mode"] == "legato"
        assert set(meta["request"]["legato"]) == {"chunk_id", "prev_tail", "d", "s", "r", "noise"}
        r1 = infer(c, request_from(meta, rng))
        r2 = infer(c, request_from(meta, rng))
    h, a = meta["action"]["horizon"], meta["action"]["dim"]
    assert r1["actions"].shape == (h, a) and r1["actions"].dtype == np.float32
    assert np.isfinite(r1["actions"]).all()
    assert r1["server_timing"]["infer_ms"] > 0 and "prev_total_ms" not in r1["server_timing"]
    assert r2["server_timing"]["prev_total_ms"] >= r1["server_timing"]["infer_ms"]
    assert r1["policy_timing"]["infer_ms"] > 0
    assert set(r1["legato"]["stages_ms"]) >= {"engines", "chunk"}  # and the graph's own stages


def test_the_continuation_fields_give_the_local_denoisers_chunk(server):
    """Same observation, tail, d, r and noise: the served chunk is the one the local denoiser makes,
    and its first d actions are the tail's (omega = 1 there)."""
    from edge.assembly import load
    from edge.policy import ChunkRequest

    rng = np.random.default_rng(1)
    with ws(server.url) as c:
        meta = wire.unpackb(c.recv(timeout=5), 1 << 24)
        h, a = meta["action"]["horizon"], meta["action"]["dim"]
        tail = rng.standard_normal((h - 8, a)).astype(np.float32) * 0.1 + 1.0
        noise = rng.standard_normal((h, a)).astype(np.float32)
        obs = request_from(meta, rng)
        rep = infer(
            c, {**obs, "legato": {"chunk_id": 7, "prev_tail": tail, "d": 2, "s": 8, "r": 4, "noise": noise}}
        )
    assert rep["legato"]["chunk_id"] == 7 and (rep["legato"]["d"], rep["legato"]["r"]) == (2, 4)
    _, _, den = load(str(BUNDLE), "x86-cpu")
    den.set_observation(
        obs["observation.image"], obs["observation.language.tokens"], obs["observation.state"]
    )
    local = den.denoise(noise[None], tail, ChunkRequest(d=2, s=8, r=4))
    np.testing.assert_array_equal(rep["actions"], local)
    np.testing.assert_allclose(rep["actions"][:2], tail[:2], atol=1e-5)


def _refused(c, data):
    """Send one frame; the reply must be one text line, then a close with 1008."""
    c.send(data)
    line = c.recv(timeout=10)
    assert isinstance(line, str) and "\n" not in line and line.startswith("legato serve: refused: ")
    with pytest.raises(ConnectionClosed) as e:
        c.recv(timeout=10)
    assert e.value.rcvd is not None and e.value.rcvd.code == 1008
    return line


def _bad_requests(meta):
    rng = np.random.default_rng(2)
    good = request_from(meta, rng)
    h, a = meta["action"]["horizon"], meta["action"]["dim"]
    drop = {k: v for k, v in good.items() if k != "observation.state"}
    return [
        (wire.packb(drop), "missing observation.state"),
        (wire.packb({**good, "observation.extra": np.zeros(1, np.float32)}), "unknown observation.extra"),
        (
            wire.packb({**good, "observation.state": np.zeros(5, np.float32)}),
            "<f4 (5,), the bundle needs <f4 (6,)",
        ),
        (
            wire.packb({**good, "observation.image": good["observation.image"].astype(np.float32)}),
            "observation.image is <f4 (48, 64, 3), the bundle needs |u1",
        ),
        (wire.packb({**good, "observation.state": np.full(6, np.nan, np.float32)}), "NaN"),
        (
            wire.packb({**good, "observation.language.tokens": np.full(6, 164, np.int64)}),
            "the bundle takes [0, 13]",
        ),
        (
            wire.packb({**good, "legato": {"prev_tail": np.zeros((h, a + 1), np.float32), "d": 1, "s": 8}}),
            "prev_tail",
        ),
        (
            wire.packb(
                {**good, "legato": {"prev_tail": np.zeros((8, a), np.float32), "d": 9, "s": 8, "r": 0}}
            ),
            "exceeds the trained d_max",
        ),
        (wire.packb({**good, "legato": {"bogus": 1}}), "unknown legato field bogus"),
        (b"\xc1 not msgpack", "not a msgpack message"),
        (msgpack.packb([1, 2, 3]), "a request is a msgpack map"),
        ("a text frame", "expected a binary msgpack frame"),
    ]


def test_bad_requests_are_refused_with_a_line_and_other_sessions_keep_their_chunks(server):
    rng = np.random.default_rng(3)
    with ws(server.url) as other:
        meta = wire.unpackb(other.recv(timeout=5), 1 << 24)
        assert infer(other, request_from(meta, rng))["actions"].shape == (16, 3)
        for data, words in _bad_requests(meta):
            with ws(server.url) as c:
                c.recv(timeout=5)
                assert words in _refused(c, data)
            # the session that behaves still gets its chunk after each refusal
            assert infer(other, request_from(meta, rng))["actions"].shape == (16, 3)
    st = server.service.stats()
    assert st["refused"] == len(_bad_requests(meta)) and st["failed"] == 0


def test_oversized_message_is_closed_before_it_is_read_and_the_server_goes_on(server):
    rng = np.random.default_rng(4)
    with ws(server.url) as c:
        meta = wire.unpackb(c.recv(timeout=5), 1 << 24)
        c.send(b"\x00" * (meta["max_message_bytes"] + 1))
        with pytest.raises(ConnectionClosed) as e:
            c.recv(timeout=10)
        assert e.value.rcvd is not None and e.value.rcvd.code == 1009  # message too big
    with ws(server.url) as c:
        c.recv(timeout=5)
        assert infer(c, request_from(meta, rng))["actions"].shape == (16, 3)


def test_api_key_checked_in_the_handshake():
    s = ServerThread(make_service(api_key="s3cret-key"))
    try:
        for headers in (None, {"Authorization": "Api-Key wrong"}, {"Authorization": "s3cret-key"}):
            with pytest.raises(InvalidStatus) as e:
                ws(s.url, additional_headers=headers)
            assert e.value.response.status_code == 401 and b"API key" in e.value.response.body
        assert get(s.port, "/healthz") == (200, "OK\n")  # health needs no key
        with ws(s.url, additional_headers={"Authorization": "Api-Key s3cret-key"}) as c:
            meta = wire.unpackb(c.recv(timeout=5), 1 << 24)
            assert infer(c, request_from(meta, np.random.default_rng(5)))["actions"].shape == (16, 3)
        assert s.service.stats()["auth_refused"] == 3
    finally:
        s.stop()


def test_session_cap_answers_503():
    s = ServerThread(make_service(), max_sessions=1)
    try:
        with ws(s.url) as c:
            c.recv(timeout=5)
            with pytest.raises(InvalidStatus) as e:
                ws(s.url)
            assert e.value.response.status_code == 503
    finally:
        s.stop()


def test_requests_run_in_the_event_loop_and_a_held_reply_does_not_hold_the_other_sessions():
    """No hand-off to a worker thread on legato serve's own transport (each costs a wake-up, see
    edge/remote/service.py), and --delay-ms waits without blocking: while one session's reply is
    held back, another session's metadata still arrives."""
    import threading

    service = make_service(delay_s=3.0)
    threads = []
    denoise = service.den.denoise

    def recording(*a, **kw):
        threads.append(threading.current_thread().name)
        return denoise(*a, **kw)

    service.den.denoise = recording
    s = ServerThread(service)
    try:
        with ws(s.url) as held:
            meta = wire.unpackb(held.recv(timeout=5), 1 << 24)
            held.send(wire.packb(request_from(meta, np.random.default_rng(0))))
            deadline = time.monotonic() + 2.5
            while not threads and time.monotonic() < deadline:  # the held request has been served
                time.sleep(0.01)
            assert threads == ["test-server"]  # the event loop's thread, not legato-serve's worker
            with connect(s.url, compression=None, proxy=None, open_timeout=2.5) as other:
                assert "model" in wire.unpackb(other.recv(timeout=2.5), 1 << 24)  # not after the 3 s
            assert "actions" in wire.unpackb(held.recv(timeout=10), 1 << 24)
    finally:
        s.stop()

"""The wire format: openpi's bytes both ways, and refusal of everything else."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from edge.remote import wire


def openpi_pack(obj):
    """openpi-client's msgpack_numpy.pack_array, restated: bin keys, dtype.str, shape as a tuple."""

    def default(o):
        if isinstance(o, np.ndarray):
            return {b"__ndarray__": True, b"data": o.tobytes(), b"dtype": o.dtype.str, b"shape": o.shape}
        if isinstance(o, np.generic):
            return {b"__npgeneric__": True, b"data": o.item(), b"dtype": o.dtype.str}
        return o

    return msgpack.packb(obj, default=default)


def test_packs_the_bytes_openpi_client_packs():
    obs = {
        "observation.image": np.arange(24, dtype=np.uint8).reshape(2, 4, 3),
        "observation.state": np.linspace(0, 1, 6, dtype=np.float32),
        "n": np.int64(7),
        "prompt": "pick",
    }
    assert wire.packb(obs) == openpi_pack(obs)


def test_decodes_openpi_client_arrays_and_str_keyed_arrays():
    x = np.random.default_rng(0).standard_normal((16, 3)).astype(np.float32)
    out = wire.unpackb(openpi_pack({"actions": x, "k": np.float32(2.5)}), 1 << 20)
    np.testing.assert_array_equal(out["actions"], x)
    assert out["actions"].dtype == np.float32 and out["k"] == np.float32(2.5)
    # a client in another language writes str keys: taken too
    m = msgpack.packb({"a": {"__ndarray__": True, "data": x.tobytes(), "dtype": "<f4", "shape": [16, 3]}})
    np.testing.assert_array_equal(wire.unpackb(m, 1 << 20)["a"], x)


def _arr(data: bytes, dtype: str, shape: list) -> bytes:
    return msgpack.packb({"a": {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}})


@pytest.mark.parametrize(
    ("msg", "words"),
    [
        (_arr(b"\0" * 8, "|O", [1]), "not allowed"),  # object arrays: openpi's fallback would pickle
        (_arr(b"\0" * 8, "<c8", [1]), "not allowed"),
        (_arr(b"\0" * 8, "(2,)<f4", [1]), "not allowed"),
        (_arr(b"\0" * 8, "no-such", [1]), "not a numpy dtype"),
        (_arr(b"\0" * 7, "<f4", [2]), "needs 8 bytes"),
        (_arr(b"\0" * 8, "<f4", [-2]), "shape"),
        (_arr(b"\0" * 8, "<f4", [1] * 9 + [2]), "shape"),
        (msgpack.packb({"a": msgpack.ExtType(5, b"xx")}), "extension type 5"),
        (b"\xc1\x00", "not a msgpack message"),
        (msgpack.packb({"a": 1}) + b"\x00", "not a msgpack message"),
        (msgpack.packb({(1, 2): 1}, use_bin_type=True), "not a msgpack message"),  # keys must be strings
    ],
)
def test_refuses_what_is_not_the_protocol(msg, words):
    with pytest.raises(wire.WireError, match=words):
        wire.unpackb(msg, 1 << 20)


def test_bounds_the_message_and_refuses_text():
    with pytest.raises(wire.WireError, match="exceeds the limit of 100"):
        wire.unpackb(b"\x90" * 101, 100)
    with pytest.raises(wire.WireError, match="binary msgpack frame"):
        wire.unpackb("text", 100)  # type: ignore[arg-type]


def test_will_not_send_what_it_would_not_take():
    with pytest.raises(wire.WireError, match="not allowed"):
        wire.packb({"a": np.array(["x"], dtype=object)})
    with pytest.raises(wire.WireError, match="cannot send a set"):
        wire.packb({"a": {1, 2}})

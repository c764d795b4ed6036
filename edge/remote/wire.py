"""The wire format of openpi's policy server, with bounds: msgpack maps, numpy arrays as maps.

An array travels as ``{b"__ndarray__": True, b"data": <bytes>, b"dtype": dtype.str, b"shape":
[...]}`` and a numpy scalar as ``{b"__npgeneric__": True, b"data": <item>, b"dtype": dtype.str}``,
with the map keys as msgpack *bin* (Python bytes): that is what openpi-client's msgpack_numpy
packs and what its unpacker looks for, so these bytes are what both sides send. The decoder also
takes the keys as msgpack *str*, which is what a client in another language naturally writes.

Decoding is for untrusted peers: msgpack only (never pickle), extension types refused, every
length bounded by the message size, arrays only of bool / int / uint / float dtypes with a plain
shape whose byte count equals the data's. Any violation is one :class:`WireError` line.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

from edge.errors import LegatoError

ARRAY_KINDS = "biuf"  # bool, signed, unsigned, float: what observations and chunks are made of
MAX_NDIM = 8
_ND, _GEN = (b"__ndarray__", "__ndarray__"), (b"__npgeneric__", "__npgeneric__")


class WireError(LegatoError):
    """A message that is not the protocol's msgpack (or holds an array it does not allow)."""


def _pack_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        _check_dtype(obj.dtype)
        return {
            b"__ndarray__": True,
            b"data": np.ascontiguousarray(obj).tobytes(),
            b"dtype": obj.dtype.str,
            b"shape": list(obj.shape),
        }
    if isinstance(obj, np.generic):
        _check_dtype(obj.dtype)
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise WireError(f"cannot send a {type(obj).__name__} (msgpack maps, lists, numbers, strings, arrays)")


def packb(obj: Any) -> bytes:
    """One message: a map of str keys to numbers, strings, lists, maps and numpy arrays."""
    return msgpack.packb(obj, default=_pack_default, use_bin_type=True)


def _check_dtype(dt: np.dtype) -> None:
    if dt.kind not in ARRAY_KINDS or dt.shape != () or dt.fields is not None:
        raise WireError(f"array dtype {dt.str!r} is not allowed (bool, int, uint or float only)")


def _get(m: dict[Any, Any], name: str) -> Any:
    v = m.get(name.encode(), m.get(name))
    if v is None:
        raise WireError(f"array map without {name!r}")
    return v


def _object_hook(m: dict[Any, Any]) -> Any:
    if any(k in m for k in _ND):
        data, dtype, shape = _get(m, "data"), _get(m, "dtype"), _get(m, "shape")
        if not isinstance(data, bytes) or not isinstance(dtype, (str, bytes)) or not isinstance(shape, list):
            raise WireError("array map needs data (bin), dtype (str) and shape (list)")
        dt = _dtype(dtype)
        if len(shape) > MAX_NDIM or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
        ):
            raise WireError(f"array shape {shape!r} is not a list of at most {MAX_NDIM} sizes >= 0")
        n = 1
        for s in shape:
            n *= s
        if n * dt.itemsize != len(data):
            raise WireError(
                f"array of shape {tuple(shape)} and dtype {dt.str} needs {n * dt.itemsize} "
                f"bytes, the message has {len(data)}"
            )
        return np.frombuffer(data, dt).reshape(shape)
    if any(k in m for k in _GEN):
        dt, data = _dtype(_get(m, "dtype")), _get(m, "data")
        if isinstance(data, (bytes, str, list, dict)):
            raise WireError("scalar map data must be a number")
        return dt.type(data)
    return m


def _dtype(s: str | bytes) -> np.dtype:
    try:
        dt = np.dtype(s.decode() if isinstance(s, bytes) else s)
    except (TypeError, ValueError, UnicodeDecodeError):
        raise WireError(f"array dtype {s!r} is not a numpy dtype string") from None
    _check_dtype(dt)
    return dt


def _refuse_ext(code: int, data: bytes) -> Any:
    raise WireError(f"msgpack extension type {code} is not part of the protocol")


def unpackb(data: bytes | bytearray | memoryview, max_bytes: int) -> Any:
    """Decode one message of at most ``max_bytes``; raises :class:`WireError` for anything else."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError(f"expected a binary msgpack frame, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise WireError(f"message of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        return msgpack.unpackb(
            bytes(data), object_hook=_object_hook, ext_hook=_refuse_ext, raw=False, strict_map_key=True
        )
    except WireError:
        raise
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError, TypeError) as e:
        raise WireError(f"not a msgpack message ({type(e).__name__}: {str(e)[:120]})") from None

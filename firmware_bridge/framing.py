"""Framing: body <-> COBS frame with a CRC-32C trailer and a 0x00 delimiter. Never touches a port.

Wire form of one frame::

    COBS( body || crc32c(body) as u32 little-endian ) || 0x00

``FrameSplitter`` turns an arbitrary byte stream into delimiter-separated packets (like pyserial's
``FramedPacket`` but without the port); ``unframe`` checks one packet and returns its body. Both
raise nothing but :class:`ProtocolError` (``unframe``) and nothing at all (``FrameSplitter``).
"""

from __future__ import annotations

import struct

from cobs import cobs

from firmware_bridge.crc import crc32c
from firmware_bridge.errors import ProtocolError

DELIMITER = b"\x00"
CRC_SIZE = 4
#: largest decoded frame (header + payload + CRC); a 64-joint telemetry frame is 800 bytes
MAX_FRAME = 1024
#: COBS adds one byte per 254 plus one
MAX_ENCODED = MAX_FRAME + MAX_FRAME // 254 + 2

_CRC = struct.Struct("<I")


def frame(body: bytes) -> bytes:
    """Encode ``body`` (header + payload) into one delimited wire frame."""
    if len(body) + CRC_SIZE > MAX_FRAME:
        raise ValueError(f"frame body of {len(body)} bytes exceeds MAX_FRAME={MAX_FRAME} with CRC")
    return cobs.encode(body + _CRC.pack(crc32c(body))) + DELIMITER


def unframe(packet: bytes, min_body: int = 0) -> bytes:
    """Check one packet (without its delimiter) and return the body; raise ProtocolError if bad."""
    if not packet:
        raise ProtocolError("empty", "zero-length packet")
    if len(packet) > MAX_ENCODED:
        raise ProtocolError("oversize", f"{len(packet)} encoded bytes > {MAX_ENCODED}")
    try:
        raw = cobs.decode(packet)
    except cobs.DecodeError as exc:
        raise ProtocolError("cobs", str(exc)) from exc
    if len(raw) < min_body + CRC_SIZE:
        raise ProtocolError("short", f"{len(raw)} decoded bytes < {min_body + CRC_SIZE}")
    body, trailer = raw[:-CRC_SIZE], raw[-CRC_SIZE:]
    (expected,) = _CRC.unpack(trailer)
    actual = crc32c(body)
    if actual != expected:
        raise ProtocolError("crc", f"computed 0x{actual:08x}, frame says 0x{expected:08x}")
    return body


class FrameSplitter:
    """Reassemble delimiter-separated packets from stream chunks.

    A packet longer than ``MAX_ENCODED`` is discarded up to the next delimiter and counted in
    ``overflows`` (a lost delimiter must not make the buffer grow without bound).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._discarding = False
        self.overflows = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the complete packets (delimiters stripped, empty ones kept out)."""
        packets: list[bytes] = []
        start = 0
        while True:
            end = data.find(DELIMITER, start)
            if end < 0:
                self._append(data[start:])
                return packets
            self._append(data[start:end])
            if self._discarding:
                self._discarding = False
            elif self._buf:
                packets.append(bytes(self._buf))
            self._buf.clear()
            start = end + 1

    def reset(self) -> None:
        """Forget a partial packet (after a reconnect the stream restarts mid-frame)."""
        self._buf.clear()
        self._discarding = False

    def _append(self, chunk: bytes) -> None:
        if self._discarding or not chunk:
            return
        self._buf += chunk
        if len(self._buf) > MAX_ENCODED:
            self._buf.clear()
            self._discarding = True
            self.overflows += 1

"""CRC, sequence arithmetic, framing and message layouts, pinned to the spec in docs/protocol.md."""

from __future__ import annotations

import math
import struct

import pytest
from cobs import cobs

from firmware_bridge.crc import crc32c
from firmware_bridge.errors import ProtocolError
from firmware_bridge.framing import MAX_ENCODED, FrameSplitter, frame
from firmware_bridge.messages import (
    HEADER,
    Ack,
    Capabilities,
    ClearFaults,
    ConfigureLimits,
    ConfigureWatchdog,
    FaultReport,
    Heartbeat,
    Hello,
    MsgType,
    Nack,
    Setpoint,
    TelemetryMsg,
    TimeSyncRequest,
    TimeSyncResponse,
    Torque,
    decode,
    encode,
)
from firmware_bridge.seq import seq_add, seq_distance, seq_newer


def test_crc32c_check_values() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the catalogue check value
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros
    assert crc32c(b"\xff" * 32) == 0x62A8AB43  # RFC 3720 B.4: 32 bytes of 0xFF
    assert crc32c(b"56789", crc32c(b"1234")) == 0xE3069283  # continues over pieces


def test_sequence_serial_arithmetic_wraps() -> None:
    assert seq_newer(1, 0) and not seq_newer(0, 1)
    assert seq_newer(0, 65535) and seq_newer(5, 65530)  # wraparound
    assert not seq_newer(7, 7)
    assert seq_newer(32767, 0) and not seq_newer(32768, 0)  # half the space away: refused
    assert seq_add(65535, 2) == 1 and seq_distance(1, 65535) == 2


def test_frame_layout_is_cobs_of_body_and_crc_then_zero() -> None:
    body = HEADER.pack(1, MsgType.HEARTBEAT, 0x1234, 0xDEADBEEF)
    wire = encode(Heartbeat(), 0x1234, 0xDEADBEEF)
    assert wire.endswith(b"\x00") and b"\x00" not in wire[:-1]
    assert cobs.decode(wire[:-1]) == body + struct.pack("<I", crc32c(body))
    # header: version, type, seq, t_us little-endian
    assert body == bytes([1, 0x21, 0x34, 0x12, 0xEF, 0xBE, 0xAD, 0xDE])


def test_setpoint_wire_bytes_pinned() -> None:
    """An example a firmware author can check an implementation against (docs/protocol.md)."""
    wire = encode(Setpoint((0.5, -1.0)), seq=7, t_us=1000)
    assert wire.hex() == "0401200703e8030102020101023f010780bf0178eb5b00"
    raw = cobs.decode(wire[:-1])
    assert raw[:8] == bytes([1, 0x20, 7, 0, 0xE8, 0x03, 0, 0])
    assert raw[8:17] == bytes([2]) + struct.pack("<2f", 0.5, -1.0)
    assert raw[17:] == struct.pack("<I", crc32c(raw[:17]))


ALL = [
    Hello(),
    Capabilities(6, 1, 1000, 250, 100, b"legato-emu"),
    ConfigureLimits((-1.0, -2.0), (1.0, 2.0), (3.0, 4.0), (0.015625, 0.03125)),  # float32-exact
    ConfigureWatchdog(100, 250),
    Torque(True),
    Torque(False),
    ClearFaults(0x0101),
    Setpoint((0.25, -0.5, 1.0)),
    Heartbeat(),
    TelemetryMsg(65535, 0x0F, 0x0100, 3, 10, 2, 1, 0, (0.5, 0.25), (1.0, -1.0), (0.125, 2.0)),
    FaultReport(0x0003, 0x0002, 1, 3.5),
    TimeSyncRequest(2**40 + 5),
    TimeSyncResponse(1, 2**50, 2**50 + 7),
    Ack(9, MsgType.TORQUE),
    Nack(9, MsgType.TORQUE, 4),
]


@pytest.mark.parametrize("msg", ALL, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(msg) -> None:
    f = decode(encode(msg, 0xFFFF, 2**32 + 17)[:-1])
    assert f.msg == msg and type(f.msg) is type(msg)
    assert f.seq == 0xFFFF and f.t_us == 17  # t_us is the sender clock modulo 2**32


@pytest.mark.parametrize(
    ("packet", "kind"),
    [
        (b"", "empty"),
        (b"\x05ab", "cobs"),
        (cobs.encode(b"\x01\x02\x03"), "short"),
        (b"\xff" * (MAX_ENCODED + 1), "oversize"),
    ],
)
def test_malformed_packets_raise_protocol_error_with_kind(packet: bytes, kind: str) -> None:
    with pytest.raises(ProtocolError) as err:
        decode(packet)
    assert err.value.kind == kind


def _reframe(body: bytes) -> bytes:
    return frame(body)[:-1]


def test_semantic_checks_after_crc() -> None:
    good = HEADER.pack(1, MsgType.SETPOINT, 1, 1) + struct.pack("<B2f", 2, 0.0, 1.0)
    assert decode(_reframe(good)).msg == Setpoint((0.0, 1.0))
    cases = {
        "version": HEADER.pack(2, MsgType.SETPOINT, 1, 1) + good[8:],
        "type": HEADER.pack(1, 0x55, 1, 1) + good[8:],
        "payload": good[:-1],  # length does not match the joint count
    }
    for kind, body in cases.items():
        with pytest.raises(ProtocolError) as err:
            decode(_reframe(body))
        assert err.value.kind == kind
    corrupt = bytearray(_reframe(good))
    corrupt[5] ^= 0x40
    with pytest.raises(ProtocolError) as err:
        decode(bytes(corrupt))
    assert err.value.kind in ("crc", "cobs")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_setpoint_is_invalid_on_the_wire(bad: float) -> None:
    body = HEADER.pack(1, MsgType.SETPOINT, 1, 1) + struct.pack("<B2f", 2, 0.0, bad)
    with pytest.raises(ProtocolError, match="non-finite"):
        decode(_reframe(body))


def test_splitter_reassembles_across_chunks_and_discards_oversize() -> None:
    frames = [encode(Setpoint((float(i),)), i, i) for i in range(5)]
    stream = b"".join(frames)
    sp = FrameSplitter()
    out: list[bytes] = []
    for i in range(0, len(stream), 3):
        out += sp.feed(stream[i : i + 3])
    assert [decode(p).seq for p in out] == [0, 1, 2, 3, 4]
    junk = b"\x01" * (MAX_ENCODED + 10)  # a lost delimiter: must not grow the buffer
    assert sp.feed(junk + b"\x00" + frames[0]) == [frames[0][:-1]]
    assert sp.overflows == 1
    assert sp.feed(b"\x00\x00") == []  # empty packets are not packets


def test_frame_refuses_bodies_over_max() -> None:
    with pytest.raises(ValueError, match="MAX_FRAME"):
        frame(bytes(2000))

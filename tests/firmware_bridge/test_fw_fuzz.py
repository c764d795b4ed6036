"""Decoder fuzzing: random packets, mutated valid frames, random chunking. The decoder returns a
frame or raises ProtocolError, nothing else. 4,000 + 4,000 + 1,500 + 1,000 = 10,500 examples per
run of the default suite."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge.errors import ProtocolError
from firmware_bridge.framing import FrameSplitter
from firmware_bridge.messages import (
    Ack,
    ConfigureLimits,
    Frame,
    Heartbeat,
    Hello,
    Setpoint,
    TelemetryMsg,
    TimeSyncRequest,
    Torque,
    decode,
    encode,
)

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=False)

finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)
joints = st.integers(1, 8)


@st.composite
def valid_messages(draw: st.DrawFn):
    n = draw(joints)
    arr = st.tuples(*[finite] * n)
    return draw(
        st.one_of(
            st.just(Hello()),
            st.just(Heartbeat()),
            st.builds(Setpoint, arr),
            st.builds(Torque, st.booleans()),
            st.builds(TimeSyncRequest, st.integers(0, 2**64 - 1)),
            st.builds(Ack, st.integers(0, 0xFFFF), st.integers(0, 255), st.integers(0, 255)),
            st.builds(ConfigureLimits, arr, arr, arr, arr),
            st.builds(
                TelemetryMsg,
                st.integers(0, 0xFFFF),
                st.integers(0, 255),
                st.integers(0, 0xFFFF),
                st.integers(0, 0xFFFF),
                st.integers(0, 2**32 - 1),
                st.integers(0, 2**32 - 1),
                st.integers(0, 2**32 - 1),
                st.integers(0, 2**32 - 1),
                arr,
                arr,
                arr,
            ),  # fmt: skip
        )
    )


def _decode_or_protocol_error(packet: bytes) -> Frame | None:
    try:
        return decode(packet)
    except ProtocolError:
        return None


@settings(FUZZ, max_examples=4000)
@given(st.binary(max_size=300))
def test_random_packets_decode_or_raise_protocol_error(packet: bytes) -> None:
    _decode_or_protocol_error(packet)


@settings(FUZZ, max_examples=4000)
@given(
    valid_messages(),
    st.integers(0, 0xFFFF),
    st.lists(st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
                       st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
)  # fmt: skip
def test_mutated_frames_decode_or_raise_protocol_error(msg, seq: int, edits) -> None:
    packet = bytearray(encode(msg, seq, 12345)[:-1])
    for op, pos, val in edits:
        i = pos % (len(packet) + 1)
        if op == "flip" and packet:
            packet[i % len(packet)] ^= 1 << (val % 8)
        elif op == "set" and packet:
            packet[i % len(packet)] = val
        elif op == "insert":
            packet.insert(i, val)
        elif op == "delete" and packet:
            del packet[i % len(packet)]
        elif op == "truncate":
            del packet[i:]
    f = _decode_or_protocol_error(bytes(packet))
    if f is not None and bytes(packet) != encode(msg, seq, 12345)[:-1]:
        # a mutation that still decodes must be a different valid frame, never a half-parsed one
        assert decode(encode(f.msg, f.seq, f.t_us)[:-1]).msg == f.msg


@settings(FUZZ, max_examples=1500)
@given(valid_messages(), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1))
def test_valid_messages_round_trip(msg, seq: int, t_us: int) -> None:
    f = decode(encode(msg, seq, t_us)[:-1])
    assert (f.msg, f.seq, f.t_us) == (msg, seq, t_us)


@settings(FUZZ, max_examples=1000)
@given(st.lists(valid_messages(), min_size=1, max_size=6), st.binary(max_size=64), st.data())
def test_stream_with_garbage_prefix_recovers_every_frame(msgs, garbage: bytes, data) -> None:
    """Garbage before the first delimiter costs at most the packet it is in; every frame after
    the delimiter comes through, however the stream is chunked."""
    stream = garbage + b"\x00" + b"".join(encode(m, i, i) for i, m in enumerate(msgs))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    sp = FrameSplitter()
    packets: list[bytes] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        packets += sp.feed(stream[a:b])
    decoded = [f for p in packets if (f := _decode_or_protocol_error(p)) is not None]
    assert [f.msg for f in decoded][-len(msgs) :] == msgs

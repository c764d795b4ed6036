"""Message types and payload layouts of protocol version 1 (docs/protocol.md is the spec).

Header, 8 bytes little-endian (``<BBHI``): version u8, type u8, seq u16, t_us u32 (sender's
clock in microseconds, modulo 2**32). Every payload below has a fixed layout given by its
``struct`` format; per-joint arrays are float32 in joint order. Decoding is pure: ``decode``
takes one packet and returns a :class:`Frame` or raises :class:`ProtocolError`.
"""

from __future__ import annotations

import enum
import functools
import math
import operator
import struct
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from firmware_bridge.errors import ProtocolError
from firmware_bridge.framing import frame, unframe

PROTOCOL_VERSION = 1
HEADER = struct.Struct("<BBHI")
MAX_JOINTS = 32


class MsgType(enum.IntEnum):
    HELLO = 0x01
    CAPABILITIES = 0x02
    CONFIGURE_LIMITS = 0x10
    CONFIGURE_WATCHDOG = 0x11
    TORQUE = 0x12
    CLEAR_FAULTS = 0x13
    SETPOINT = 0x20
    HEARTBEAT = 0x21
    TELEMETRY = 0x30
    FAULT_REPORT = 0x31
    TIME_SYNC_REQUEST = 0x40
    TIME_SYNC_RESPONSE = 0x41
    ACK = 0x7E
    NACK = 0x7F


class Fault(enum.IntFlag):
    """Latched fault bits (telemetry ``faults``, FAULT_REPORT, CLEAR_FAULTS mask)."""

    WATCHDOG = 0x0001  # no valid setpoint or heartbeat within the watchdog timeout
    POSITION_LIMIT = 0x0002  # measured position left the configured range by more than the margin
    OVERLOAD = 0x0004  # torque saturated for longer than the overload time
    TRACKING = 0x0008  # position error above the tracking threshold
    EXTERNAL = 0x0100  # raised by the board (e-stop input, over-temperature, injected in tests)


class NackReason(enum.IntEnum):
    BAD_VALUE = 1  # a field is outside its allowed range
    JOINT_COUNT = 2  # joint count differs from the controller's
    NOT_CONFIGURED = 3  # torque enable before limits were configured
    FAULT_LATCHED = 4  # torque enable while a fault is latched
    UNSUPPORTED = 5  # message type not handled by this firmware


class State(enum.IntFlag):
    """Telemetry ``state`` bits."""

    TORQUE_ENABLED = 0x01
    HOLDING = 0x02  # safe hold engaged (watchdog or latched fault)
    FAULT_LATCHED = 0x04
    CONFIGURED = 0x08


def _floats(values: tuple[float, ...], what: str) -> None:
    for v in values:
        if not math.isfinite(v):
            raise ProtocolError("payload", f"non-finite {what} {v!r}")


def _check_len(payload: bytes, size: int, name: str) -> None:
    if len(payload) != size:
        raise ProtocolError("payload", f"{name} payload is {len(payload)} bytes, layout needs {size}")


class _Fixed:
    """A payload of one ``struct`` layout, ``FMT``: the fields in declaration order, its size
    checked (one ProtocolError naming the type). A message whose fields are not the wire values
    one for one converts (and checks) them in ``_to_wire`` / ``_from_wire``."""

    TYPE: ClassVar[MsgType]
    FMT: ClassVar[struct.Struct]

    def _to_wire(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))  # type: ignore[arg-type]

    @classmethod
    def _from_wire(cls, values: tuple[Any, ...]) -> Any:
        return cls(*values)

    def pack(self) -> bytes:
        return self.FMT.pack(*self._to_wire())

    @classmethod
    def unpack(cls, p: bytes) -> Any:
        _check_len(p, cls.FMT.size, cls.TYPE.name)
        return cls._from_wire(cls.FMT.unpack(p))


class _PerJoint:
    """A payload with a joint count n (u8, 1..MAX_JOINTS): the ``HEAD`` layout of the fields
    ``HEAD_FIELDS`` ("n" where the count sits), then n float32 values for each field of
    ``ARRAYS``, one array after the other, or joint by joint with ``INTERLEAVED``. Values of a
    message with ``FINITE`` (what they are) must be finite."""

    TYPE: ClassVar[MsgType]
    HEAD: ClassVar[struct.Struct] = struct.Struct("<B")
    HEAD_FIELDS: ClassVar[tuple[str, ...]] = ("n",)
    ARRAYS: ClassVar[tuple[str, ...]]
    INTERLEAVED: ClassVar[bool] = False
    FINITE: ClassVar[str | None] = None

    _N_AT: ClassVar[int] = 0  # index of "n" in HEAD_FIELDS (set per subclass)
    _head: ClassVar[Callable[[Any], tuple[Any, ...]]]  # the head fields but n, as a tuple
    _arrays: ClassVar[Callable[[Any], tuple[Any, ...]]]

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls._N_AT = cls.HEAD_FIELDS.index("n")  # the dataclass fields: the others, then ARRAYS
        others = [f for f in cls.HEAD_FIELDS if f != "n"]
        cls._head = _getter(others)  # type: ignore[assignment]
        cls._arrays = _getter(list(cls.ARRAYS))  # type: ignore[assignment]

    def pack(self) -> bytes:
        cls = type(self)  # the getters are plain callables, not methods
        arrays, head = cls._arrays(self), list(cls._head(self))
        n = len(arrays[0])
        head.insert(self._N_AT, n)
        if len(arrays) == 1:
            flat = arrays[0]
        elif self.INTERLEAVED:
            flat = [v for row in zip(*arrays, strict=True) for v in row]
        else:
            flat = [v for a in arrays for v in a]
        return _layout(self.HEAD.format, len(flat)).pack(*head, *flat)

    @classmethod
    def unpack(cls, p: bytes) -> Any:
        name, size = cls.TYPE.name, cls.HEAD.size
        if len(p) < size:
            raise ProtocolError(
                "payload", f"{name} payload is {len(p)} bytes, shorter than its {size}-byte head"
            )
        head = list(cls.HEAD.unpack_from(p))
        n = head.pop(cls._N_AT)
        if not 1 <= n <= MAX_JOINTS:
            raise ProtocolError("payload", f"{name} joint count {n} outside 1..{MAX_JOINTS}")
        k = len(cls.ARRAYS)
        _check_len(p, size + 4 * k * n, name)
        v = _f32(k * n).unpack_from(p, size)
        if cls.FINITE is not None:
            _floats(v, cls.FINITE)
        if k == 1:
            return cls(*head, v)
        arrays = (
            [v[i::k] for i in range(k)] if cls.INTERLEAVED else [v[i * n : (i + 1) * n] for i in range(k)]
        )
        return cls(*head, *arrays)


@functools.cache
def _f32(count: int) -> struct.Struct:
    """``count`` little-endian float32 (one compiled layout per count)."""
    return struct.Struct(f"<{count}f")


@functools.cache
def _layout(head: str, count: int) -> struct.Struct:
    """A head layout followed by ``count`` float32: a whole per-joint payload."""
    return struct.Struct(f"{head}{count}f")


def _getter(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    """The named attributes of an object, always as a tuple (attrgetter returns one bare)."""
    if not names:
        return lambda obj: ()
    get = operator.attrgetter(*names)
    return get if len(names) > 1 else lambda obj: (get(obj),)


@dataclass(frozen=True)
class Hello(_Fixed):
    """Host -> controller: start a session; the controller answers CAPABILITIES."""

    TYPE: ClassVar[MsgType] = MsgType.HELLO
    FMT: ClassVar[struct.Struct] = struct.Struct("<B")
    max_version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Capabilities(_Fixed):
    """Controller -> host: what this controller is (reply to HELLO)."""

    TYPE: ClassVar[MsgType] = MsgType.CAPABILITIES
    FMT: ClassVar[struct.Struct] = struct.Struct("<BBHHH16s")
    n_joints: int
    version: int
    tick_hz: int
    telemetry_hz: int
    watchdog_ms: int
    name: bytes = b""  # up to 16 bytes, NUL-padded on the wire

    def _to_wire(self) -> tuple[Any, ...]:
        return (*super()._to_wire()[:-1], self.name[:16])

    @classmethod
    def _from_wire(cls, values: tuple[Any, ...]) -> Capabilities:
        return cls(*values[:-1], values[-1].rstrip(b"\x00"))


@dataclass(frozen=True)
class ConfigureLimits(_PerJoint):
    """Host -> controller, acknowledged: per-joint position range, speed and per-tick step."""

    TYPE: ClassVar[MsgType] = MsgType.CONFIGURE_LIMITS
    ARRAYS: ClassVar[tuple[str, ...]] = ("position_min", "position_max", "velocity_max", "step_max")
    INTERLEAVED: ClassVar[bool] = True  # min, max, velocity, step of joint 0, then of joint 1, ...
    FINITE: ClassVar[str | None] = "limit"
    position_min: tuple[float, ...]
    position_max: tuple[float, ...]
    velocity_max: tuple[float, ...]
    step_max: tuple[float, ...]


@dataclass(frozen=True)
class ConfigureWatchdog(_Fixed):
    """Host -> controller, acknowledged: watchdog timeout and telemetry rate."""

    TYPE: ClassVar[MsgType] = MsgType.CONFIGURE_WATCHDOG
    FMT: ClassVar[struct.Struct] = struct.Struct("<HH")
    timeout_ms: int
    telemetry_hz: int


@dataclass(frozen=True)
class Torque(_Fixed):
    """Host -> controller, acknowledged: 1 enables torque (hold where it is), 0 disables."""

    TYPE: ClassVar[MsgType] = MsgType.TORQUE
    FMT: ClassVar[struct.Struct] = struct.Struct("<B")
    enable: bool

    def _to_wire(self) -> tuple[Any, ...]:
        return (1 if self.enable else 0,)

    @classmethod
    def _from_wire(cls, values: tuple[Any, ...]) -> Torque:
        (e,) = values
        if e > 1:
            raise ProtocolError("payload", f"TORQUE enable byte {e} not 0 or 1")
        return cls(bool(e))


@dataclass(frozen=True)
class ClearFaults(_Fixed):
    """Host -> controller, acknowledged: clear the latched fault bits in ``mask``."""

    TYPE: ClassVar[MsgType] = MsgType.CLEAR_FAULTS
    FMT: ClassVar[struct.Struct] = struct.Struct("<H")
    mask: int


@dataclass(frozen=True)
class Setpoint(_PerJoint):
    """Host -> controller, streamed unacknowledged: joint position targets in radians."""

    TYPE: ClassVar[MsgType] = MsgType.SETPOINT
    ARRAYS: ClassVar[tuple[str, ...]] = ("positions",)
    FINITE: ClassVar[str | None] = "setpoint"
    positions: tuple[float, ...]


@dataclass(frozen=True)
class Heartbeat(_Fixed):
    """Host -> controller, unacknowledged: feeds the watchdog without a new target."""

    TYPE: ClassVar[MsgType] = MsgType.HEARTBEAT
    FMT: ClassVar[struct.Struct] = struct.Struct("<")  # no payload


@dataclass(frozen=True)
class TelemetryMsg(_PerJoint):
    """Controller -> host, streamed: state, counters, and per-joint position/velocity/effort."""

    TYPE: ClassVar[MsgType] = MsgType.TELEMETRY
    HEAD: ClassVar[struct.Struct] = struct.Struct("<HBBHHIIII")
    HEAD_FIELDS: ClassVar[tuple[str, ...]] = ("last_applied_seq", "state", "n", "faults", "applied_age_ticks",
                                              "rx_good", "rx_bad", "rx_gap", "rx_stale")  # fmt: skip
    ARRAYS: ClassVar[tuple[str, ...]] = ("positions", "velocities", "efforts")
    last_applied_seq: int
    state: int
    faults: int
    applied_age_ticks: int  # ticks since the last applied setpoint, saturating at 65535
    rx_good: int  # valid host frames received (mod 2**32)
    rx_bad: int  # packets dropped by the decoder (COBS, CRC, length, version, type, payload)
    rx_gap: int  # host sequence numbers never received (lost frames)
    rx_stale: int  # setpoints refused as duplicate or out of order
    positions: tuple[float, ...]
    velocities: tuple[float, ...]
    efforts: tuple[float, ...]


@dataclass(frozen=True)
class FaultReport(_Fixed):
    """Controller -> host, unacknowledged: a fault was latched (repeated while it stays latched)."""

    TYPE: ClassVar[MsgType] = MsgType.FAULT_REPORT
    FMT: ClassVar[struct.Struct] = struct.Struct("<HHBf")
    latched: int  # all latched bits
    new: int  # bits latched by this event
    joint: int  # joint that tripped it, 255 = not joint specific
    value: float  # the offending measurement (rad, rad/s, Nm, or ms for the watchdog)


@dataclass(frozen=True)
class TimeSyncRequest(_Fixed):
    """Host -> controller: t1 = host clock (us, u64) when sent."""

    TYPE: ClassVar[MsgType] = MsgType.TIME_SYNC_REQUEST
    FMT: ClassVar[struct.Struct] = struct.Struct("<Q")
    t1_us: int


@dataclass(frozen=True)
class TimeSyncResponse(_Fixed):
    """Controller -> host: t1 echoed, t2 = controller clock at receipt, t3 = at reply (u64 us)."""

    TYPE: ClassVar[MsgType] = MsgType.TIME_SYNC_RESPONSE
    FMT: ClassVar[struct.Struct] = struct.Struct("<QQQ")
    t1_us: int
    t2_us: int
    t3_us: int


@dataclass(frozen=True)
class Ack(_Fixed):
    """Controller -> host: the command with header seq ``acked_seq`` was applied."""

    TYPE: ClassVar[MsgType] = MsgType.ACK
    FMT: ClassVar[struct.Struct] = struct.Struct("<HBB")
    acked_seq: int
    acked_type: int
    reason: int = 0


@dataclass(frozen=True)
class Nack(Ack):
    """Controller -> host: the command was refused; ``reason`` is a :class:`NackReason`."""

    TYPE: ClassVar[MsgType] = MsgType.NACK


# every message type, once: the union the codec's users see and the decoder's table
Message = (
    Hello
    | Capabilities
    | ConfigureLimits
    | ConfigureWatchdog
    | Torque
    | ClearFaults
    | Setpoint
    | Heartbeat
    | TelemetryMsg
    | FaultReport
    | TimeSyncRequest
    | TimeSyncResponse
    | Ack
    | Nack
)

_BY_TYPE: dict[int, type] = {cls.TYPE: cls for cls in typing.get_args(Message)}

#: commands the controller acknowledges; the host retries them until ACK or NACK
ACKED_TYPES = frozenset({MsgType.CONFIGURE_LIMITS, MsgType.CONFIGURE_WATCHDOG, MsgType.TORQUE,
                         MsgType.CLEAR_FAULTS})  # fmt: skip


@dataclass(frozen=True)
class Frame:
    """One decoded frame: header fields plus the typed message."""

    seq: int
    t_us: int
    msg: Message
    version: int = PROTOCOL_VERSION


def encode(msg: Message, seq: int, t_us: int) -> bytes:
    """Header + payload, framed for the wire. ``seq`` and ``t_us`` are reduced modulo their width."""
    body = HEADER.pack(PROTOCOL_VERSION, msg.TYPE, seq & 0xFFFF, t_us & 0xFFFFFFFF) + msg.pack()
    return frame(body)


def decode(packet: bytes) -> Frame:
    """Decode one packet (delimiter stripped). Raises only ProtocolError."""
    body = unframe(packet, min_body=HEADER.size)
    version, mtype, seq, t_us = HEADER.unpack_from(body)
    if version != PROTOCOL_VERSION:
        raise ProtocolError("version", f"protocol version {version}, this side speaks {PROTOCOL_VERSION}")
    cls = _BY_TYPE.get(mtype)
    if cls is None:
        raise ProtocolError("type", f"unknown message type 0x{mtype:02x}", seq=seq, mtype=mtype)
    try:
        msg = cls.unpack(body[HEADER.size :])
    except struct.error as exc:  # a layout bug must still surface as the protocol's error
        raise ProtocolError("payload", f"{cls.__name__}: {exc}") from exc
    return Frame(seq, t_us, msg, version)

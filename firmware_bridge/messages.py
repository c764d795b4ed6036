"""Message types and payload layouts of protocol version 1 (docs/protocol.md is the spec).

Header, 8 bytes little-endian (``<BBHI``): version u8, type u8, seq u16, t_us u32 (sender's
clock in microseconds, modulo 2**32). Every payload below has a fixed layout given by its
``struct`` format; per-joint arrays are float32 in joint order. Decoding is pure: ``decode``
takes one packet and returns a :class:`Frame` or raises :class:`ProtocolError`.
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass
from typing import ClassVar

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


def _joint_count(payload: bytes, name: str) -> int:
    if not payload:
        raise ProtocolError("payload", f"{name} payload is empty")
    n = payload[0]
    if not 1 <= n <= MAX_JOINTS:
        raise ProtocolError("payload", f"{name} joint count {n} outside 1..{MAX_JOINTS}")
    return n


@dataclass(frozen=True)
class Hello:
    """Host -> controller: start a session; the controller answers CAPABILITIES."""

    TYPE: ClassVar[MsgType] = MsgType.HELLO
    FMT: ClassVar[struct.Struct] = struct.Struct("<B")
    max_version: int = PROTOCOL_VERSION

    def pack(self) -> bytes:
        return self.FMT.pack(self.max_version)

    @classmethod
    def unpack(cls, p: bytes) -> Hello:
        _check_len(p, cls.FMT.size, "HELLO")
        return cls(*cls.FMT.unpack(p))


@dataclass(frozen=True)
class Capabilities:
    """Controller -> host: what this controller is (reply to HELLO)."""

    TYPE: ClassVar[MsgType] = MsgType.CAPABILITIES
    FMT: ClassVar[struct.Struct] = struct.Struct("<BBHHH16s")
    n_joints: int
    version: int
    tick_hz: int
    telemetry_hz: int
    watchdog_ms: int
    name: bytes = b""

    def pack(self) -> bytes:
        return self.FMT.pack(
            self.n_joints, self.version, self.tick_hz, self.telemetry_hz, self.watchdog_ms, self.name[:16]
        )

    @classmethod
    def unpack(cls, p: bytes) -> Capabilities:
        _check_len(p, cls.FMT.size, "CAPABILITIES")
        n, v, tick, tel, wd, name = cls.FMT.unpack(p)
        return cls(n, v, tick, tel, wd, name.rstrip(b"\x00"))


@dataclass(frozen=True)
class ConfigureLimits:
    """Host -> controller, acknowledged: per-joint position range, speed and per-tick step."""

    TYPE: ClassVar[MsgType] = MsgType.CONFIGURE_LIMITS
    position_min: tuple[float, ...]
    position_max: tuple[float, ...]
    velocity_max: tuple[float, ...]
    step_max: tuple[float, ...]

    def pack(self) -> bytes:
        n = len(self.position_min)
        rows = [v for j in range(n) for v in (self.position_min[j], self.position_max[j],
                                              self.velocity_max[j], self.step_max[j])]  # fmt: skip
        return struct.pack(f"<B{4 * n}f", n, *rows)

    @classmethod
    def unpack(cls, p: bytes) -> ConfigureLimits:
        n = _joint_count(p, "CONFIGURE_LIMITS")
        _check_len(p, 1 + 16 * n, "CONFIGURE_LIMITS")
        v = struct.unpack_from(f"<{4 * n}f", p, 1)
        _floats(v, "limit")
        return cls(v[0::4], v[1::4], v[2::4], v[3::4])


@dataclass(frozen=True)
class ConfigureWatchdog:
    """Host -> controller, acknowledged: watchdog timeout and telemetry rate."""

    TYPE: ClassVar[MsgType] = MsgType.CONFIGURE_WATCHDOG
    FMT: ClassVar[struct.Struct] = struct.Struct("<HH")
    timeout_ms: int
    telemetry_hz: int

    def pack(self) -> bytes:
        return self.FMT.pack(self.timeout_ms, self.telemetry_hz)

    @classmethod
    def unpack(cls, p: bytes) -> ConfigureWatchdog:
        _check_len(p, cls.FMT.size, "CONFIGURE_WATCHDOG")
        return cls(*cls.FMT.unpack(p))


@dataclass(frozen=True)
class Torque:
    """Host -> controller, acknowledged: 1 enables torque (hold where it is), 0 disables."""

    TYPE: ClassVar[MsgType] = MsgType.TORQUE
    FMT: ClassVar[struct.Struct] = struct.Struct("<B")
    enable: bool

    def pack(self) -> bytes:
        return self.FMT.pack(1 if self.enable else 0)

    @classmethod
    def unpack(cls, p: bytes) -> Torque:
        _check_len(p, cls.FMT.size, "TORQUE")
        (e,) = cls.FMT.unpack(p)
        if e > 1:
            raise ProtocolError("payload", f"TORQUE enable byte {e} not 0 or 1")
        return cls(bool(e))


@dataclass(frozen=True)
class ClearFaults:
    """Host -> controller, acknowledged: clear the latched fault bits in ``mask``."""

    TYPE: ClassVar[MsgType] = MsgType.CLEAR_FAULTS
    FMT: ClassVar[struct.Struct] = struct.Struct("<H")
    mask: int

    def pack(self) -> bytes:
        return self.FMT.pack(self.mask)

    @classmethod
    def unpack(cls, p: bytes) -> ClearFaults:
        _check_len(p, cls.FMT.size, "CLEAR_FAULTS")
        return cls(*cls.FMT.unpack(p))


@dataclass(frozen=True)
class Setpoint:
    """Host -> controller, streamed unacknowledged: joint position targets in radians."""

    TYPE: ClassVar[MsgType] = MsgType.SETPOINT
    positions: tuple[float, ...]

    def pack(self) -> bytes:
        n = len(self.positions)
        return struct.pack(f"<B{n}f", n, *self.positions)

    @classmethod
    def unpack(cls, p: bytes) -> Setpoint:
        n = _joint_count(p, "SETPOINT")
        _check_len(p, 1 + 4 * n, "SETPOINT")
        v = struct.unpack_from(f"<{n}f", p, 1)
        _floats(v, "setpoint")
        return cls(v)


@dataclass(frozen=True)
class Heartbeat:
    """Host -> controller, unacknowledged: feeds the watchdog without a new target."""

    TYPE: ClassVar[MsgType] = MsgType.HEARTBEAT

    def pack(self) -> bytes:
        return b""

    @classmethod
    def unpack(cls, p: bytes) -> Heartbeat:
        _check_len(p, 0, "HEARTBEAT")
        return cls()


@dataclass(frozen=True)
class TelemetryMsg:
    """Controller -> host, streamed: state, counters, and per-joint position/velocity/effort."""

    TYPE: ClassVar[MsgType] = MsgType.TELEMETRY
    FIXED: ClassVar[struct.Struct] = struct.Struct("<HBBHHIIII")
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

    def pack(self) -> bytes:
        n = len(self.positions)
        head = self.FIXED.pack(self.last_applied_seq, self.state, n, self.faults, self.applied_age_ticks,
                               self.rx_good, self.rx_bad, self.rx_gap, self.rx_stale)  # fmt: skip
        return head + struct.pack(f"<{3 * n}f", *self.positions, *self.velocities, *self.efforts)

    @classmethod
    def unpack(cls, p: bytes) -> TelemetryMsg:
        if len(p) < cls.FIXED.size:
            raise ProtocolError("payload", f"TELEMETRY payload {len(p)} bytes < {cls.FIXED.size}")
        seq, state, n, faults, age, good, bad, gap, stale = cls.FIXED.unpack_from(p)
        if not 1 <= n <= MAX_JOINTS:
            raise ProtocolError("payload", f"TELEMETRY joint count {n} outside 1..{MAX_JOINTS}")
        _check_len(p, cls.FIXED.size + 12 * n, "TELEMETRY")
        v = struct.unpack_from(f"<{3 * n}f", p, cls.FIXED.size)
        return cls(seq, state, faults, age, good, bad, gap, stale, v[:n], v[n : 2 * n], v[2 * n :])


@dataclass(frozen=True)
class FaultReport:
    """Controller -> host, unacknowledged: a fault was latched (repeated while it stays latched)."""

    TYPE: ClassVar[MsgType] = MsgType.FAULT_REPORT
    FMT: ClassVar[struct.Struct] = struct.Struct("<HHBf")
    latched: int  # all latched bits
    new: int  # bits latched by this event
    joint: int  # joint that tripped it, 255 = not joint specific
    value: float  # the offending measurement (rad, rad/s, Nm, or ms for the watchdog)

    def pack(self) -> bytes:
        return self.FMT.pack(self.latched, self.new, self.joint, self.value)

    @classmethod
    def unpack(cls, p: bytes) -> FaultReport:
        _check_len(p, cls.FMT.size, "FAULT_REPORT")
        return cls(*cls.FMT.unpack(p))


@dataclass(frozen=True)
class TimeSyncRequest:
    """Host -> controller: t1 = host clock (us, u64) when sent."""

    TYPE: ClassVar[MsgType] = MsgType.TIME_SYNC_REQUEST
    FMT: ClassVar[struct.Struct] = struct.Struct("<Q")
    t1_us: int

    def pack(self) -> bytes:
        return self.FMT.pack(self.t1_us)

    @classmethod
    def unpack(cls, p: bytes) -> TimeSyncRequest:
        _check_len(p, cls.FMT.size, "TIME_SYNC_REQUEST")
        return cls(*cls.FMT.unpack(p))


@dataclass(frozen=True)
class TimeSyncResponse:
    """Controller -> host: t1 echoed, t2 = controller clock at receipt, t3 = at reply (u64 us)."""

    TYPE: ClassVar[MsgType] = MsgType.TIME_SYNC_RESPONSE
    FMT: ClassVar[struct.Struct] = struct.Struct("<QQQ")
    t1_us: int
    t2_us: int
    t3_us: int

    def pack(self) -> bytes:
        return self.FMT.pack(self.t1_us, self.t2_us, self.t3_us)

    @classmethod
    def unpack(cls, p: bytes) -> TimeSyncResponse:
        _check_len(p, cls.FMT.size, "TIME_SYNC_RESPONSE")
        return cls(*cls.FMT.unpack(p))


@dataclass(frozen=True)
class Ack:
    """Controller -> host: the command with header seq ``acked_seq`` was applied."""

    TYPE: ClassVar[MsgType] = MsgType.ACK
    FMT: ClassVar[struct.Struct] = struct.Struct("<HBB")
    acked_seq: int
    acked_type: int
    reason: int = 0

    def pack(self) -> bytes:
        return self.FMT.pack(self.acked_seq, self.acked_type, self.reason)

    @classmethod
    def unpack(cls, p: bytes) -> Ack:
        _check_len(p, cls.FMT.size, cls.TYPE.name)
        return cls(*cls.FMT.unpack(p))


@dataclass(frozen=True)
class Nack(Ack):
    """Controller -> host: the command was refused; ``reason`` is a :class:`NackReason`."""

    TYPE: ClassVar[MsgType] = MsgType.NACK


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

_BY_TYPE: dict[int, type] = {
    cls.TYPE: cls
    for cls in (Hello, Capabilities, ConfigureLimits, ConfigureWatchdog, Torque, ClearFaults, Setpoint,
                Heartbeat, TelemetryMsg, FaultReport, TimeSyncRequest, TimeSyncResponse, Ack, Nack)
}  # fmt: skip

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

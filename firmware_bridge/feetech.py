"""Feetech STS/SCS serial bus servo protocol: packets as bytes, nothing else (no port, no clock).

Packet (instruction from the host and status from a servo have the same shape)::

    FF FF | ID | LEN | INST or ERROR | params (LEN - 2 bytes) | CHK
    LEN = len(params) + 2;  CHK = ~(ID + LEN + INST + sum(params)) & 0xFF

No byte stuffing: a receiver resynchronises on the next FF FF when a length or checksum is wrong.
Multi-byte registers are little-endian on STS (STS3215 of the SO-100/SO-101 arms) and big-endian
on SCS. Signed registers are sign-magnitude (the sign in one bit: 15 for positions and speeds, 10
for the load, 11 for the homing offset), not two's complement.

Status error byte bits (surfaced as data by the bus, never raised): 0x01 input voltage, 0x02 angle
sensor, 0x04 overheat, 0x08 overcurrent, 0x20 overload.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from firmware_bridge.servo_common import ByteParser, Packet, ServoError

BROADCAST_ID = 0xFE
MAX_ID = 0xFD

PING, READ, WRITE, REG_WRITE, ACTION, SYNC_READ, SYNC_WRITE = 0x01, 0x02, 0x03, 0x04, 0x05, 0x82, 0x83

# STS3215 control table (addresses; sizes in comments)
MODEL_NUMBER = 3  # 2
ID_REG = 5  # 1
MIN_ANGLE_LIMIT, MAX_ANGLE_LIMIT = 9, 11  # 2 each, ticks
HOMING_OFFSET = 31  # 2, sign-magnitude bit 11
TORQUE_ENABLE = 40  # 1
ACCELERATION = 41  # 1, 100 ticks/s^2 units
GOAL_POSITION = 42  # 2, sign bit 15
GOAL_TIME = 44  # 2
GOAL_SPEED = 46  # 2, sign bit 15, ticks/s
LOCK = 55  # 1: 0 lets EEPROM registers be written
PRESENT_POSITION = 56  # 2, sign bit 15
PRESENT_SPEED = 58  # 2, sign bit 15, ticks/s
PRESENT_LOAD = 60  # 2, sign bit 10, 0.1 % of the torque limit
PRESENT_VOLTAGE = 62  # 1, 0.1 V
PRESENT_TEMPERATURE = 63  # 1, degrees C
STATE_BLOCK = (PRESENT_POSITION, 8)  # what one sync read returns per servo: position .. temperature
STS3215_MODEL = 777
TICKS_PER_REV = 4096

ERR_VOLTAGE, ERR_ANGLE, ERR_OVERHEAT, ERR_OVERCURRENT, ERR_OVERLOAD = 0x01, 0x02, 0x04, 0x08, 0x20

# status error bits -> the bus's error vocabulary
_ERRORS = (
    (ERR_VOLTAGE, ServoError.VOLTAGE),
    (ERR_ANGLE, ServoError.SENSOR),
    (ERR_OVERHEAT, ServoError.OVERHEAT),
    (ERR_OVERCURRENT, ServoError.OVERCURRENT),
    (ERR_OVERLOAD, ServoError.OVERLOAD),
)


_NO_ERROR = ServoError(0)


def servo_error(error_byte: int) -> ServoError:
    """The status error byte as :class:`ServoError` bits."""
    if not error_byte:
        return _NO_ERROR
    out = ServoError(0)
    for bit, err in _ERRORS:
        if error_byte & bit:
            out |= err
    return out


def checksum(body: Iterable[int]) -> int:
    """``~sum(body) & 0xFF`` over ID, LEN, INST/ERROR and the params."""
    return ~sum(body) & 0xFF


def packet(servo_id: int, inst: int, params: bytes = b"") -> bytes:
    """One instruction (or, from an emulated servo, status) packet."""
    if not 0 <= servo_id <= BROADCAST_ID:
        raise ValueError(f"servo id {servo_id} outside 0..{BROADCAST_ID}")
    if len(params) > 250:
        raise ValueError(f"{len(params)} parameter bytes; a packet holds at most 250")
    body = bytes((servo_id, len(params) + 2, inst)) + params
    return b"\xff\xff" + body + bytes((checksum(body),))


# ---- signed registers and byte order -----------------------------------------------------------
def to_sign_magnitude(value: int, sign_bit: int) -> int:
    """``-5`` with sign bit 15 -> ``0x8005``. Refuses a magnitude that does not fit."""
    mag = abs(int(value))
    if mag >= 1 << sign_bit:
        raise ValueError(f"{value} does not fit sign-magnitude with the sign in bit {sign_bit}")
    return mag | (1 << sign_bit) if value < 0 else mag


def from_sign_magnitude(raw: int, sign_bit: int) -> int:
    mag = raw & ((1 << sign_bit) - 1)
    return -mag if raw & (1 << sign_bit) else mag


def word(value: int, big_endian: bool = False) -> bytes:
    return (value & 0xFFFF).to_bytes(2, "big" if big_endian else "little")


def unword(data: bytes | Sequence[int], big_endian: bool = False) -> int:
    return int.from_bytes(bytes(data[:2]), "big" if big_endian else "little")


# ---- instructions ------------------------------------------------------------------------------
def ping(servo_id: int) -> bytes:
    return packet(servo_id, PING)


def read(servo_id: int, address: int, length: int) -> bytes:
    return packet(servo_id, READ, bytes((address, length)))


def write(servo_id: int, address: int, data: bytes) -> bytes:
    return packet(servo_id, WRITE, bytes((address,)) + data)


def sync_write(address: int, length: int, blocks: Sequence[tuple[int, bytes]]) -> bytes:
    """Broadcast SYNC WRITE: ``length`` bytes at ``address`` for each ``(id, data)``. No replies."""
    params = bytearray((address, length))
    for servo_id, data in blocks:
        if len(data) != length:
            raise ValueError(f"servo {servo_id}: {len(data)} data bytes, sync write of {length}")
        params.append(servo_id)
        params += data
    return packet(BROADCAST_ID, SYNC_WRITE, bytes(params))


def sync_read(address: int, length: int, ids: Sequence[int]) -> bytes:
    """Broadcast SYNC READ: each servo answers with its own status packet, in the order of ``ids``."""
    return packet(BROADCAST_ID, SYNC_READ, bytes((address, length, *ids)))


def status_size(n_params: int) -> int:
    """Wire bytes of one status packet with ``n_params`` data bytes."""
    return n_params + 6


# ---- the receiver ------------------------------------------------------------------------------
class Parser(ByteParser):
    """Bytes in, :class:`Packet` out. Resynchronises on FF FF; counts what it throws away.

    ``Packet.code`` is the instruction (instruction packets) or the error byte (status packets):
    the two look the same on the wire, the reader knows which side it is on."""

    def feed(self, data: bytes) -> list[Packet]:
        buf = self._buf
        buf += data
        out: list[Packet] = []
        i, n = 0, len(buf)  # parse at offset i; drop what was used once at the end (one memmove)
        while True:
            start = buf.find(b"\xff\xff", i)
            if start < 0:
                keep = n - (1 if buf[-1:] == b"\xff" else 0)
                self.bytes_skipped += keep - i
                del buf[:keep]
                return out
            if start > i:
                self.bytes_skipped += start - i
                i = start
            if n - i < 4:
                break
            sid, length = buf[i + 2], buf[i + 3]
            if sid == 0xFF:  # FF FF FF: the header starts one byte later
                self.bytes_skipped += 1
                i += 1
                continue
            if length < 2:
                self.bytes_skipped += 2
                i += 2
                continue
            end = i + 4 + length
            if n < end:
                break
            if checksum(buf[i + 2 : end - 1]) != buf[end - 1]:
                self.checksum_errors += 1
                self.bytes_skipped += 2
                i += 2  # resync: the real header may start inside this one
                continue
            out.append(Packet(sid, buf[i + 4], bytes(buf[i + 5 : end - 1])))
            i = end
        del buf[:i]
        return out

"""Dynamixel Protocol 2.0: packets as bytes, nothing else (no port, no clock).

Instruction packet (host -> servo)::

    FF FF FD 00 | ID | LEN_L LEN_H | INST | params | CRC_L CRC_H       LEN = len(params) + 3

Status packet (servo -> host): INST is 0x55, then an ERROR byte, then the params (LEN = n + 4).
Byte stuffing: inside INST..params every ``FF FF FD`` is sent as ``FF FF FD FD`` (LEN counts the
stuffed bytes), so a header never appears inside a packet. The CRC covers the stuffed packet
from the first header byte to the last parameter.

CRC-16 with polynomial 0x8005, init 0, no reflection, no final XOR ("CRC-16/BUYPASS"). Neither
``binascii`` (its ``crc_hqx`` is CRC-16/CCITT, poly 0x1021) nor ``crc32c`` implements it, so a
256-entry table is computed once at import. Check: ping of ID 1 -> CRC bytes 19 4E.

Error byte: bit 7 is the alert (read Hardware Error Status, register 70); bits 0-6 a number
(1 result fail, 2 instruction, 3 CRC, 4 data range, 5 data length, 6 data limit, 7 access).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence

from firmware_bridge.servo_common import ByteParser, Packet, ServoError

BROADCAST_ID = 0xFE
MAX_ID = 0xFC
HEADER = b"\xff\xff\xfd\x00"

PING, READ, WRITE, SYNC_READ, SYNC_WRITE, FAST_SYNC_READ, BULK_READ = 0x01, 0x02, 0x03, 0x82, 0x83, 0x8A, 0x92
STATUS = 0x55
ERR_ALERT = 0x80

# X-series (XL430, XM430, XC330 ...) control table (addresses; sizes in comments)
MODEL_NUMBER = 0  # 2
HOMING_OFFSET = 20  # 4, two's complement, ticks
TORQUE_ENABLE = 64  # 1
HARDWARE_ERROR_STATUS = 70  # 1
BUS_WATCHDOG = 98  # 1: 0 off, 1..127 in 20 ms units; reads -1 (0xFF) once it tripped
PROFILE_ACCELERATION = 108  # 4
PROFILE_VELOCITY = 112  # 4
GOAL_POSITION = 116  # 4, two's complement, ticks
PRESENT_CURRENT = 126  # 2, signed, mA (model dependent unit)
PRESENT_VELOCITY = 128  # 4, signed, 0.229 rpm
PRESENT_POSITION = 132  # 4, signed, ticks
PRESENT_INPUT_VOLTAGE = 144  # 2, 0.1 V
PRESENT_TEMPERATURE = 146  # 1, degrees C
STATE_BLOCK = (PRESENT_CURRENT, 21)  # one sync read per servo: current .. temperature
XM430_W350_MODEL = 1020
TICKS_PER_REV = 4096
WATCHDOG_UNIT_MS = 20
VELOCITY_UNIT_RPM = 0.229


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        c = byte << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x8005) if c & 0x8000 else (c << 1)
        table.append(c & 0xFFFF)
    return tuple(table)


_TABLE = _crc_table()


@functools.cache
def _table16() -> tuple[int, ...]:
    """CRC of two message bytes at once: for a 16-bit CRC the register after bytes b0, b1 depends
    only on ``u = crc ^ (b0 << 8 | b1)``, so one lookup replaces two (built on first use, 65,536
    entries; half the Python-level loop of the byte table)."""
    t = _TABLE
    return tuple(((t[u >> 8] & 0xFF) << 8) ^ t[(u & 0xFF) ^ (t[u >> 8] >> 8)] for u in range(65536))


def crc16_bytewise(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """The reference: CRC-16 (poly 0x8005, MSB first), one table lookup per byte."""
    t = _TABLE
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ t[((crc >> 8) ^ b) & 0xFF]
    return crc


def crc16(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-16 (poly 0x8005, MSB first) of ``data``, continuing from ``crc``; equal to
    :func:`crc16_bytewise`, two bytes per lookup."""
    n = len(data)
    if n < 16:
        return crc16_bytewise(data, crc)
    t16 = _table16()
    for w in struct.unpack_from(f">{n >> 1}H", data):
        crc = t16[crc ^ w]
    if n & 1:
        crc = crc16_bytewise(memoryview(data)[n - 1 :], crc)
    return crc


_NO_ERROR = ServoError(0)


def servo_error(error_byte: int) -> ServoError:
    if not error_byte:
        return _NO_ERROR
    out = ServoError(0)
    if error_byte & ERR_ALERT:
        out |= ServoError.HARDWARE
    if error_byte & 0x7F:
        out |= ServoError.COMMAND
    return out


def hardware_error(status: int) -> ServoError:
    """Register 70 bits (0 voltage, 2 overheat, 3 encoder, 4 electrical shock, 5 overload)."""
    out = ServoError(0)
    for bit, err in ((0x01, ServoError.VOLTAGE), (0x04, ServoError.OVERHEAT), (0x08, ServoError.SENSOR),
                     (0x10, ServoError.OVERCURRENT), (0x20, ServoError.OVERLOAD)):  # fmt: skip
        if status & bit:
            out |= err
    return out


def _stuffed(unstuffed: bytes) -> bytes:
    """Stuff INST..params of ``unstuffed`` (header .. last param, no CRC); the pattern test reads
    the unstuffed bytes, the length bytes before INST included, as the vendor SDK does."""
    if unstuffed.find(b"\xff\xff\xfd", 5) < 0:
        return unstuffed  # the common case: nothing to stuff, LEN already right
    out = bytearray(unstuffed[:7])
    for k in range(7, len(unstuffed)):
        out.append(unstuffed[k])
        if unstuffed[k] == 0xFD and unstuffed[k - 1] == 0xFF and unstuffed[k - 2] == 0xFF:
            out.append(0xFD)
    n = len(out) - 7 + 2  # INST..params + CRC
    out[5:7] = n.to_bytes(2, "little")
    return bytes(out)


def packet(servo_id: int, inst: int, params: bytes = b"", *, stuff: bool = True) -> bytes:
    """One instruction packet (``inst``), or with ``inst = STATUS`` and the error byte as the first
    param, a status packet."""
    if not 0 <= servo_id <= BROADCAST_ID:
        raise ValueError(f"servo id {servo_id} outside 0..{BROADCAST_ID}")
    raw = HEADER + bytes((servo_id,)) + (len(params) + 3).to_bytes(2, "little") + bytes((inst,)) + params
    body = _stuffed(raw) if stuff else raw
    return body + crc16(body).to_bytes(2, "little")


def status(servo_id: int, error: int, params: bytes = b"") -> bytes:
    return packet(servo_id, STATUS, bytes((error,)) + params)


def addr_len(address: int, length: int) -> bytes:
    """The 4 parameter bytes of a read or sync instruction: address and length, little-endian."""
    return address.to_bytes(2, "little") + length.to_bytes(2, "little")


def ping(servo_id: int) -> bytes:
    return packet(servo_id, PING)


def read(servo_id: int, address: int, length: int) -> bytes:
    return packet(servo_id, READ, addr_len(address, length))


def write(servo_id: int, address: int, data: bytes) -> bytes:
    return packet(servo_id, WRITE, address.to_bytes(2, "little") + data)


def sync_write(address: int, length: int, blocks: Sequence[tuple[int, bytes]]) -> bytes:
    params = bytearray(addr_len(address, length))
    for servo_id, data in blocks:
        if len(data) != length:
            raise ValueError(f"servo {servo_id}: {len(data)} data bytes, sync write of {length}")
        params.append(servo_id)
        params += data
    return packet(BROADCAST_ID, SYNC_WRITE, bytes(params))


def sync_read(address: int, length: int, ids: Sequence[int], *, fast: bool = False) -> bytes:
    """SYNC READ (one status packet per servo, in ``ids`` order) or FAST SYNC READ (one packet)."""
    return packet(BROADCAST_ID, FAST_SYNC_READ if fast else SYNC_READ, addr_len(address, length) + bytes(ids))


def bulk_read(reads: Sequence[tuple[int, int, int]]) -> bytes:
    """BULK READ of ``(id, address, length)`` each; one status packet per servo, in order."""
    params = bytearray()
    for servo_id, address, length in reads:
        params.append(servo_id)
        params += addr_len(address, length)
    return packet(BROADCAST_ID, BULK_READ, bytes(params))


def fast_sync_status(blocks: Sequence[tuple[int, int, bytes]]) -> bytes:
    """The one status packet a FAST SYNC READ gets, from ``(id, error, data)`` per servo::

        header FE LEN 55 | ERR1 ID1 DATA1 CRC1 | ERR2 ID2 DATA2 CRC2 | ...

    each CRC over every byte of the packet before it (so the last one is the packet's CRC)."""
    size = sum(len(d) + 4 for _, _, d in blocks)
    out = bytearray(HEADER + bytes((BROADCAST_ID,)) + (size + 1).to_bytes(2, "little") + bytes((STATUS,)))
    for servo_id, error, data in blocks:
        out += bytes((error, servo_id)) + data
        out += crc16(out).to_bytes(2, "little")
    return bytes(out)


def parse_fast_sync(params: bytes, data_len: int) -> list[Packet]:
    """Split a FAST SYNC READ reply's body (from the first ERR byte, packet CRC included) into one
    :class:`Packet` per servo; ``code`` is that servo's error byte."""
    out = []
    step = data_len + 4
    for k in range(0, len(params) - step + 1, step):
        blk = params[k : k + step]
        out.append(Packet(blk[1], blk[0], bytes(blk[2 : 2 + data_len])))
    return out


def status_size(n_params: int) -> int:
    """Wire bytes of one status packet with ``n_params`` data bytes (no stuffing)."""
    return n_params + 11


# ---- the receiver ------------------------------------------------------------------------------
class Parser(ByteParser):
    """Bytes in, :class:`Packet` out, stuffing removed. Resynchronises on FF FF FD (not FD).

    A status packet gives ``Packet(id, error, params)``; an instruction ``Packet(id, inst, params)``.
    ``fast_sync`` packets (ID FE, status) keep their raw body (ERR ID DATA CRC ...) as params, with
    the packet CRC: :func:`parse_fast_sync` splits it."""

    MAX_LEN = 1024

    def feed(self, data: bytes) -> list[Packet]:
        buf = self._buf
        buf += data
        out: list[Packet] = []
        while True:
            start = buf.find(b"\xff\xff\xfd")
            if start < 0:
                keep = 2 if buf[-2:] == b"\xff\xff" else (1 if buf[-1:] == b"\xff" else 0)
                self._skip(len(buf) - keep)
                return out
            if start:
                self._skip(start)
            if len(buf) < 8:
                return out
            if buf[3] != 0x00 or buf[4] == 0xFF:  # FD FD is stuffed data, reserved byte must be 0
                self._skip(1)
                continue
            length = int.from_bytes(buf[5:7], "little")
            if not 3 <= length <= self.MAX_LEN:
                self._skip(1)
                continue
            end = 7 + length
            if len(buf) < end:
                return out
            if crc16(memoryview(buf)[: end - 2]) != int.from_bytes(buf[end - 2 : end], "little"):
                self.checksum_errors += 1
                self._skip(1)
                continue
            out.append(self._packet(bytes(buf[:end])))
            del buf[:end]

    @staticmethod
    def _packet(raw: bytes) -> Packet:
        sid, inst = raw[4], raw[7]
        if sid == BROADCAST_ID and inst == STATUS:  # fast sync read: its CRCs stay in the params
            return Packet(sid, raw[8], raw[8:])
        body = unstuff(raw[8:-2])
        if inst == STATUS:
            return Packet(sid, body[0] if body else 0, body[1:])
        return Packet(sid, inst, body)


def unstuff(data: bytes) -> bytes:
    """Undo byte stuffing: ``FF FF FD FD`` -> ``FF FF FD``."""
    if b"\xff\xff\xfd\xfd" not in data:
        return data
    out = bytearray()
    k = 0
    while k < len(data):
        out.append(data[k])
        if (
            data[k] == 0xFD
            and k >= 2
            and data[k - 1] == 0xFF
            and data[k - 2] == 0xFF
            and data[k + 1 : k + 2] == b"\xfd"
        ):
            k += 1
        k += 1
    return bytes(out)

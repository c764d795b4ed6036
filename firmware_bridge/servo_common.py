"""What the Feetech and Dynamixel protocol modules share: a decoded packet and the error vocabulary.

A servo's status error bits are data: the bus reports them per joint (``Telemetry.servo_errors``)
and folds them into the protocol's fault bits (``Telemetry.faults``) so the runtime reacts to any
bus in one way. They never raise: an overload bit must not stop the loop, nor the torque-off.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from firmware_bridge.messages import Fault


class Packet(NamedTuple):
    """One packet off the wire. ``code`` is the instruction (host -> servo) or, in a status packet,
    the error byte (servo -> host). A named tuple: a cycle makes one per servo, and a frozen
    dataclass costs four times as much to build."""

    servo_id: int
    code: int
    params: bytes


class ServoError(enum.IntFlag):
    """Error bits a servo reports, in one vocabulary for both vendors."""

    VOLTAGE = 0x01  # input voltage out of range
    SENSOR = 0x02  # angle sensor (Feetech) or motor encoder (Dynamixel)
    OVERHEAT = 0x04
    OVERCURRENT = 0x08
    OVERLOAD = 0x10
    HARDWARE = 0x20  # Dynamixel alert bit: the Hardware Error Status register (70) says which
    COMMAND = 0x40  # Dynamixel: the servo refused the instruction (range, length, access, CRC)
    WATCHDOG = 0x80  # Dynamixel bus watchdog tripped: the servo stopped and refuses goals


class ByteParser:
    """Base of the two receivers: a buffer and the counts of what they threw away."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.checksum_errors = 0  # packets whose checksum (Feetech) or CRC (Dynamixel) failed
        self.bytes_skipped = 0  # bytes dropped while looking for a header

    def reset(self) -> None:
        self._buf.clear()

    @property
    def pending(self) -> int:
        """Bytes held for a packet not complete yet."""
        return len(self._buf)

    def _skip(self, n: int) -> None:
        self.bytes_skipped += n
        del self._buf[:n]


def fault_bits(err: ServoError) -> int:
    """Fold servo error bits into the protocol's :class:`Fault` bits (telemetry ``faults``)."""
    if not err:
        return 0  # the common case, every cycle: no enum arithmetic
    out = 0
    if err & (ServoError.OVERLOAD | ServoError.OVERCURRENT):
        out |= Fault.OVERLOAD
    if err & (ServoError.VOLTAGE | ServoError.SENSOR | ServoError.OVERHEAT | ServoError.HARDWARE):
        out |= Fault.EXTERNAL
    if err & ServoError.WATCHDOG:
        out |= Fault.WATCHDOG
    return out


def wire_time_s(n_bytes: int, baudrate: int) -> float:
    """Time ``n_bytes`` take on a UART at ``baudrate`` (8N1: 10 bits a byte)."""
    return n_bytes * 10.0 / baudrate

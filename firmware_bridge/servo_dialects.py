"""The two vendor dialects behind :class:`~firmware_bridge.servo_bus.ServoBus`: which registers
the bus writes and reads, and how their bytes map to ticks, speeds and efforts.

A dialect builds packets and decodes replies; it never touches the port. The bus does the same
steps for both (sync write the goals, sync read the state block, ping, torque, homing offset).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from firmware_bridge import dynamixel as dx
from firmware_bridge import feetech as ft
from firmware_bridge.servo_common import Packet, ServoError


@dataclass(frozen=True)
class State:
    """One servo's state block, decoded (raw units: ticks, ticks/s, the native effort unit)."""

    position: int
    speed: float
    effort: int
    voltage_v: float
    temperature_c: int


class Feetech:
    """STS (little-endian) or SCS (big-endian) servos."""

    name = "feetech"
    broadcast = ft.BROADCAST_ID
    state_len = ft.STATE_BLOCK[1]
    has_watchdog = False

    def __init__(self, big_endian: bool = False) -> None:
        self.big = big_endian

    def parser(self) -> ft.Parser:
        return ft.Parser()

    def status_size(self, n_params: int) -> int:
        return ft.status_size(n_params)

    def error(self, code: int) -> ServoError:
        return ft.servo_error(code)

    def _word(self, value: int, sign_bit: int = 15) -> bytes:
        return ft.word(ft.to_sign_magnitude(value, sign_bit), self.big)

    def ping(self, sid: int) -> bytes:
        return ft.ping(sid)

    def goals(self, ids: Sequence[int], ticks: Sequence[int], speed: int | None, acc: int | None) -> bytes:
        if speed is None and acc is None:
            return ft.sync_write(
                ft.GOAL_POSITION, 2, [(i, self._word(t)) for i, t in zip(ids, ticks, strict=True)]
            )
        a, s = bytes((acc or 0,)), self._word(speed or 0)
        blocks = [(i, a + self._word(t) + b"\x00\x00" + s) for i, t in zip(ids, ticks, strict=True)]
        return ft.sync_write(ft.ACCELERATION, 7, blocks)  # ACC, GOAL_POSITION, GOAL_TIME, GOAL_SPEED

    def read_state(self, ids: Sequence[int], fast: bool = False) -> bytes:
        return ft.sync_read(ft.STATE_BLOCK[0], self.state_len, ids)

    def split(self, pkt: Packet) -> list[Packet]:
        return [pkt]

    def decode(self, p: bytes) -> State:
        big = self.big
        return State(
            ft.from_sign_magnitude(ft.unword(p[0:2], big), 15),
            float(ft.from_sign_magnitude(ft.unword(p[2:4], big), 15)),
            ft.from_sign_magnitude(ft.unword(p[4:6], big), 10),
            p[6] * 0.1,
            p[7],
        )

    def torque(self, sid: int, on: bool) -> bytes:
        return ft.write(sid, ft.TORQUE_ENABLE, b"\x01" if on else b"\x00")

    def read_homing(self, sid: int) -> tuple[bytes, int, Callable[[bytes], int]]:
        return (
            ft.read(sid, ft.HOMING_OFFSET, 2),
            2,
            lambda p: ft.from_sign_magnitude(ft.unword(p, self.big), 11),
        )

    def write_homing(self, sid: int, offset: int) -> list[bytes]:
        # EEPROM: unlock, write, lock again
        return [
            ft.write(sid, ft.LOCK, b"\x00"),
            ft.write(sid, ft.HOMING_OFFSET, self._word(offset, 11)),
            ft.write(sid, ft.LOCK, b"\x01"),
        ]

    def watchdog(self, sid: int, watchdog_ms: int) -> bytes | None:
        return None  # no communication watchdog on Feetech servos


def _i32(v: int) -> bytes:
    return int(v).to_bytes(4, "little", signed=True)


class Dynamixel:
    """X-series servos on Protocol 2.0."""

    name = "dynamixel"
    broadcast = dx.BROADCAST_ID
    state_len = dx.STATE_BLOCK[1]
    has_watchdog = True
    _RPM = dx.VELOCITY_UNIT_RPM * dx.TICKS_PER_REV / 60.0  # ticks/s per velocity unit

    def __init__(self, fast_sync_read: bool = False) -> None:
        self.fast = fast_sync_read

    def parser(self) -> dx.Parser:
        return dx.Parser()

    def status_size(self, n_params: int) -> int:
        return dx.status_size(n_params)

    def error(self, code: int) -> ServoError:
        return dx.servo_error(code)

    def ping(self, sid: int) -> bytes:
        return dx.ping(sid)

    def goals(self, ids: Sequence[int], ticks: Sequence[int], speed: int | None, acc: int | None) -> bytes:
        if speed is None and acc is None:
            return dx.sync_write(dx.GOAL_POSITION, 4, [(i, _i32(t)) for i, t in zip(ids, ticks, strict=True)])
        pre = _i32(acc or 0) + _i32(speed or 0)
        return dx.sync_write(
            dx.PROFILE_ACCELERATION, 12, [(i, pre + _i32(t)) for i, t in zip(ids, ticks, strict=True)]
        )

    def read_state(self, ids: Sequence[int], fast: bool = False) -> bytes:
        return dx.sync_read(dx.STATE_BLOCK[0], self.state_len, ids, fast=fast and self.fast)

    def split(self, pkt: Packet) -> list[Packet]:
        """A fast sync read reply holds every servo's block; keep those whose CRC checks."""
        if pkt.servo_id != dx.BROADCAST_ID:
            return [pkt]
        return dx.parse_fast_sync(pkt.params, self.state_len)

    def decode(self, p: bytes) -> State:
        return State(
            int.from_bytes(p[6:10], "little", signed=True),
            int.from_bytes(p[2:6], "little", signed=True) * self._RPM,
            int.from_bytes(p[0:2], "little", signed=True),
            int.from_bytes(p[18:20], "little") * 0.1,
            p[20],
        )

    def torque(self, sid: int, on: bool) -> bytes:
        return dx.write(sid, dx.TORQUE_ENABLE, b"\x01" if on else b"\x00")

    def read_homing(self, sid: int) -> tuple[bytes, int, Callable[[bytes], int]]:
        return dx.read(sid, dx.HOMING_OFFSET, 4), 4, lambda p: int.from_bytes(p[:4], "little", signed=True)

    def write_homing(self, sid: int, offset: int) -> list[bytes]:
        return [dx.write(sid, dx.HOMING_OFFSET, _i32(offset))]

    def watchdog(self, sid: int, watchdog_ms: int) -> bytes | None:
        """Bus Watchdog (register 98) in 20 ms units, rounded up; 0 turns it off (and clears a trip)."""
        units = 0 if watchdog_ms <= 0 else min(127, math.ceil(watchdog_ms / dx.WATCHDOG_UNIT_MS))
        return dx.write(sid, dx.BUS_WATCHDOG, bytes((units,)))


def dialect(kind: str, *, big_endian: bool = False, fast_sync_read: bool = False) -> Feetech | Dynamixel:
    if kind == "feetech":
        return Feetech(big_endian)
    if kind == "dynamixel":
        return Dynamixel(fast_sync_read)
    raise ValueError(f"unknown servo bus {kind!r}; allowed: feetech, dynamixel")

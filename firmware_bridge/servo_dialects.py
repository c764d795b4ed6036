"""The two vendor dialects behind :class:`~firmware_bridge.servo_bus.ServoBus`: which registers
the bus writes and reads, and how their bytes map to ticks, speeds and efforts.

A dialect builds packets and decodes replies; it never touches the port. The bus does the same
steps for both (sync write the goals, sync read the state block, ping, torque, homing offset).

The per-period work is one ``struct`` call over all servos: ``goals`` packs every goal with a
precompiled format, ``decode_block`` unpacks the (n, state_len) bytes of the newest replies in
one call (for six servos a precompiled struct beats both a per-servo decode and numpy, whose
per-call overhead dominates arrays this small: bench/bench_servo_bus.py --breakdown).
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

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

    model_register = (ft.MODEL_NUMBER, 2)

    def __init__(self, big_endian: bool = False) -> None:
        self.big = big_endian
        self._e = ">" if big_endian else "<"

    @functools.cache  # noqa: B019 (a dialect lives as long as its bus; one entry per servo count)
    def _structs(self, n: int) -> tuple[struct.Struct, struct.Struct, struct.Struct]:
        """Goal positions, goals with acceleration and speed, state blocks, for ``n`` servos."""
        e = self._e
        return (struct.Struct(f"{e}BB" + "BH" * n), struct.Struct(f"{e}BB" + "BBHHH" * n),
                struct.Struct(e + "HHHxx" * n))  # fmt: skip

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

    def goals(self, ids: Sequence[int], ticks: Sequence[int] | np.ndarray, speed: int | None,
              acc: int | None) -> bytes:  # fmt: skip
        """One SYNC WRITE of every goal position (ticks, sign-magnitude bit 15); with ``speed`` or
        ``acc``, of ACC, GOAL_POSITION, GOAL_TIME, GOAL_SPEED (41..47)."""
        t = [_sm15(int(x)) for x in (ticks.tolist() if isinstance(ticks, np.ndarray) else ticks)]
        goal, ext, _ = self._structs(len(t))
        if speed is None and acc is None:
            args = [v for pair in zip(ids, t, strict=True) for v in pair]
            return ft.packet(ft.BROADCAST_ID, ft.SYNC_WRITE, goal.pack(ft.GOAL_POSITION, 2, *args))
        a, sp = acc or 0, _sm15(speed or 0)
        args = [v for i, x in zip(ids, t, strict=True) for v in (i, a, x, 0, sp)]
        return ft.packet(ft.BROADCAST_ID, ft.SYNC_WRITE, ext.pack(ft.ACCELERATION, 7, *args))

    def read_state(self, ids: Sequence[int], fast: bool = False) -> bytes:
        return ft.sync_read(ft.STATE_BLOCK[0], self.state_len, ids)

    def split(self, pkt: Packet) -> list[Packet]:
        return [pkt]

    def decode_block(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n, 8) state-block bytes -> position ticks, speed ticks/s, load (0.1 % units), (n,) each."""
        w = self._structs(len(raw))[2].unpack(raw.tobytes())  # position, speed, load of each servo
        v = [-(x & (b - 1)) if x & b else x & (b - 1) for b, x in zip(_FT_SIGN * len(raw), w, strict=True)]
        return np.array(v[0::3], np.int64), np.array(v[1::3], np.float64), np.array(v[2::3], np.int64)

    def decode(self, p: bytes) -> State:
        pos, speed, load = self.decode_block(np.frombuffer(p[: self.state_len], np.uint8).reshape(1, -1))
        return State(int(pos[0]), float(speed[0]), int(load[0]), p[6] * 0.1, p[7])

    def model(self, ping_params: bytes, read: Callable[[int, int], bytes | None]) -> int | None:
        """The model number: Feetech's ping reply carries none, so read register 3."""
        data = read(ft.MODEL_NUMBER, 2)
        return ft.unword(data, self.big) if data is not None and len(data) >= 2 else None

    def read(self, sid: int, address: int, length: int) -> bytes:
        return ft.read(sid, address, length)

    def write(self, sid: int, address: int, data: bytes) -> bytes:
        return ft.write(sid, address, data)

    def torque(self, sid: int, on: bool) -> bytes:
        return ft.write(sid, ft.TORQUE_ENABLE, b"\x01" if on else b"\x00")

    # what a LeRobot calibration puts into a servo (write_calibration): homing offset and the
    # position limits (which an STS keeps its goals within); registers as (address, length, sign bit)
    calibration_registers = (
        (ft.HOMING_OFFSET, 2, 11),
        (ft.MIN_ANGLE_LIMIT, 2, 15),
        (ft.MAX_ANGLE_LIMIT, 2, 15),
    )

    def decode_register(self, data: bytes, sign_bit: int) -> int:
        return ft.from_sign_magnitude(ft.unword(data, self.big), sign_bit)

    def calibration_values(self, homing: int, lo: int, hi: int) -> tuple[int, ...]:
        """The register values of a calibration (limits clamped to the 0..4095 a servo reports)."""
        return homing, min(max(lo, 0), 4095), min(max(hi, 0), 4095)

    def write_calibration(self, sid: int, values: tuple[int, ...]) -> list[bytes]:
        """EEPROM: unlock, homing offset and limits, lock again."""
        homing, lo, hi = values
        w = self._word
        return [ft.write(sid, ft.LOCK, b"\x00"), ft.write(sid, ft.HOMING_OFFSET, w(homing, 11)),
                ft.write(sid, ft.MIN_ANGLE_LIMIT, w(lo)), ft.write(sid, ft.MAX_ANGLE_LIMIT, w(hi)),
                ft.write(sid, ft.LOCK, b"\x01")]  # fmt: skip

    def watchdog(self, sid: int, watchdog_ms: int) -> bytes | None:
        return None  # no communication watchdog on Feetech servos


def _sm15(v: int) -> int:
    """A signed tick count as a sign-magnitude word, sign in bit 15; refuses what does not fit."""
    if not -0x8000 < v < 0x8000:
        raise ValueError(f"{v} does not fit sign-magnitude with the sign in bit 15")
    return v if v >= 0 else -v | 0x8000


_FT_SIGN = (0x8000, 0x8000, 0x400)  # sign bits of a Feetech state block's position, speed and load


def _i32(v: int) -> bytes:
    return int(v).to_bytes(4, "little", signed=True)


@functools.cache
def _dx_structs(n: int) -> tuple[struct.Struct, struct.Struct, struct.Struct]:
    """Goal positions, goals with profile acceleration and velocity, state blocks (PRESENT_CURRENT
    126 .. PRESENT_TEMPERATURE 146: current, velocity, position, 8 bytes, voltage, temperature)."""
    return (struct.Struct("<" + "Bi" * n), struct.Struct("<" + "Biii" * n),
            struct.Struct("<" + "hii8xHB" * n))  # fmt: skip


class Dynamixel:
    """X-series servos on Protocol 2.0."""

    name = "dynamixel"
    broadcast = dx.BROADCAST_ID
    state_len = dx.STATE_BLOCK[1]
    has_watchdog = True
    _RPM = dx.VELOCITY_UNIT_RPM * dx.TICKS_PER_REV / 60.0  # ticks/s per velocity unit

    model_register = (dx.MODEL_NUMBER, 2)

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

    def goals(self, ids: Sequence[int], ticks: Sequence[int] | np.ndarray, speed: int | None,
              acc: int | None) -> bytes:  # fmt: skip
        """One SYNC WRITE of GOAL_POSITION (116), or of the profile acceleration and velocity and
        the goal (108..119) when ``speed`` or ``acc`` is set."""
        t = ticks.tolist() if isinstance(ticks, np.ndarray) else [int(x) for x in ticks]
        goal, ext, _ = _dx_structs(len(t))
        if speed is None and acc is None:
            data = goal.pack(*[v for pair in zip(ids, t, strict=True) for v in pair])
            return dx.packet(dx.BROADCAST_ID, dx.SYNC_WRITE, dx.addr_len(dx.GOAL_POSITION, 4) + data)
        a, sp = acc or 0, speed or 0
        data = ext.pack(*[v for i, x in zip(ids, t, strict=True) for v in (i, a, sp, x)])
        return dx.packet(dx.BROADCAST_ID, dx.SYNC_WRITE, dx.addr_len(dx.PROFILE_ACCELERATION, 12) + data)

    def read_state(self, ids: Sequence[int], fast: bool = False) -> bytes:
        return dx.sync_read(dx.STATE_BLOCK[0], self.state_len, ids, fast=fast and self.fast)

    def split(self, pkt: Packet) -> list[Packet]:
        """A fast sync read reply holds every servo's block; keep those whose CRC checks."""
        if pkt.servo_id != dx.BROADCAST_ID:
            return [pkt]
        return dx.parse_fast_sync(pkt.params, self.state_len)

    def decode_block(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n, 21) state-block bytes -> position ticks, velocity ticks/s, current (mA), (n,) each."""
        v = _dx_structs(len(raw))[2].unpack(raw.tobytes())  # 5 values per servo
        pos, cur = np.array(v[2::5], np.int64), np.array(v[0::5], np.int64)
        vel = np.array(v[1::5], np.float64)
        return pos, vel * self._RPM, cur

    def decode(self, p: bytes) -> State:
        cur, vel, pos, volt, temp = _dx_structs(1)[2].unpack(p[: self.state_len])
        return State(pos, vel * self._RPM, cur, volt * 0.1, temp)

    def model(self, ping_params: bytes, read: Callable[[int, int], bytes | None]) -> int | None:
        """The model number: the first two bytes of a Protocol 2.0 ping reply."""
        return int.from_bytes(ping_params[:2], "little") if len(ping_params) >= 2 else None

    def read(self, sid: int, address: int, length: int) -> bytes:
        return dx.read(sid, address, length)

    def write(self, sid: int, address: int, data: bytes) -> bytes:
        return dx.write(sid, address, data)

    def torque(self, sid: int, on: bool) -> bytes:
        return dx.write(sid, dx.TORQUE_ENABLE, b"\x01" if on else b"\x00")

    calibration_registers = ((dx.HOMING_OFFSET, 4, 0),)  # the homing offset (two's complement)

    def decode_register(self, data: bytes, sign_bit: int) -> int:
        return int.from_bytes(data[:4], "little", signed=True)

    def calibration_values(self, homing: int, lo: int, hi: int) -> tuple[int, ...]:
        return (homing,)

    def write_calibration(self, sid: int, values: tuple[int, ...]) -> list[bytes]:
        return [dx.write(sid, dx.HOMING_OFFSET, _i32(values[0]))]

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

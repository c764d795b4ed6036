"""The two vendor dialects behind :class:`~firmware_bridge.servo_bus.ServoBus`: which registers
the bus writes and reads, and how their bytes map to ticks, speeds and efforts.

A dialect builds packets and decodes replies; it never touches the port. The bus does the same
steps for both (sync write the goals, sync read the state block, ping, torque, homing offset).

The per-period work is vectorised over the servos: ``goals`` packs every goal with one numpy
structured array, ``decode_block`` turns the (n, state_len) bytes of the newest replies into
ticks, speeds and efforts in a few array operations (a per-servo Python decode cost more than
the wire time of the replies at 1 Mbit/s).
"""

from __future__ import annotations

import math
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
        e = ">" if big_endian else "<"
        self._u16 = np.dtype(f"{e}u2")
        self._goal = np.dtype([("id", "u1"), ("pos", f"{e}u2")])
        self._goal_ext = np.dtype([("id", "u1"), ("acc", "u1"), ("pos", f"{e}u2"), ("time", f"{e}u2"),
                                   ("speed", f"{e}u2")])  # fmt: skip

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
        t = _sign_magnitude(np.asarray(ticks, np.int64), 15)
        if speed is None and acc is None:
            blocks = np.empty(len(t), self._goal)
            blocks["id"], blocks["pos"] = ids, t
            return ft.packet(ft.BROADCAST_ID, ft.SYNC_WRITE, bytes((ft.GOAL_POSITION, 2)) + blocks.tobytes())
        blocks = np.zeros(len(t), self._goal_ext)
        blocks["id"], blocks["acc"], blocks["pos"] = ids, acc or 0, t
        blocks["speed"] = _sign_magnitude(np.array([speed or 0]), 15)[0]
        return ft.packet(ft.BROADCAST_ID, ft.SYNC_WRITE, bytes((ft.ACCELERATION, 7)) + blocks.tobytes())

    def read_state(self, ids: Sequence[int], fast: bool = False) -> bytes:
        return ft.sync_read(ft.STATE_BLOCK[0], self.state_len, ids)

    def split(self, pkt: Packet) -> list[Packet]:
        return [pkt]

    def decode_block(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n, 8) state-block bytes -> position ticks, speed ticks/s, load (0.1 % units), (n,) each."""
        w = raw.view(self._u16)[:, :3].astype(np.int64)  # position, speed, load words
        mag = w & _FT_MAG  # sign-magnitude: sign bit 15, 15, 10
        v = np.where(w & _FT_SIGN, -mag, mag)
        return v[:, 0], v[:, 1].astype(np.float64), v[:, 2]

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


def _sign_magnitude(v: np.ndarray, sign_bit: int) -> np.ndarray:
    """Signed ints -> sign-magnitude words (``-5`` -> ``0x8005`` for bit 15); refuses what does not fit."""
    mag = np.abs(v)
    if mag.size and int(mag.max()) >= 1 << sign_bit:
        raise ValueError(f"{v.tolist()} do not fit sign-magnitude with the sign in bit {sign_bit}")
    return np.where(v < 0, mag | (1 << sign_bit), mag)


# Feetech state block words (position, speed, load): sign bits 15, 15, 10
_FT_SIGN = np.array([1 << 15, 1 << 15, 1 << 10], np.int64)
_FT_MAG = _FT_SIGN - 1


def _i32(v: int) -> bytes:
    return int(v).to_bytes(4, "little", signed=True)


# Dynamixel X state block (PRESENT_CURRENT 126 .. PRESENT_TEMPERATURE 146), 21 bytes, unaligned
_DX_STATE = np.dtype([("current", "<i2"), ("velocity", "<i4"), ("position", "<i4"), ("_", "V8"),
                      ("voltage", "<u2"), ("temperature", "u1")])  # fmt: skip
_DX_GOAL = np.dtype([("id", "u1"), ("pos", "<i4")])
_DX_GOAL_EXT = np.dtype([("id", "u1"), ("acc", "<i4"), ("vel", "<i4"), ("pos", "<i4")])


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
        t = np.asarray(ticks, np.int64)
        if speed is None and acc is None:
            blocks = np.empty(len(t), _DX_GOAL)
            blocks["id"], blocks["pos"] = ids, t
            params = dx.addr_len(dx.GOAL_POSITION, 4) + blocks.tobytes()
            return dx.packet(dx.BROADCAST_ID, dx.SYNC_WRITE, params)
        blocks = np.empty(len(t), _DX_GOAL_EXT)
        blocks["id"], blocks["acc"], blocks["vel"], blocks["pos"] = ids, acc or 0, speed or 0, t
        return dx.packet(dx.BROADCAST_ID, dx.SYNC_WRITE,
                         dx.addr_len(dx.PROFILE_ACCELERATION, 12) + blocks.tobytes())  # fmt: skip

    def read_state(self, ids: Sequence[int], fast: bool = False) -> bytes:
        return dx.sync_read(dx.STATE_BLOCK[0], self.state_len, ids, fast=fast and self.fast)

    def split(self, pkt: Packet) -> list[Packet]:
        """A fast sync read reply holds every servo's block; keep those whose CRC checks."""
        if pkt.servo_id != dx.BROADCAST_ID:
            return [pkt]
        return dx.parse_fast_sync(pkt.params, self.state_len)

    def decode_block(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n, 21) state-block bytes -> position ticks, velocity ticks/s, current (mA), (n,) each."""
        b = np.ascontiguousarray(raw).view(_DX_STATE)[:, 0]
        return b["position"].astype(np.int64), b["velocity"] * self._RPM, b["current"].astype(np.int64)

    def decode(self, p: bytes) -> State:
        b = np.frombuffer(p[: self.state_len], _DX_STATE)[0]
        return State(int(b["position"]), float(b["velocity"] * self._RPM), int(b["current"]),
                     int(b["voltage"]) * 0.1, int(b["temperature"]))  # fmt: skip

    def model(self, ping_params: bytes, read: Callable[[int, int], bytes | None]) -> int | None:
        """The model number: the first two bytes of a Protocol 2.0 ping reply."""
        return int.from_bytes(ping_params[:2], "little") if len(ping_params) >= 2 else None

    def read(self, sid: int, address: int, length: int) -> bytes:
        return dx.read(sid, address, length)

    def write(self, sid: int, address: int, data: bytes) -> bytes:
        return dx.write(sid, address, data)

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

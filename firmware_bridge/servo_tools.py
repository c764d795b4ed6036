"""One-off servo commands over a :class:`~firmware_bridge.servo_wire.ServoWire`: which ids answer
(ping, scan) and the calibration of a Feetech arm (SO-100 / SO-101) the way LeRobot does it, so
the file it writes is LeRobot's and LeRobot's file means the same here.

LeRobot's procedure (lerobot/robots/so_follower, lerobot/motors: read, not copied), step by step:

1. torque off and EEPROM unlocked (Torque_Enable 40 = 0, Lock 55 = 0), position mode
   (Operating_Mode 33 = 0) on every servo;
2. the arm in the middle of its range: reset (Homing_Offset 31 = 0, Min_Position_Limit 9 = 0,
   Max_Position_Limit 11 = 4095), read Present_Position and write ``homing_offset = present -
   2047`` (Feetech reports ``encoder - offset``, so the middle reads 2047, half of 4095);
3. every joint but the full-turn one (``wrist_roll``) moved through its range: the lowest and
   highest Present_Position seen are ``range_min`` / ``range_max`` (equal ones are an error); the
   full-turn joint gets 0 .. 4095;
4. Homing_Offset, Min_Position_Limit and Max_Position_Limit written to each servo, and the JSON
   saved: motor name -> {id, drive_mode (0), homing_offset, range_min, range_max}.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from firmware_bridge import feetech as ft
from firmware_bridge.calibration import Calibration, MotorCalibration
from firmware_bridge.errors import LinkError
from firmware_bridge.servo_common import ServoError
from firmware_bridge.servo_dialects import Feetech
from firmware_bridge.servo_wire import ServoWire

OPERATING_MODE = 33  # Feetech: 0 position, 1 velocity, 2 PWM, 3 step
MAX_RESOLUTION = 4095  # STS3215: 4096 ticks a turn, positions 0..4095
HALF_TURN = MAX_RESOLUTION // 2  # 2047: where a homed servo reads in the middle of its range
FULL_TURN_JOINTS = ("wrist_roll",)  # LeRobot's SO-100/101: the wrist turns all the way round


@dataclass(frozen=True)
class PingReply:
    """One servo that answered: its id, model number (None: not readable), status error bits."""

    servo_id: int
    model: int | None
    error: int  # ServoError bits (one vocabulary for both vendors)

    def describe(self) -> str:
        names = [e.name for e in ServoError if e & self.error and e.name]
        model = f"model {self.model}" if self.model is not None else "model ?"
        return f"id {self.servo_id:3d}: {model}, errors {', '.join(names) if names else 'none'}"


def ping(wire: ServoWire, ids: Sequence[int], timeout_s: float = 0.02,
         attempts: int = 2) -> dict[int, PingReply]:  # fmt: skip
    """The servos of ``ids`` that answer a ping (each tried ``attempts`` times)."""
    out: dict[int, PingReply] = {}
    for sid in ids:
        for _ in range(attempts):
            got = wire.ping(sid, timeout_s)
            if got is not None:
                code, model = got
                out[sid] = PingReply(sid, model, int(wire.d.error(code)))
                break
    return out


class FeetechCalibrator:
    """LeRobot's calibration of Feetech servos (module docstring), one step per method."""

    def __init__(self, wire: ServoWire, ids: Sequence[int], names: Sequence[str],
                 full_turn: Sequence[str] = FULL_TURN_JOINTS, timeout_s: float = 0.05) -> None:  # fmt: skip
        if not isinstance(wire.d, Feetech):
            raise LinkError("calibrate: Feetech servos only (SO-100 / SO-101); a Dynamixel arm keeps its "
                            "LeRobot calibration file, read as is")  # fmt: skip
        if len(ids) != len(names) or len(set(names)) != len(names):
            raise ValueError(f"calibrate: {len(ids)} servo ids for motor names {list(names)}")
        self.wire, self.ids, self.names = wire, list(ids), list(names)
        self.full_turn = [n for n in names if n in full_turn]
        self.timeout_s = timeout_s
        self._word = wire.d._word  # sign-magnitude, the dialect's byte order

    def _write(self, sid: int, address: int, data: bytes) -> None:
        for _ in range(3):
            if self.wire.write(sid, address, data, self.timeout_s) is not None:
                return
        raise LinkError(f"servo {sid}: no reply to a write at register {address} (wiring, id, power?)")

    def prepare(self) -> None:
        """Step 1: torque off, EEPROM unlocked, position mode."""
        for sid in self.ids:
            self._write(sid, ft.TORQUE_ENABLE, b"\x00")
            self._write(sid, ft.LOCK, b"\x00")
            self._write(sid, OPERATING_MODE, b"\x00")

    def positions(self) -> list[int]:
        """Present_Position of every servo, raw ticks: a sync read, the servos that did not answer
        read again (three attempts in all, as every write here); still missing ones raise."""
        big = self.wire.d.big  # type: ignore[union-attr]
        out: dict[int, int] = {}
        missing = list(self.ids)
        for _ in range(3):
            req = ft.sync_read(ft.PRESENT_POSITION, 2, missing)
            got = self.wire.exchange(req, missing, 2, self.timeout_s, self.wire._clock() + self.timeout_s)
            for sid, (pkt, _) in got.items():
                if len(pkt.params) >= 2:
                    out[sid] = ft.from_sign_magnitude(ft.unword(pkt.params, big), 15)
            missing = [sid for sid in self.ids if sid not in out]
            if not missing:
                return [out[sid] for sid in self.ids]
        raise LinkError(f"no Present_Position from servos {missing}")

    def half_turn_homings(self) -> list[int]:
        """Step 2 (the arm in the middle of its range): reset, read, write the homing offsets."""
        for sid in self.ids:
            self._write(sid, ft.HOMING_OFFSET, self._word(0, 11))
            self._write(sid, ft.MIN_ANGLE_LIMIT, self._word(0))
            self._write(sid, ft.MAX_ANGLE_LIMIT, self._word(MAX_RESOLUTION))
        homings = [p - HALF_TURN for p in self.positions()]
        for sid, h in zip(self.ids, homings, strict=True):
            self._write(sid, ft.HOMING_OFFSET, self._word(h, 11))
        return homings

    def record_ranges(self, stop: Callable[[], bool],
                      show: Callable[[list[int], list[int], list[int]], None] | None = None,
                      ) -> tuple[list[int], list[int]]:  # fmt: skip
        """Step 3: read positions until ``stop()`` says so; the lowest and highest of each servo
        (the full-turn joints: 0 .. 4095). ``show(mins, positions, maxes)`` after every read."""
        start = self.positions()
        mins, maxes = list(start), list(start)
        while True:
            pos = self.positions()
            mins = [min(a, b) for a, b in zip(mins, pos, strict=True)]
            maxes = [max(a, b) for a, b in zip(maxes, pos, strict=True)]
            if show is not None:
                show(mins, pos, maxes)
            if stop():
                break
        for j, name in enumerate(self.names):
            if name in self.full_turn:
                mins[j], maxes[j] = 0, MAX_RESOLUTION
        same = [n for n, a, b in zip(self.names, mins, maxes, strict=True) if a == b]
        if same:
            raise ValueError(f"calibrate: motors {same} did not move (the same min and max); move every "
                             "joint through its whole range while recording")  # fmt: skip
        return mins, maxes

    def write(self, cal: Calibration) -> None:
        """Step 4: homing offset and position limits into every servo (EEPROM), then lock it."""
        for m in cal.motors:
            self._write(m.servo_id, ft.LOCK, b"\x00")
            self._write(m.servo_id, ft.HOMING_OFFSET, self._word(m.homing_offset, 11))
            self._write(m.servo_id, ft.MIN_ANGLE_LIMIT, self._word(m.range_min))
            self._write(m.servo_id, ft.MAX_ANGLE_LIMIT, self._word(m.range_max))
            self._write(m.servo_id, ft.LOCK, b"\x01")

    def read_back(self) -> list[tuple[int, int, int]]:
        """(homing_offset, range_min, range_max) as the servos hold them now."""
        out = []
        big = self.wire.d.big  # type: ignore[union-attr]
        for sid in self.ids:
            regs = []
            for addr, sign in ((ft.HOMING_OFFSET, 11), (ft.MIN_ANGLE_LIMIT, 15), (ft.MAX_ANGLE_LIMIT, 15)):
                data = self.wire.read(sid, addr, 2, self.timeout_s)
                if data is None:
                    raise LinkError(f"servo {sid}: register {addr} not readable")
                regs.append(ft.from_sign_magnitude(ft.unword(data, big), sign))
            out.append((regs[0], regs[1], regs[2]))
        return out

    def calibration(self, homings: Sequence[int], mins: Sequence[int], maxes: Sequence[int]) -> Calibration:
        motors = tuple(MotorCalibration(sid, h, lo, hi, 0)
                       for sid, h, lo, hi in zip(self.ids, homings, mins, maxes, strict=True))  # fmt: skip
        return Calibration(motors, MAX_RESOLUTION + 1, tuple(self.names))

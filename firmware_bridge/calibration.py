"""Servo calibration: raw ticks <-> joint radians, and LeRobot's calibration files.

LeRobot users of SO-100/SO-101 (Feetech) and Koch (Dynamixel) arms already hold one JSON file per
arm, written by ``lerobot-calibrate``, one entry per motor name::

    {"shoulder_pan": {"id": 1, "drive_mode": 0, "homing_offset": -1470,
                      "range_min": 758, "range_max": 3292}, ...}

``homing_offset`` is what LeRobot writes to the servo's Homing Offset register (so the positions
the servo reports already include it); ``range_min`` / ``range_max`` are the reported raw limits
in ticks. The mapping, per joint (the middle of the range is joint zero)::

    rad = sign * (raw - (range_min + range_max) / 2) * 2 pi / ticks_per_rev
    sign = -1 if drive_mode else +1

so the joint limits are ``+- (range_max - range_min) / 2 * 2 pi / ticks_per_rev``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MotorCalibration:
    """One servo: LeRobot's fields, in raw ticks."""

    servo_id: int  # bus ID (1..252)
    homing_offset: int = 0  # ticks, written to the servo's Homing Offset register
    range_min: int = 0  # ticks, lowest reported position the joint may reach
    range_max: int = 4095  # ticks, highest
    drive_mode: int = 0  # 1: the joint turns the other way

    def __post_init__(self) -> None:
        if not 0 <= self.servo_id <= 252:
            raise ValueError(f"servo id {self.servo_id} outside 0..252")
        if not self.range_min < self.range_max:
            raise ValueError(
                f"servo {self.servo_id}: range_min {self.range_min} >= range_max {self.range_max}"
            )
        if self.drive_mode not in (0, 1):
            raise ValueError(f"servo {self.servo_id}: drive_mode {self.drive_mode} not 0 or 1")


@dataclass(frozen=True)
class Calibration:
    """All servos of one bus, in joint order, and the conversion between ticks and radians."""

    motors: tuple[MotorCalibration, ...]
    ticks_per_rev: int = 4096
    names: tuple[str, ...] = ()  # LeRobot motor names, when read from its file

    def __post_init__(self) -> None:
        if not self.motors:
            raise ValueError("a calibration needs at least one motor")
        ids = [m.servo_id for m in self.motors]
        if len(set(ids)) != len(ids):
            raise ValueError(f"servo ids repeat: {ids}")
        if self.ticks_per_rev <= 0:
            raise ValueError(f"ticks_per_rev must be > 0, got {self.ticks_per_rev}")
        # derived once (the control cycle converts every period): middle tick, rad per tick
        # signed by the drive mode, and the tick range
        k = 2.0 * math.pi / self.ticks_per_rev
        object.__setattr__(self, "_mid", np.array([(m.range_min + m.range_max) / 2.0 for m in self.motors]))
        object.__setattr__(self, "_scale", np.array([-k if m.drive_mode else k for m in self.motors]))
        object.__setattr__(self, "_lo", np.array([m.range_min for m in self.motors]))
        object.__setattr__(self, "_hi", np.array([m.range_max for m in self.motors]))

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(m.servo_id for m in self.motors)

    def to_radians(self, raw: np.ndarray) -> np.ndarray:
        """(a,) ticks -> (a,) rad."""
        return ((np.asarray(raw, dtype=np.float64) - self._mid) * self._scale).astype(np.float32)

    def to_ticks(self, rad: np.ndarray) -> np.ndarray:
        """(a,) rad -> (a,) int ticks, rounded, clipped to each servo's range."""
        raw = np.rint(np.asarray(rad, dtype=np.float64) / self._scale + self._mid)
        return np.clip(raw, self._lo, self._hi).astype(np.int64)

    def speed_to_radians(self, ticks_per_s: np.ndarray) -> np.ndarray:
        return (np.asarray(ticks_per_s, dtype=np.float64) * self._scale).astype(np.float32)

    def limits(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(position_min, position_max) in rad, in joint order (a flipped joint swaps the ends)."""
        a = self.to_radians(np.array([m.range_min for m in self.motors]))
        b = self.to_radians(np.array([m.range_max for m in self.motors]))
        return tuple(np.minimum(a, b).tolist()), tuple(np.maximum(a, b).tolist())

    @classmethod
    def centered(cls, ids: tuple[int, ...], ticks_per_rev: int = 4096) -> Calibration:
        """No calibration file: joint zero at the middle tick (2048), +- half a turn less a tick."""
        mid = ticks_per_rev // 2
        return cls(tuple(MotorCalibration(i, 0, 1, 2 * mid - 1) for i in ids), ticks_per_rev)

    @classmethod
    def from_lerobot(cls, path: str | os.PathLike[str], ticks_per_rev: int = 4096) -> Calibration:
        """Read a LeRobot calibration JSON; joint order is the file's order."""
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict) or not data:
            raise ValueError(
                f"{os.fspath(path)}: expected a JSON object of motors, got {type(data).__name__}"
            )
        motors, names = [], []
        for name, entry in data.items():
            if not isinstance(entry, dict):
                raise ValueError(f"{os.fspath(path)}: motor {name!r} is not an object")
            missing = {"id", "homing_offset", "range_min", "range_max"} - entry.keys()
            if missing:
                raise ValueError(f"{os.fspath(path)}: motor {name!r} lacks {sorted(missing)}")
            motors.append(
                MotorCalibration(
                    int(entry["id"]),
                    int(entry["homing_offset"]),
                    int(entry["range_min"]),
                    int(entry["range_max"]),
                    int(entry.get("drive_mode", 0)),
                )
            )
            names.append(str(name))
        return cls(tuple(motors), ticks_per_rev, tuple(names))

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

so the joint limits are ``+- (range_max - range_min) / 2 * 2 pi / ticks_per_rev``. Radians are
physical here (4096 ticks a turn); LeRobot's own readings (``MotorNormMode``: DEGREES
``(raw - mid) * 360 / 4095``, RANGE_M100_100, RANGE_0_100) are :meth:`Calibration.lerobot_values`,
exactly as LeRobot computes them, for policies trained on LeRobot's normalised values.

``lerobot_json()`` writes the file exactly as LeRobot does (``json.dump(..., indent=4)`` of the
motors in order, fields id, drive_mode, homing_offset, range_min, range_max; no final newline).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LEROBOT_MODES = ("degrees", "range_m100_100", "range_0_100")  # lerobot.motors.MotorNormMode values


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

    # ---- LeRobot's file and LeRobot's normalised values --------------------------------------
    def to_lerobot(self) -> dict[str, dict[str, int]]:
        """motor name -> {id, drive_mode, homing_offset, range_min, range_max}, in joint order."""
        if len(self.names) != len(self.motors):
            raise ValueError("a LeRobot calibration needs a motor name per servo")
        return {name: {"id": m.servo_id, "drive_mode": m.drive_mode, "homing_offset": m.homing_offset,
                       "range_min": m.range_min, "range_max": m.range_max}
                for name, m in zip(self.names, self.motors, strict=True)}  # fmt: skip

    def lerobot_json(self) -> str:
        """The file LeRobot writes (draccus: ``json.dump(..., indent=4)``), byte for byte."""
        return json.dumps(self.to_lerobot(), indent=4)

    def lerobot_values(self, raw: Sequence[int], modes: Sequence[str]) -> list[float]:
        """LeRobot's normalised readings of raw positions, per motor's ``MotorNormMode`` value
        ("degrees", "range_m100_100", "range_0_100"; SO-101: range_m100_100 or degrees for the
        body, range_0_100 for the gripper), computed as LeRobot's MotorsBus._normalize does."""
        out = []
        for m, r, mode in zip(self.motors, raw, modes, strict=True):
            lo, hi = m.range_min, m.range_max
            if mode == "degrees":  # no drive mode, unbounded
                out.append((r - (lo + hi) / 2) * 360 / (self.ticks_per_rev - 1))
                continue
            b = min(hi, max(lo, r))
            if mode == "range_m100_100":
                v = ((b - lo) / (hi - lo)) * 200 - 100
                out.append(-v if m.drive_mode else v)
            elif mode == "range_0_100":
                v = ((b - lo) / (hi - lo)) * 100
                out.append(100 - v if m.drive_mode else v)
            else:
                raise ValueError(f"unknown LeRobot norm mode {mode!r}; allowed: {', '.join(LEROBOT_MODES)}")
        return out

    def lerobot_ticks(self, values: Sequence[float], modes: Sequence[str]) -> list[int]:
        """The raw goals LeRobot writes for normalised ``values`` (MotorsBus._unnormalize: clamped,
        then truncated toward zero by ``int``)."""
        out = []
        for m, v, mode in zip(self.motors, values, modes, strict=True):
            lo, hi = m.range_min, m.range_max
            if mode == "degrees":
                out.append(int(v * (self.ticks_per_rev - 1) / 360 + (lo + hi) / 2))
            elif mode == "range_m100_100":
                v = -v if m.drive_mode else v
                out.append(int(((min(100.0, max(-100.0, v)) + 100) / 200) * (hi - lo) + lo))
            elif mode == "range_0_100":
                v = 100 - v if m.drive_mode else v
                out.append(int((min(100.0, max(0.0, v)) / 100) * (hi - lo) + lo))
            else:
                raise ValueError(f"unknown LeRobot norm mode {mode!r}; allowed: {', '.join(LEROBOT_MODES)}")
        return out

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

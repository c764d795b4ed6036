"""An emulated SO-101 follower arm for the calibration tests: six STS3215 servos (ids 1-6) on an
emulated Feetech bus, and the arm poses a person would move it through while calibrating, in
encoder ticks (before any homing offset). Shared by the test and by lerobot_golden.py, which runs
LeRobot's own calibration code on the same poses (so both see exactly the same arm)."""

from __future__ import annotations

import math
from collections.abc import Sequence

NAMES = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
IDS = (1, 2, 3, 4, 5, 6)
MIDDLE = (2110, 1985, 2040, 2075, 1990, 2010)  # the arm put in the middle of its range
# each joint through its range, one after the other (wrist_roll: a few positions, it turns fully)
SWEEP = (
    (1050, 1985, 2040, 2075, 1990, 2010),
    (3150, 1985, 2040, 2075, 1990, 2010),
    (2110, 880, 2040, 2075, 1990, 2010),
    (2110, 3260, 2040, 2075, 1990, 2010),
    (2110, 1985, 920, 2075, 1990, 2010),
    (2110, 1985, 3120, 2075, 1990, 2010),
    (2110, 1985, 2040, 860, 1990, 2010),
    (2110, 1985, 2040, 3300, 1990, 2010),
    (2110, 1985, 2040, 2075, 600, 2010),
    (2110, 1985, 2040, 2075, 3500, 2010),
    (2110, 1985, 2040, 2075, 1990, 1960),
    (2110, 1985, 2040, 2075, 1990, 3500),
    MIDDLE,
)
# where the arm is put after calibration, to compare readings (encoder ticks)
POSES = (
    (2110, 1985, 2040, 2075, 1990, 2010),
    (1500, 2900, 1200, 3000, 300, 3100),
    (3000, 1000, 2900, 1000, 3900, 2000),
)
BODY_MODES = ("range_m100_100",) * 5 + ("range_0_100",)  # SO-101 default (use_degrees=False)
DEGREE_MODES = ("degrees",) * 5 + ("range_0_100",)  # use_degrees=True
GOALS_DEGREES = (10.0, -25.5, 40.0, -5.25, 90.0, 30.0)  # LeRobot actions (degrees; gripper 0..100)


def set_pose(emu: object, encoders: Sequence[int]) -> None:
    """Put the emulated arm at ``encoders`` (ticks; 2048 is the motor's zero) and hold it there:
    with torque off, the joints stay where a hand leaves them."""
    tpr = 4096
    with emu.cond:  # type: ignore[attr-defined]
        for j, (enc, s) in enumerate(zip(encoders, emu.servos.values(), strict=True)):  # type: ignore[attr-defined]
            emu.motor.q[j] = (enc - tpr // 2) * 2 * math.pi / tpr  # type: ignore[attr-defined]
            emu.motor.v[j] = 0.0  # type: ignore[attr-defined]
            emu._refresh(j, s)  # type: ignore[attr-defined]

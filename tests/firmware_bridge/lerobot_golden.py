"""Make the golden SO-101 calibration fixture with LeRobot's own code (not a test).

Runs LeRobot 0.6.1's FeetechMotorsBus calibration steps, as lerobot/robots/so_follower's
``calibrate()`` does them (torque off, position mode, half-turn homings, ranges of motion with
wrist_roll full turn, write_calibration, draccus JSON dump), against our emulated SO-101 (so101_arm.py)
on a pty, then records LeRobot's readings of three arm poses (raw, range_m100_100, degrees) and
the raw goals it writes for a few actions. Writes fixtures/so101_lerobot_calibration.json (the
file exactly as LeRobot saves it) and fixtures/so101_lerobot_readings.json.

Needs a throwaway environment with LeRobot (docs: field-notes.md) plus feetech-servo-sdk and
pyserial on the path, and this repository on the path for the emulator:

    PYTHONPATH=.:tests/firmware_bridge:/path/to/scservo_sdk_and_serial \\
        /path/to/lerobot-env/bin/python tests/firmware_bridge/lerobot_golden.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import draccus
import lerobot.motors.motors_bus as mb
from lerobot.motors import Motor, MotorCalibration, MotorNormMode
from lerobot.motors.feetech import FeetechMotorsBus, OperatingMode
from so101_arm import BODY_MODES, DEGREE_MODES, GOALS_DEGREES, IDS, MIDDLE, NAMES, POSES, SWEEP, set_pose

from firmware_bridge.servo_emulator import EmulatedServoBus, ServoEmulatorConfig

OUT = Path(__file__).resolve().parent / "fixtures"
MODES = {
    "range_m100_100": MotorNormMode.RANGE_M100_100,
    "range_0_100": MotorNormMode.RANGE_0_100,
    "degrees": MotorNormMode.DEGREES,
}


def bus(port: str, modes: tuple[str, ...], cal: dict | None = None) -> FeetechMotorsBus:
    motors = {n: Motor(i, "sts3215", MODES[m]) for n, i, m in zip(NAMES, IDS, modes, strict=True)}
    b = FeetechMotorsBus(port=port, motors=motors, calibration=cal)
    b.connect()
    return b


def main() -> None:
    emu = EmulatedServoBus(ServoEmulatorConfig("feetech", IDS)).start()
    try:
        set_pose(emu, MIDDLE)
        b = bus(emu.port, BODY_MODES)
        # SOFollower.calibrate(), the steps after its input() prompts
        b.disable_torque()
        for motor in b.motors:
            b.write("Operating_Mode", motor, OperatingMode.POSITION.value)
        homing_offsets = b.set_half_turn_homings()
        poses = iter(SWEEP)

        def next_pose() -> bool:  # the person moving the arm; ENTER after the last pose was read
            pose = next(poses, None)
            if pose is None:
                return True
            set_pose(emu, pose)
            return False

        mb.enter_pressed = next_pose
        full_turn_motor = "wrist_roll"
        unknown_range_motors = [m for m in b.motors if m != full_turn_motor]
        range_mins, range_maxes = b.record_ranges_of_motion(unknown_range_motors, display_values=False)
        range_mins[full_turn_motor] = 0
        range_maxes[full_turn_motor] = 4095
        calibration = {
            motor: MotorCalibration(
                id=m.id,
                drive_mode=0,
                homing_offset=homing_offsets[motor],
                range_min=range_mins[motor],
                range_max=range_maxes[motor],
            )
            for motor, m in b.motors.items()
        }
        b.write_calibration(calibration)
        OUT.mkdir(exist_ok=True)
        with open(OUT / "so101_lerobot_calibration.json", "w") as f, draccus.config_type("json"):
            draccus.dump(calibration, f, indent=4)  # Robot._save_calibration
        registers = {
            m: {
                k: int(b.read(k, m, normalize=False))
                for k in ("Homing_Offset", "Min_Position_Limit", "Max_Position_Limit")
            }
            for m in b.motors
        }
        b.disconnect(disable_torque=False)
        readings = []
        for modes in (BODY_MODES, DEGREE_MODES):
            r = bus(emu.port, modes, calibration)
            for pose in POSES:
                set_pose(emu, pose)
                raw = r.sync_read("Present_Position", normalize=False)
                val = r.sync_read("Present_Position")
                readings.append(
                    {
                        "modes": list(modes),
                        "encoders": list(pose),
                        "raw": [int(raw[n]) for n in NAMES],
                        "values": [float(val[n]) for n in NAMES],
                    }
                )
            r.disconnect(disable_torque=False)
        r = bus(emu.port, DEGREE_MODES, calibration)
        r.sync_write("Goal_Position", dict(zip(NAMES, GOALS_DEGREES, strict=True)))
        with emu.cond:
            goals = [int(s.table[42] | s.table[43] << 8) for s in emu.servos.values()]
        r.disconnect(disable_torque=False)
        (OUT / "so101_lerobot_readings.json").write_text(
            json.dumps(
                {
                    "lerobot": "0.6.1",
                    "registers": registers,
                    "readings": readings,
                    "goals": {"modes": list(DEGREE_MODES), "values": list(GOALS_DEGREES), "raw": goals},
                },
                indent=1,
            )
            + "\n"
        )
    finally:
        emu.close()
    print(f"wrote {OUT / 'so101_lerobot_calibration.json'} and so101_lerobot_readings.json", file=sys.stderr)


if __name__ == "__main__":
    main()

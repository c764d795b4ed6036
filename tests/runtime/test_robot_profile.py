"""The profile's [robot] table and [control] graph (edge/profiles.py): every shipped profile has
them, and a table that does not describe one arm is refused in one line naming the key."""

from __future__ import annotations

import json

import pytest

from edge.errors import ProfileError
from edge.profiles import PROFILE_DIR, list_profiles, load_profile, robot_calibration


def _variant(tmp_path, base: str, old: str, new: str, name: str = "p.toml"):
    text = (PROFILE_DIR / f"{base}.toml").read_text()
    assert old in text, old
    path = tmp_path / name
    path.write_text(text.replace(old, new, 1))
    return path


def test_every_shipped_profile_has_the_robot_table():
    for name in list_profiles():
        p = load_profile(name)
        r = p.robot
        assert r.stale_ms == 100 and r.max_fault_ticks == 50 and len(r.q_min) == len(r.q_max) == r.n_joints
        assert p.to_dict()["robot"]["joints"] == list(r.joints)
        if name.startswith("so101"):  # fw's SO-101 follower: LeRobot's six motors
            assert r.n_joints == 6 and r.joints[0] == "shoulder_pan" and r.calibration is not None
            assert r.step_per_tick(p.control.rate_hz) == pytest.approx((3.0 / p.control.rate_hz,) * 6)
            continue
        assert r.joints == ("shoulder", "elbow", "wrist")  # the reference arm
        assert r.max_velocity == (3.0,) * 3 and r.max_step == (0.12,) * 3  # one number: every joint
        assert p.control.graph == ("fused" if name.startswith("x86-cpu") else "stepwise")
    cal = robot_calibration(load_profile("x86-cpu-feetech"))
    assert cal.ids == (1, 2, 3) and cal.names == ("shoulder", "elbow", "wrist")


def test_step_per_tick_defaults_to_max_velocity_over_the_rate(tmp_path):
    p = load_profile(_variant(tmp_path, "x86-cpu", "max_step = 0.12", "# no max_step"))
    assert p.robot.max_step is None
    assert p.robot.step_per_tick(50.0) == pytest.approx((0.06,) * 3)
    p = load_profile(_variant(tmp_path, "x86-cpu", "max_velocity = 3.0", "# no max_velocity"))
    assert p.robot.velocity(50.0) == pytest.approx((6.0,) * 3)  # max_step x rate


def test_a_profile_without_the_robot_table_is_refused(tmp_path):
    text = (PROFILE_DIR / "x86-cpu.toml").read_text()
    path = tmp_path / "p.toml"
    path.write_text(text[: text.index("[robot]")])
    with pytest.raises(ProfileError, match=r"missing table \[robot\]"):
        load_profile(path)


INVALID = [
    ("x86-cpu", "q_min = [-0.35, -2.9, -2.9]", "q_min = [-0.35, -2.9]", ["'robot.q_min'", "2 values for 3"]),
    ("x86-cpu", "q_max = [3.49, 2.9, 2.9]", "q_max = [3.49, 2.9, -3.0]",
     ["'robot.q_min'", "not below", "wrist"]),
    ("x86-cpu", 'joints = ["shoulder", "elbow", "wrist"]', 'joints = ["a", "a", "b"]', ["'robot.joints'"]),
    ("x86-cpu", "max_velocity = 3.0", "max_velocity = -1.0", ["'robot.max_velocity'", "> 0"]),
    ("x86-cpu", "max_step = 0.12", "max_step = [0.1, 0.1]", ["'robot.max_step'", "2 values"]),
    ("x86-cpu", "max_step = 0.12", "max_step = 0.12\nmax_speed = 2", ["max_speed", "allowed"]),
    ("x86-cpu", "stale_ms = 100", "stale_ms = 0", ["'stale_ms'", "out of range"]),
    ("x86-cpu", "max_fault_ticks = 50", "max_fault_ticks = 0", ["'max_fault_ticks'", "out of range"]),
    ("x86-cpu", 'graph = "fused"', 'graph = "fast"', ["'graph'", "fused, stepwise"]),
    ("x86-cpu", "# calibration = ", 'calibration = "c.json"\n#', ["'robot.calibration'", "servo buses"]),
    ("x86-cpu-feetech", "ids = [1, 2, 3]", "ids = [1, 2, 3, 4]", ["'serial.ids'", "3 joints"]),
    ("x86-cpu-feetech", 'calibration = "reference-arm.feetech.json"', 'calibration = "none.json"',
     ["'robot.calibration'", "no such file"]),
]  # fmt: skip


@pytest.mark.parametrize("base,old,new,words", INVALID, ids=[f"{i}" for i in range(len(INVALID))])
def test_invalid_robot_tables_are_refused_naming_the_key(tmp_path, base, old, new, words):
    path = _variant(tmp_path, base, old, new)
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    for w in words:
        assert w in msg, (w, msg)


def _calibration(tmp_path, motors: dict) -> str:
    (tmp_path / "arm.json").write_text(json.dumps(motors))
    return 'calibration = "arm.json"'


def _motor(i: int) -> dict:
    # a range the reference arm's joints fit (the loader checks the servos reach [robot] q_min/q_max)
    return {"id": i, "drive_mode": 0, "homing_offset": 0, "range_min": -400, "range_max": 4500}


def test_calibration_is_read_relative_to_the_profile_and_put_in_joint_order(tmp_path):
    # LeRobot's file may list the motors in another order: matched by name, in [robot] joint order
    line = _calibration(tmp_path, {"wrist": _motor(3), "shoulder": _motor(1), "elbow": _motor(2)})
    old = 'calibration = "reference-arm.feetech.json"'
    p = load_profile(_variant(tmp_path, "x86-cpu-feetech", old, line))
    assert p.robot.calibration == str(tmp_path / "arm.json")
    cal = robot_calibration(p)
    assert cal.ids == (1, 2, 3) and cal.names == ("shoulder", "elbow", "wrist")


@pytest.mark.parametrize(
    "motors,needle",
    [
        ({"shoulder": _motor(1), "elbow": _motor(2), "gripper": _motor(3)}, "names motors"),
        ({"shoulder": _motor(1), "elbow": _motor(3), "wrist": _motor(2)}, "servo ids [1, 3, 2]"),
        ({"shoulder": {"id": 1}}, "not a LeRobot calibration"),
    ],
)
def test_a_calibration_for_another_arm_is_refused(tmp_path, motors, needle):
    line = _calibration(tmp_path, motors)
    path = _variant(tmp_path, "x86-cpu-feetech", 'calibration = "reference-arm.feetech.json"', line)
    with pytest.raises(ProfileError, match="robot.calibration") as e:
        load_profile(path)
    assert needle in str(e.value) and "\n" not in str(e.value)

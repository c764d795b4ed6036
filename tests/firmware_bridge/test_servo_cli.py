"""`legato servo ping | scan | calibrate` against emulated Feetech / Dynamixel buses, and the SO-101
calibration against LeRobot's own: the file LeRobot 0.6.1's code wrote for the emulated arm
(fixtures/, made by lerobot_golden.py) is what `legato servo calibrate` writes for the same arm,
byte for byte, and both drive the emulated bus to the same angles."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fw_helpers import SETUP_S, WAIT_S, wait_for
from so101_arm import BODY_MODES, DEGREE_MODES, GOALS_DEGREES, IDS, MIDDLE, NAMES, SWEEP, set_pose

from firmware_bridge import dynamixel as dx
from firmware_bridge import feetech as ft
from firmware_bridge.calibration import Calibration
from firmware_bridge.servo_emulator import EmulatedServoBus, ServoEmulatorConfig
from legato.cli import main

FIXTURES = Path(__file__).resolve().parent / "fixtures"
GOLDEN = FIXTURES / "so101_lerobot_calibration.json"
READINGS = json.loads((FIXTURES / "so101_lerobot_readings.json").read_text())


@pytest.fixture
def bus_of(no_leaks: None) -> Iterator:
    made: list[EmulatedServoBus] = []

    def make(kind: str, ids: tuple[int, ...] = IDS) -> EmulatedServoBus:
        emu = EmulatedServoBus(ServoEmulatorConfig(kind, ids)).start()
        made.append(emu)
        return emu

    yield make
    for e in made:
        e.close()


def _registers(emu: EmulatedServoBus) -> dict[str, dict[str, int]]:
    out = {}
    for name, s in zip(NAMES, emu.servos.values(), strict=True):
        t = s.table
        out[name] = {
            "Homing_Offset": s.homing,
            "Min_Position_Limit": ft.unword(t[9:11]),
            "Max_Position_Limit": ft.unword(t[11:13]),
        }
    return out


@pytest.mark.parametrize(
    ("kind", "model", "bit", "name"),
    [
        ("feetech", ft.STS3215_MODEL, ft.ERR_OVERLOAD, "OVERLOAD"),
        ("dynamixel", dx.XM430_W350_MODEL, dx.ERR_ALERT, "HARDWARE"),
    ],
)
def test_ping_says_which_ids_answer_their_model_and_error_bits(kind, model, bit, name, bus_of, capsys):
    emu = bus_of(kind, (1, 2, 3))
    emu.set_error(2, bit)
    emu.set_silent(3)
    # a generous reply wait (two pings of 0.5 s): the emulator shares the loaded machine; the
    # silent and the absent servo each cost their two waits
    rc = main(["servo", "ping", "--port", emu.port, "--bus", kind, "--ids", "1-4", "--timeout", "0.5"])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert rc == 1 and lines == [
        f"id   1: model {model}, errors none",
        f"id   2: model {model}, errors {name}",
        "id   3: no reply",
        "id   4: no reply",
    ], out
    assert "2 of 4 servos did not answer" in err and "[3, 4]" in err


def test_scan_lists_every_servo_on_the_bus_and_fails_on_an_empty_one(bus_of, capsys):
    emu = bus_of("feetech", (3, 7, 12))
    # one ping per id, each given 1 s (the emulator shares the loaded machine): a few absent ids
    # among the present ones, not a long empty range, keep that short
    scan = ["servo", "scan", "--port", emu.port, "--timeout", "1"]
    assert main([*scan, "--ids", "2,3,7,8,12"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "feetech at 1000000 bit/s: 3 servos"
    assert [int(line.split()[1].rstrip(":")) for line in out.splitlines()[1:]] == [3, 7, 12]
    assert main([*scan, "--ids", "20-21"]) == 1
    assert "no servo answered" in capsys.readouterr().err


class ScriptedPerson(io.TextIOBase):
    """stdin of `legato servo calibrate` with a person behind it: ENTER at once for "the arm is in
    the middle", then moves the arm through SWEEP (each pose held until the servos were read at
    least twice) and presses ENTER."""

    def __init__(self, emu: EmulatedServoBus) -> None:
        self.emu, self.calls = emu, 0

    def _reads(self) -> int:
        return sum(1 for p in list(self.emu.received) if p.servo_id == 0xFE and p.code == ft.SYNC_READ)

    def readline(self, size: int = -1) -> str:
        self.calls += 1
        if self.calls == 1:
            return "\n"
        for pose in SWEEP:
            set_pose(self.emu, pose)
            want = self._reads() + 2
            assert self.emu.wait_until(lambda e, want=want: self._reads() >= want, WAIT_S), (
                "recording stopped"
            )
        return "\n"


def test_calibrate_writes_the_file_lerobot_writes_for_the_same_arm(bus_of, tmp_path, capsys, monkeypatch):
    emu = bus_of("feetech")
    set_pose(emu, MIDDLE)
    monkeypatch.setattr("sys.stdin", ScriptedPerson(emu))
    out = tmp_path / "my_follower.json"
    rc = main(
        [
            "servo",
            "calibrate",
            "--port",
            emu.port,
            "--profile",
            "so101-follower",
            "--calibration",
            str(out),
            "--timeout",
            "1",
        ]  # fmt: skip
    )
    assert rc == 0, capsys.readouterr().err
    assert out.read_bytes() == GOLDEN.read_bytes()  # LeRobot's file, byte for byte
    assert _registers(emu) == READINGS["registers"]  # and what LeRobot left in the servos
    assert all(s.table[ft.LOCK] == 1 and not s.torque for s in emu.servos.values())


def test_calibrate_refuses_a_target_that_is_not_a_calibration_before_touching_the_servos(
    bus_of, tmp_path, capsys
):
    emu = bus_of("feetech")
    notes = tmp_path / "README.md"
    notes.write_text("my notes\n")
    for extra in ([], ["--force"]):
        rc = main(["servo", "calibrate", "--port", emu.port, "--calibration", str(notes), "--yes", *extra])
        assert rc == 2 and "legato: error:" in capsys.readouterr().err
    assert notes.read_text() == "my notes\n" and not emu.received  # nothing reached the servos


def test_calibrate_from_file_writes_lerobots_numbers_into_the_servos(bus_of, capsys):
    emu = bus_of("feetech")
    rc = main(["servo", "calibrate", "--port", emu.port, "--calibration", str(GOLDEN), "--from-file",
               "--timeout", "1"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert _registers(emu) == READINGS["registers"]


def test_lerobots_readings_and_goals_are_reproduced_exactly(bus_of):
    cal = Calibration.from_lerobot(GOLDEN)
    assert cal.lerobot_json() == GOLDEN.read_text()  # read and written back unchanged
    for r in READINGS["readings"]:
        assert cal.lerobot_values(r["raw"], r["modes"]) == pytest.approx(r["values"], abs=1e-12)
    g = READINGS["goals"]
    assert cal.lerobot_ticks(g["values"], g["modes"]) == g["raw"]
    assert tuple(g["values"]) == GOALS_DEGREES and tuple(g["modes"]) == DEGREE_MODES and BODY_MODES


def test_the_calibration_drives_the_emulated_arm_to_the_angles_it_predicts(bus_of):
    """The ServoBus with LeRobot's file on the emulated SO-101 (homing written by LeRobot's code
    or by ours): it reads each pose as the calibration predicts, and a setpoint in rad ends with
    the arm where the calibration puts that angle (the goal registers, then the motors)."""
    from firmware_bridge.factory import open_bus

    emu = bus_of("feetech")
    cal = Calibration.from_lerobot(GOLDEN)
    bus = open_bus("feetech", port=emu.port, ids=list(IDS), calibration=str(GOLDEN), period_s=0.02,
                   setup_timeout_s=SETUP_S)  # fmt: skip
    try:
        bus.start()
        assert _registers(emu) == READINGS["registers"]  # homing written from the file where it differed
        bus.set_torque(False)
        for r in READINGS["readings"][:3]:
            set_pose(emu, r["encoders"])
            want = cal.to_radians(np.array(r["raw"]))
            assert wait_for(lambda: np.allclose(bus.latest_telemetry().positions, want, atol=1e-6))  # noqa: B023
        bus.set_torque(True)
        q = np.array([0.4, -0.6, 0.9, -0.3, 1.5, 0.5], dtype=np.float32)
        bus.send_setpoint(q)
        ticks = cal.to_ticks(q)
        assert wait_for(
            lambda: (
                [ft.from_sign_magnitude(ft.unword(s.table[42:44]), 15) for s in emu.servos.values()]
                == ticks.tolist()
            )
        )
        assert wait_for(lambda: np.abs(bus.latest_telemetry().positions - q).max() < 0.01)
    finally:
        bus.close()
    assert threading.active_count() >= 1

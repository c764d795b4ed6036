"""`legato run --sim` through an emulated servo bus: the profile's ``[serial] protocol`` picks the
Feetech (or Dynamixel) servos on a pty, driven by the ServoBus, instead of the firmware emulator."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from legato.cli import main


def _capture_rigs(monkeypatch) -> list:
    import edge.rig as rig_mod

    rigs = []

    class Rig(rig_mod.Rig):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            rigs.append(self)

    monkeypatch.setattr(rig_mod, "Rig", Rig)
    return rigs


def _profile(tmp_path, protocol: str) -> str:
    from edge.profiles import profile_path

    text = (
        profile_path("x86-cpu-feetech")
        .read_text()
        .replace('protocol = "feetech"', f'protocol = "{protocol}"')
    )
    # --sim writes its own calibration of the simulated arm into the profile; the profile names one
    # that fits its [robot] limits on this bus (the loader checks the servos reach them)
    name = f"reference-arm.{protocol}.json"
    text = text.replace("reference-arm.feetech.json", name)
    (tmp_path / name).write_text(profile_path("x86-cpu-feetech").with_name(name).read_text())
    path = tmp_path / f"x86-cpu-{protocol}.toml"
    path.write_text(text.replace('name = "x86-cpu-feetech"', f'name = "x86-cpu-{protocol}"'))
    return str(path)


@pytest.mark.parametrize("protocol", ["feetech", "dynamixel"])
def test_run_sim_drives_the_arm_through_the_servo_bus(bundle, tmp_path, capsys, monkeypatch, protocol):
    rigs = _capture_rigs(monkeypatch)
    out = tmp_path / "summary.json"
    profile = "x86-cpu-feetech" if protocol == "feetech" else _profile(tmp_path, protocol)
    args = ["run", "--bundle", str(bundle), "--profile", profile, "--sim", "--episodes", "2", "--quiet",
            "--summary-json", str(out)]  # fmt: skip
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 0, err
    s = json.loads(out.read_text())
    # every episode ended (success, collision or timeout), and the session closed cleanly
    assert s["episodes"] == 2 and len(s["episode_outcomes"]) == 2 and set(s["episode_outcomes"]) <= set("SCT")
    assert s["shutdown"] == "completed" and s["hold_sent"] and s["hold_confirmed"]
    # no NaN; a fault tick here is a hold on stale joint state (an emulator starved by a loaded machine)
    assert (
        s["nan_setpoints"] == 0 and s["faults"] == s["stale_ticks"] and s["errors"] == [] and s["ticks"] > 50
    )

    (rig,) = rigs
    emu, spec = rig.sim.emu, rig.spec
    assert spec.kind == protocol and not hasattr(emu, "core")  # a servo bus, built in the clock process
    # the goals went out as sync writes the emulated servos received (one more: the hold written
    # before torque went on), and their replies came back
    sync_writes = sum(1 for p in emu.received if p.servo_id == 0xFE and p.code == 0x83)
    assert sync_writes > s["ticks"] and s["bus.frames_sent"] >= sync_writes
    assert emu.replies > 3 * s["ticks"] and s["bus.frames_received"] > 3 * s["ticks"]
    # (how many replies came late is a timing number: bench/bench_servo_bus.py measures it)
    assert len(s["bus.reply_timeouts"]) == 3
    # the host wrote the calibration's homing offsets; the simulated arm moved under the servos
    cal = spec.settings["calibration"]
    assert [sv.homing for sv in emu.servos.values()] == [m.homing_offset for m in cal.motors]
    assert rig.plant.motor.advances > s["ticks"] // 2
    # the rig was built from the profile, with the simulator's arm written into its fields
    assert spec.settings["limits"].position_max == (3.49, 2.9, 2.9)
    assert cal.names == ("shoulder", "elbow", "wrist")
    assert spec.settings["period_s"] == 1 / 200.0 and rig.prof.robot.calibration == rig.sim.calibration_path


@pytest.mark.parametrize("kind", ["feetech", "dynamixel"])
def test_sim_calibration_maps_the_arm_into_one_turn(kind):
    from edge.simrig import sim_calibration
    from sim.arm import ArmConfig

    arm = ArmConfig()
    ids = (1, 2, 3)
    cal = sim_calibration(kind, ids, arm.q_min, arm.q_max)
    k = 2 * math.pi / 4096
    sign = -1 if kind == "feetech" else 1  # Feetech reports encoder - offset, Dynamixel + offset
    homing = np.array([m.homing_offset for m in cal.motors])
    for q in (np.array(arm.q_min), np.array(arm.q_max), np.zeros(3)):
        enc = np.rint(q / k) + 2048  # the emulated encoder
        reported = enc + sign * homing
        assert ((reported >= 0) & (reported <= 4095)).all(), (q, reported)  # no wrap
        np.testing.assert_allclose(cal.to_radians(reported), q, atol=k / 2 + 1e-6)
        np.testing.assert_array_equal(cal.to_ticks(q), reported)  # goals: the same ticks back
    assert abs(cal.motors[0].homing_offset) > 500  # joint 0's travel, [-0.35, 3.49] rad, needed one

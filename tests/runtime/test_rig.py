"""The one rig builder (edge/rig.py): the bus and the loop's limits come from the robot's profile,
for --port and --sim alike; a bundle that does not fit the robot is refused."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from edge.errors import BundleError, MethodError, ProfileError, UsageError
from edge.loopstate import Layout
from edge.profiles import PROFILE_DIR, load_profile
from edge.rig import BusSpec, Rig, build_rig, bus_spec, check_fits, loop_config
from firmware_bridge.interface import Telemetry


def fake_manifest(a: int = 3, q_min=(-0.3, -2.0, -2.0), q_max=(3.0, 2.0, 2.0), r_max: int = 8):
    """What the rig reads of a bundle: the action dim, r_max and the training arm's range."""
    arm = {"q_min": list(q_min), "q_max": list(q_max), "vel_max": 99.0}  # vel_max: no longer read
    return SimpleNamespace(path="B", spec=SimpleNamespace(action_dim=a, r_max=r_max, horizon=16),
                           data={"model": {"task": {"arm": arm}}})  # fmt: skip


def variant(tmp_path, base: str, *subs: tuple[str, str]):
    text = (PROFILE_DIR / f"{base}.toml").read_text()
    for old, new in subs:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / f"{base}-variant.toml"
    path.write_text(text)
    if "reference-arm" in text:
        name = "reference-arm.feetech.json"
        (tmp_path / name).write_text((PROFILE_DIR / name).read_text())
    return load_profile(path)


def test_port_rig_streams_to_the_firmware_with_the_robots_limits(tmp_path):
    # before: --port sent the model's training-arm limits, vel_max and a constant step of 0.05
    prof = variant(tmp_path, "x86-cpu", ("max_velocity = 3.0", "max_velocity = [2.0, 2.5, 3.5]"),
                   ("max_step = 0.12", "max_step = 0.07"),
                   ("watchdog_ms = 100", "watchdog_ms = 80"))  # fmt: skip
    rig = build_rig(fake_manifest(), prof, port="/dev/ttyLEGATO9")
    spec = rig.spec
    assert spec.kind == "firmware" and spec.settings["port"] == "/dev/ttyLEGATO9"
    lim = spec.settings["limits"]
    assert lim.position_min == prof.robot.q_min and lim.position_max == prof.robot.q_max
    assert lim.velocity_max == (2.0, 2.5, 3.5) and lim.step_max == (0.07,) * 3
    assert spec.settings["watchdog_ms"] == 80 and spec.settings["rate_hz"] == 500.0
    bus = spec.open()  # what the clock process builds: nothing is opened yet
    assert bus.config.limits == lim and bus.config.watchdog_ms == 80 and bus.config.rate_hz == 500.0
    assert not bus.link.connected and not rig.started
    bus.close()
    rig.close()


def test_port_rig_of_a_servo_bus_gets_calibration_limits_period_and_watchdog():
    # before: open_bus(protocol, port=..., ids=..., baudrate=...) and nothing else
    prof = load_profile("x86-cpu-feetech")
    rig = build_rig(fake_manifest(), prof, port="/dev/ttyLEGATO9")
    bus = rig.spec.open()
    cfg = bus.config
    assert bus.kind == "feetech" and cfg.port == "/dev/ttyLEGATO9" and cfg.ids == (1, 2, 3)
    assert cfg.calibration is not None and cfg.calibration.names == ("shoulder", "elbow", "wrist")
    assert [m.homing_offset for m in cfg.calibration.motors] == [1023, 0, 0]  # the profile's file
    assert cfg.limits.position_max == (3.49, 2.9, 2.9) and cfg.limits.step_max == (0.12,) * 3
    assert cfg.period_s == pytest.approx(1 / 500.0) and cfg.watchdog_ms == 100
    bus.close()
    rig.close()


def test_servo_limits_beyond_what_the_calibration_reaches_are_refused(tmp_path):
    # joint 0 reaches 3.49 rad; an uncalibrated servo turns +- pi: the profile loader refuses it
    # (it builds bus_spec's configuration), so `legato profiles show` never accepts it
    with pytest.raises(ProfileError, match="'shoulder' limits .* no calibration"):
        variant(tmp_path, "x86-cpu-feetech", ('calibration = "reference-arm.feetech.json"', "# none"))


def test_the_loop_clamps_to_the_robots_limits_not_the_models():
    # before: loop_config read man.data["model"]["task"]["arm"]
    man, prof = fake_manifest(), load_profile("x86-cpu")
    cfg = loop_config(man, prof, 0.0, None, None, 1)
    assert cfg.q_min == prof.robot.q_min == (-0.35, -2.9, -2.9) and cfg.q_max == (3.49, 2.9, 2.9)
    assert cfg.max_step == (0.12,) * 3 and cfg.stale_s == 0.1 and cfg.max_fault_ticks == 50
    assert loop_config(man, prof, 0.0, None, 0.05, 1).max_step == (0.05,) * 3  # --max-step


def test_the_profiles_ramp_reaches_the_loop():
    man, prof = fake_manifest(), load_profile("x86-cpu")
    assert loop_config(man, prof, 0.0, None, None, 1).ramp == prof.control.ramp == 4
    assert loop_config(man, prof, 0.0, 2, None, 1).ramp == 2  # --ramp overrides
    with pytest.raises(MethodError, match="r_max=3"):
        loop_config(fake_manifest(r_max=3), prof, 0.0, None, None, 1)


@pytest.mark.parametrize(
    "man,needle",
    [
        (fake_manifest(a=6, q_min=(0,) * 6, q_max=(1,) * 6), "commands 6 joints"),
        (fake_manifest(q_min=(-0.3, -3.1, -2.0)), "'elbow' span [-3.1, 2]"),
        (fake_manifest(q_max=(3.6, 2.0, 2.0)), "'shoulder' span"),
    ],
)
def test_a_bundle_that_does_not_fit_the_robot_is_refused(man, needle):
    with pytest.raises(BundleError) as e:
        check_fits(man, load_profile("x86-cpu"))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_sim_rig_is_built_by_the_same_builder_from_the_sim_arm(tmp_path):
    """--sim writes the simulator's arm and device into the profile's fields; the bus is then the
    one bus_spec builds from that profile for any port."""
    from edge.simrig import SIM_STALE_MS, SIM_WATCHDOG_MS, SimRig
    from sim.task import TaskConfig

    task = TaskConfig()
    for name in ("x86-cpu", "x86-cpu-feetech"):
        prof = variant(tmp_path, name, ("q_max = [3.49, 2.9, 2.9]", "q_max = [3.4, 2.8, 2.8]"))
        sim = SimRig(task, prof, episodes=1, seed=1000)
        rig = build_rig(fake_manifest(), prof, sim=sim)
        try:
            r, arm = rig.prof.robot, task.arm
            assert r.q_min == arm.q_min and r.q_max == arm.q_max  # the sim arm, not the profile's 3.4
            assert r.max_velocity == (arm.vel_max,) * 3 and r.max_step == prof.robot.max_step
            assert rig.prof.serial.port == sim.link_path and rig.prof.serial.stream_hz == 200.0
            assert rig.spec == bus_spec(rig.prof)
            assert (r.calibration is None) == (name == "x86-cpu")
            # the emulated device shares the inference process's CPU: its timing limits are floored
            assert r.stale_ms == SIM_STALE_MS and rig.prof.serial.watchdog_ms == SIM_WATCHDOG_MS
            assert rig.spec.settings["watchdog_ms"] == SIM_WATCHDOG_MS
        finally:
            rig.close()


class LateBus:
    """A bus whose first telemetry arrives ``after`` seconds after start (None: never)."""

    def __init__(self, after: float | None) -> None:
        self.after, self.tel = after, None

    def start(self) -> None:
        if self.after is not None:
            z = np.zeros(3, np.float32)
            t = time.monotonic()
            tel = Telemetry(
                positions=z,
                velocities=z,
                efforts=z,
                measured_at=np.full(3, t),
                received_at=t,
                sent_at=None,
                torque_enabled=True,
                holding=False,
                faults=0,
            )
            threading.Timer(self.after, lambda: setattr(self, "tel", tel)).start()

    def latest_telemetry(self):
        return self.tel

    def health(self):
        return None

    def close(self) -> None:
        pass


def test_start_waits_for_the_first_telemetry_with_a_deadline():
    # before: `legato run --port` read the telemetry once, right after start
    prof = load_profile("x86-cpu")
    lay = Layout(16, 3)
    rig = Rig(prof, BusSpec("firmware", {}), lay, bus=LateBus(0.2))
    t0 = time.monotonic()
    assert rig.start(timeout_s=3.0) is not None and time.monotonic() - t0 >= 0.19
    rig.close()
    rig = Rig(prof, BusSpec("firmware", {}), lay, bus=LateBus(None))
    t0 = time.monotonic()
    with pytest.raises(UsageError, match="no telemetry .* within 0.3 s"):
        rig.start(timeout_s=0.3)
    assert time.monotonic() - t0 >= 0.29
    rig.close()

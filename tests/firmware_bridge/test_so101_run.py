"""The SO-101 follower end to end: `legato run --port` with the so101-follower profile and its
LeRobot calibration file drives six emulated STS3215 servos (`legato firmware emulate --bus
feetech --calibration FILE`, started the moment before, holding that calibration as an arm
calibrated by LeRobot does) to the goal ticks LeRobot's calibration gives for the commanded
angles: the units and the calibration path through the whole robot stack, not just the bus.

The policy is a 6-joint bundle exported here from a tiny reference model whose flow head's output
layer is zero, so every chunk is the action mean of its (mean-std, std 1e-6) normalisation: a
fixed chunk, the angles LeRobot's golden goal ticks stand for (tests/firmware_bridge/fixtures,
made by LeRobot 0.6.1's own code on the emulated arm)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fw_helpers import patient_port

from firmware_bridge import feetech as ft
from firmware_bridge.calibration import Calibration

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
GOLDEN = FIXTURES / "so101_lerobot_calibration.json"  # the profile's sample file, byte for byte
READINGS = json.loads((FIXTURES / "so101_lerobot_readings.json").read_text())
PROFILE = ROOT / "profiles" / "so101-follower.toml"


def _angles(cal: Calibration, raw: list[int]) -> np.ndarray:
    """rad of raw Present/Goal_Position ticks, by docs/protocol.md's formula written out here (not
    the code under test): sign x (raw - (range_min + range_max) / 2) x 2 pi / 4096."""
    return np.array([(-1 if m.drive_mode else 1) * (r - (m.range_min + m.range_max) / 2) * 2 * math.pi / 4096
                     for m, r in zip(cal.motors, raw, strict=True)])  # fmt: skip


# the commanded joint angles: the ones LeRobot's own goal ticks stand for (its "degrees" and the
# gripper's "range_0_100" values GOALS_DEGREES, converted by LeRobot into these raw ticks)
GOAL_RAW = READINGS["goals"]["raw"]
Q_GOAL = _angles(Calibration.from_lerobot(GOLDEN), GOAL_RAW)


@pytest.fixture(scope="session")
def so101_bundle(tmp_path_factory) -> Path:
    """A 6-joint fp32 bundle (the reference adapter, exported by `legato export` for the
    so101-follower profile) whose every chunk is Q_GOAL."""
    torch = pytest.importorskip("torch")
    from edge.normalize import Normalizer
    from legato.adapters import Sample
    from legato.adapters.reference import ReferencePolicy
    from legato.checkpoint import save
    from legato.cli import main
    from legato.config import PolicyConfig, TrainConfig
    from legato.model import Policy
    from sim.arm import ArmConfig
    from sim.env import Observation
    from sim.scene import SceneConfig
    from sim.task import TaskConfig

    root = tmp_path_factory.mktemp("so101")
    torch.manual_seed(0)
    cfg = PolicyConfig(action_dim=6, state_dim=12, horizon=16, num_steps=5, width=32, heads=2,
                       prefix_layers=1, head_layers=1, mlp_ratio=2)  # fmt: skip
    model = Policy(cfg)
    with torch.no_grad():  # the velocity is 0 whatever the input: the chunk stays at the mean
        model.head.out.weight.zero_()
        model.head.out.bias.zero_()
    norm = Normalizer(np.zeros(12, np.float32), np.ones(12, np.float32), Q_GOAL.astype(np.float32),
                      np.full(6, 1e-6, np.float32), kind="mean-std")  # fmt: skip
    # the training arm's range is the profile's, so `legato run` accepts the bundle for this robot
    lim = (1.6, 1.8, 1.65, 1.85, 3.1, 1.15)
    arm = ArmConfig(link_lengths=(0.3, 0.25, 0.2, 0.1, 0.05, 0.05), q_min=tuple(-x for x in lim), q_max=lim)
    task = TaskConfig(arm=arm, scene=SceneConfig(start_q=(0.0,) * 6))
    ck = root / "ck"
    save(
        ck, model, TrainConfig(method="legato", steps=0, d_max=4, r_max=8), norm, task, {"data": {"seed": 0}}
    )

    def samples(self: ReferencePolicy, count: int, seed: int | None = None) -> list[Sample]:
        """The parity gate's observations: synthetic (the project's simulator has a 3-joint arm);
        every other one with a previous chunk, so the continuation is compared too."""
        rng = np.random.default_rng(0)
        p = self.native.policy_cfg
        out = []
        for i in range(count):
            obs = Observation(rng.integers(0, 256, (1, *p.image_hw, 3), dtype=np.uint8),
                              np.zeros((1, p.max_tokens), np.int64),
                              rng.normal(0.0, 0.5, (1, p.state_dim)).astype(np.float32))  # fmt: skip
            prev = None if i % 2 == 0 else Q_GOAL[None, None].repeat(p.horizon, 1).astype(np.float32)
            out.append(Sample(obs, prev))
        return out

    out = root / "so101-fp32"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ReferencePolicy, "samples", samples)
        args = ["export", "--checkpoint", str(ck), "--out", str(out), "--profile", "so101-follower",
                "--episodes", "0", "--parity-samples", "2"]  # fmt: skip
        assert main(args) == 0
    return out


@pytest.fixture
def video(tmp_path) -> str:
    """The camera of a --port run: a short MJPG file (OpenCV plays files like a device)."""
    cv2 = pytest.importorskip("cv2")
    path = str(tmp_path / "cam.avi")
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for k in range(5):
        w.write(np.full((48, 64, 3), 40 * k, np.uint8))
    w.release()
    return path


def _profile(tmp_path: Path) -> Path:
    """so101-follower as shipped, its calibration next to it, and a generous setup reply wait (the
    emulator is another process on a loaded machine: its behaviour is pinned, not its speed)."""
    (tmp_path / GOLDEN.name).write_bytes(GOLDEN.read_bytes())
    text = PROFILE.read_text()
    assert 'calibration = "so101-follower.calibration.json"' in text
    text = text.replace('calibration = "so101-follower.calibration.json"', f'calibration = "{GOLDEN.name}"')
    text = text.replace("[serial]\n", "[serial]\nsetup_timeout_ms = 2000\n")
    path = tmp_path / "so101-follower.toml"
    path.write_text(text)
    return path


def _read_registers(port: str, address: int, ids: list[int], sign_bit: int = 15) -> list[int]:
    """A two-byte register of each servo (sign-magnitude), read with Feetech's own SDK as a host."""
    scs = pytest.importorskip("scservo_sdk")
    ph, handler = patient_port(scs, port), scs.PacketHandler(0)
    assert ph.openPort() and ph.setBaudRate(1_000_000)
    try:
        out = []
        for sid in ids:
            value, result, _ = handler.read2ByteTxRx(ph, sid, address)
            assert result == scs.COMM_SUCCESS, (sid, handler.getTxRxResult(result))
            out.append(ft.from_sign_magnitude(value, sign_bit))
        return out
    finally:
        ph.closePort()


def test_legato_run_drives_the_so101_servos_to_the_angles_its_lerobot_calibration_predicts(
    so101_bundle, video, tmp_path, capsys
):
    from legato.cli import main

    cal = Calibration.from_lerobot(GOLDEN)
    ids = list(cal.ids)
    emu = subprocess.Popen([sys.executable, "-m", "legato.cli", "firmware", "emulate", "--bus", "feetech",
                            "--calibration", str(GOLDEN), "--duration", "300"],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert emu.stdout is not None
        port = emu.stdout.readline().strip()
        assert port.startswith("/dev/pts/"), emu.stderr.read() if emu.poll() is not None else port
        # the emulated arm holds LeRobot's calibration: the registers LeRobot's code left there
        regs = READINGS["registers"].values()
        assert _read_registers(port, ft.HOMING_OFFSET, ids, 11) == [r["Homing_Offset"] for r in regs]
        assert _read_registers(port, ft.MIN_ANGLE_LIMIT, ids) == [r["Min_Position_Limit"] for r in regs]
        out = tmp_path / "summary.json"
        rc = main(["run", "--bundle", str(so101_bundle), "--profile", str(_profile(tmp_path)), "--port", port,
                   "--camera", video, "--seconds", "3", "--quiet", "--summary-json", str(out)])  # fmt: skip
        err = capsys.readouterr().err
        assert rc == 0, err
        goals = _read_registers(port, ft.GOAL_POSITION, ids)
        present = _read_registers(port, ft.PRESENT_POSITION, ids)
    finally:
        emu.terminate()
        emu.communicate(timeout=30)
    s = json.loads(out.read_text())
    assert s["shutdown"] == "completed" and s["errors"] == [] and s["ticks"] > 50
    # no NaN; a fault tick here is a hold on stale joint state (replies late on a loaded machine)
    assert s["nan_setpoints"] == 0 and s["faults"] == s["stale_ticks"]
    # the servos' goal registers end at exactly the ticks LeRobot's calibration gives for the
    # commanded angles (LeRobot's own goal ticks), and the arm went there
    assert goals == GOAL_RAW
    np.testing.assert_allclose(_angles(cal, present), Q_GOAL, atol=0.02)


def test_the_profiles_setup_timeout_reaches_the_servo_bus_and_is_refused_on_the_firmware_link(tmp_path):
    from edge.errors import ProfileError
    from edge.profiles import PROFILE_DIR, load_profile
    from edge.rig import bus_spec

    spec = bus_spec(load_profile(_profile(tmp_path)))
    assert spec.kind == "feetech" and spec.open().config.setup_timeout_s == 2.0
    assert "setup_timeout_s" not in bus_spec(load_profile("so101-follower")).settings  # the bus's 100 ms
    fw = tmp_path / "fw.toml"
    fw.write_text(
        (PROFILE_DIR / "x86-cpu.toml").read_text().replace("[serial]\n", "[serial]\nsetup_timeout_ms = 500\n")
    )
    with pytest.raises(ProfileError, match="'serial.setup_timeout_ms' applies to servo buses"):
        load_profile(fw)

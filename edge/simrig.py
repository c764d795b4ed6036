"""The far end of ``legato run --sim``'s port: the simulated arm behind an emulated device on a pty.

The profile's ``[serial] protocol`` chooses the device: "firmware" the emulated motor controller,
"feetech" or "dynamixel" emulated servos (``[serial] ids``). :class:`SimRig` starts it on a
pseudo-terminal and writes the simulator's arm into the profile's own fields (:meth:`profile`):
``[robot]`` joints, limits and speed, stale_ms at least SIM_STALE_MS (the emulated device shares
the CPU with inference); ``[serial]`` port (the pty), stream rate (what the emulated device
keeps up with) and watchdog_ms at least SIM_WATCHDOG_MS (the same reason); for servos a LeRobot
calibration file that maps the arm's joint ranges into one turn (:func:`sim_calibration`). The
host side (the bus, the loop) is then built from that profile by the one rig builder
(edge/rig.py), exactly as for a robot's port.

Imported only on the --sim path (it imports sim/, which the robot install does not need).
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UsageError
from edge.profiles import Profile, check_robot

SIM_JOINTS = ("shoulder", "elbow", "wrist")  # the reference arm's joint names (profiles/*.toml)
# The emulated device runs in the inference process (SCHED_OTHER, sharing the CPU with inference
# and whatever else runs), so on a loaded machine its telemetry can be this late while a robot's
# controller, its own device, would not be: --sim holds on stale state only past this.
SIM_STALE_MS = 1000.0
# For the same reason the emulated device's watchdog: it evaluates its timer at the instants a
# timer interrupt would have run, so a device thread starved for 100 ms reads the frames that
# waited in the pty after the watchdog fired, and latches a fault (then holds the arm for the
# rest of the session) while the host, in its own SCHED_FIFO clock process, was never silent.
SIM_WATCHDOG_MS = 1000


def speaks_sim_ids(bundle: str | Path, lang: Any) -> bool:
    """True when the bundle's language input takes the simulator's own token ids: it carries no
    tokenizer (ids only), or its tokenizer file is a word-level vocabulary equal to
    sim.language.VOCAB (the reference model's). Read as JSON: no tokenizers library needed."""
    from sim.language import VOCAB

    if lang.tokenizer is None:
        return True
    try:
        doc = json.loads((Path(bundle) / lang.tokenizer).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False  # edge.language.load_tokenizer names the problem in one line
    model = doc.get("model") if isinstance(doc, dict) else None
    vocab = model.get("vocab") if isinstance(model, dict) and model.get("type") == "WordLevel" else None
    return vocab == {w: i for i, w in enumerate(VOCAB)}


def sim_instruction(man: Any, episode_tokens: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The simulator's instruction as the bundle's policy takes it, for every episode's ids
    ``episode_tokens`` (e, l) up front (a prompt that does not fit is refused before the motors
    start): the ids as they are where the bundle speaks them (:func:`speaks_sim_ids`); otherwise
    the instruction's words tokenized with the bundle's tokenizer (edge.language, as
    ``legato run --prompt`` does: a LeRobot policy's prompt). Returns ids (l,) -> the bundle's ids.
    A policy whose state enters its prompt (pi0.5) gets the ids as they are: each frame's prompt
    replaces them (edge.language.PromptedSource)."""
    ad = getattr(man, "adapter", None)  # a policy server's model (edge.remote) has no local adapter:
    lang = ad.observation.language if ad is not None else None  # the ids go to it as they are
    from edge.language import encode_prompt, load_tokenizer

    if lang is None or lang.prompt is not None or speaks_sim_ids(man.path, lang):
        return lambda ids: ids
    from sim.language import detokenize

    tok = load_tokenizer(man.path, lang)
    table = {}
    for ids in np.asarray(episode_tokens):
        key = np.asarray(ids, np.int64).tobytes()
        if key not in table:
            table[key] = encode_prompt(tok, detokenize(ids), lang)[0]
    return lambda ids: table[np.asarray(ids, np.int64).tobytes()]


class _FirmwareTarget:
    """The firmware emulator's core as the rig sees it: the target it commands (float rad)."""

    atol = 1e-5

    def __init__(self, emu: Any) -> None:
        self.emu, self.core = emu, emu.core

    def attach(self, motor: Any) -> None:
        self.core.motor = motor

    def hold_at(self, q0: np.ndarray) -> np.ndarray:  # emulator lock held
        self.core.commanded[...] = q0
        self.core.target[...] = q0
        return self.core.commanded.copy()

    def commanded(self) -> np.ndarray:
        return self.core.commanded


class _ServoTarget:
    """The emulated servos as the rig sees them: their goal position registers (rad, in ticks)."""

    def __init__(self, emu: Any) -> None:
        self.emu = emu
        self.atol = 0.5 * 2 * math.pi / emu.config.ticks_per_rev + 1e-6  # half a tick

    def attach(self, motor: Any) -> None:
        self.emu.motor = motor

    def hold_at(self, q0: np.ndarray) -> np.ndarray:  # emulator lock held
        return self.emu.set_goals_rad(q0)

    def commanded(self) -> np.ndarray:
        return self.emu.goals_rad()


def sim_calibration(kind: str, ids: tuple[int, ...], q_min: tuple[float, ...], q_max: tuple[float, ...],
                    ticks_per_rev: int = 4096) -> Any:  # fmt: skip
    """The calibration of the emulated servos under the sim arm: joint value = the sim's q.

    The emulated encoder reads ``q`` as ``tpr/2 + q / k`` (k = 2 pi / tpr). A homing offset of
    ``shift`` ticks (the middle of the joint's travel) puts the travel in the middle of one turn,
    so no reported position wraps (joint 0, [-0.35, 3.49] rad, would reach 4323 without it). The
    calibration's zero (the middle of range_min..range_max) is the tick where q = 0, so the range
    is symmetric about it and may be wider than the travel, even reach below 0; the joint limits
    come from the arm, not from this range."""
    from firmware_bridge.calibration import Calibration, MotorCalibration

    k = 2 * math.pi / ticks_per_rev
    motors = []
    for sid, lo, hi in zip(ids, q_min, q_max, strict=True):
        shift = int(round((lo + hi) / 2 / k))
        zero = ticks_per_rev // 2 - shift  # reported tick at q = 0
        half = int(math.ceil(max(abs(lo), abs(hi)) / k)) + 1
        # Feetech reports encoder - offset, Dynamixel encoder + offset
        homing = shift if kind == "feetech" else -shift
        motors.append(MotorCalibration(sid, homing, zero - half, zero + half))
    return Calibration(tuple(motors), ticks_per_rev)


def write_lerobot_calibration(path: Path, names: tuple[str, ...], cal: Any) -> None:
    """``cal`` as LeRobot's calibration JSON (motor name -> id, drive_mode, homing_offset,
    range_min, range_max), in joint order."""
    doc = {n: {"id": m.servo_id, "drive_mode": m.drive_mode, "homing_offset": m.homing_offset,
               "range_min": m.range_min, "range_max": m.range_max}
           for n, m in zip(names, cal.motors, strict=True)}  # fmt: skip
    path.write_text(json.dumps(doc, indent=4) + "\n")


class SimRig:
    """The simulated arm of ``task`` (sim.task.TaskConfig) behind the emulated device the profile's
    protocol names, started on a pty; ``episodes`` held-out episodes of ``seed`` on its plant."""

    def __init__(self, task: Any, prof: Profile, episodes: int, seed: int, tick_hz: float = 400.0) -> None:
        from edge.simplant import SimPlant

        self.task = task
        arm = task.arm
        n = arm.num_joints
        self.protocol = protocol = prof.serial.protocol
        self._dir = tempfile.TemporaryDirectory(prefix="legato-sim-")
        self.link_path = str(Path(self._dir.name) / "ttyLEGATO")
        self.calibration_path: str | None = None
        if protocol == "firmware":
            from firmware_bridge.emulator import EmulatedController, EmulatorConfig

            ecfg = EmulatorConfig(n_joints=n, tick_hz=tick_hz, telemetry_hz=200,
                                  watchdog_ms=max(prof.serial.watchdog_ms, SIM_WATCHDOG_MS))  # fmt: skip
            self.emu: Any = EmulatedController(ecfg, link_path=self.link_path)
            self.ctl: _FirmwareTarget | _ServoTarget = _FirmwareTarget(self.emu)
        else:
            from firmware_bridge.servo_emulator import EmulatedServoBus, ServoEmulatorConfig

            ids = tuple(int(i) for i in prof.serial.ids)
            if len(ids) != n:
                raise UsageError(f"profile {prof.name}: [serial] ids {list(ids)} name {len(ids)} servos, "
                                 f"the sim arm has {n} joints")  # fmt: skip
            scfg = ServoEmulatorConfig(protocol, ids, tick_hz=tick_hz)
            self.emu = EmulatedServoBus(scfg, link_path=self.link_path)
            self.ctl = _ServoTarget(self.emu)
            cal = sim_calibration(protocol, ids, arm.q_min, arm.q_max, scfg.ticks_per_rev)
            path = Path(self._dir.name) / "calibration.json"
            write_lerobot_calibration(path, self.joint_names, cal)
            self.calibration_path = str(path)
        self.tick_hz = tick_hz
        self._prof = prof
        self.plant = SimPlant(task, tick_hz, seed=seed, episodes=episodes, lock=self.emu.cond)
        self.ctl.attach(self.plant.motor)  # the emulated device drives the simulated arm
        self.plant.hold_at = self.ctl.hold_at
        self.emu.start()

    @property
    def joint_names(self) -> tuple[str, ...]:
        n = self.task.arm.num_joints
        return SIM_JOINTS if n == len(SIM_JOINTS) else tuple(f"joint{j}" for j in range(n))

    def profile(self) -> Profile:
        """The profile with the simulator's arm and device written into its fields."""
        p, arm = self._prof, self.task.arm
        robot = dataclasses.replace(
            p.robot, joints=self.joint_names, q_min=tuple(arm.q_min), q_max=tuple(arm.q_max),
            max_velocity=(float(arm.vel_max),) * arm.num_joints, calibration=self.calibration_path,
            stale_ms=max(p.robot.stale_ms, SIM_STALE_MS),
        )  # fmt: skip
        # the emulated device ticks at tick_hz: a stream faster than half of it would queue
        stream = min(float(p.serial.stream_hz or p.control.rate_hz), self.tick_hz / 2)
        serial = dataclasses.replace(p.serial, port=self.link_path, stream_hz=stream,
                                     watchdog_ms=max(p.serial.watchdog_ms, SIM_WATCHDOG_MS))  # fmt: skip
        return check_robot(dataclasses.replace(p, robot=robot, serial=serial), f"{p.path} (--sim)")

    def confirm_hold(self, hold: np.ndarray, timeout_s: float = 2.0) -> bool:
        """True once the controller's commanded target (the servos' goal registers) equals ``hold``:
        the hold reached the motors. The emulated device shares the inference process's CPU: on a
        loaded machine its thread may not run for half a second (``timeout_s`` is only spent when
        the hold never arrives)."""
        h = np.asarray(hold, np.float64)
        ctl = self.ctl
        return self.emu.wait_until(lambda _: bool(np.allclose(ctl.commanded(), h, atol=ctl.atol)), timeout_s)

    def close(self) -> None:
        self.emu.close()
        self._dir.cleanup()

"""The ``--sim`` plant: the simulated arm behind the emulated motor controller on a pty.

The path is the one a robot takes: ControlLoop -> FirmwareBridge -> pty -> EmulatedController ->
motor. Here the controller's motor is :class:`ArmMotor`, which integrates sim/arm.py's joint
model (PD with torque and velocity limits, stops at the joint limits) at the task's physics rate
(``sim.arm.motor_step`` itself, one physics step at a time), so the deployed stack drives the
same dynamics the policy was evaluated on. :class:`SimPlant` adds the scene: the camera renders
the arm where it is, and success / collision are checked once per control period of plant time
(as sim.env does), counted in plant (controller) time.

Imported only on the --sim path (it imports sim/, which the robot install does not need).
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

import numpy as np

from sim.arm import ArmConfig, motor_step
from sim.camera import Camera
from sim.env import instruction_tokens
from sim.episodes import EpisodeSpec, sample_episodes
from sim.scene import collides, reached
from sim.task import TaskConfig


class ArmMotor:
    """Duck-types firmware_bridge.motor.MotorModel (q, v, tau, step) with sim/arm.py's model.

    ``step(target, dt, v_max)`` is called every controller tick; every ``ticks_per_step`` ticks
    one physics step of 1 / physics_hz runs (the controller tick must divide it). ``target``
    None (torque off) coasts with damping only. ``on_physics`` runs after each physics step."""

    def __init__(self, arm: ArmConfig, tick_hz: float) -> None:
        ratio = tick_hz / arm.physics_hz
        if ratio < 1 or abs(ratio - round(ratio)) > 1e-9:
            raise ValueError(f"controller tick {tick_hz} Hz must be a multiple of physics "
                             f"{arm.physics_hz} Hz")
        self.ticks_per_step = round(ratio)
        self.arm1 = dataclasses.replace(arm, control_hz=arm.physics_hz)  # motor_step: one substep
        n = arm.num_joints
        self.q, self.v, self.tau = np.zeros(n), np.zeros(n), np.zeros(n)
        self._tick = 0
        self.on_physics: object = None

    def reset(self, q0: np.ndarray) -> None:
        self.q[...] = q0
        self.v.fill(0.0)
        self._tick = 0

    def step(self, target: np.ndarray | None, dt: float, v_max: np.ndarray) -> None:
        self._tick += 1
        if self._tick % self.ticks_per_step:
            return
        if target is None:  # torque off: no PD, friction only
            self.v *= 1.0 - min(1.0, self.arm1.kd / self.arm1.physics_hz)
            self.q += self.v / self.arm1.physics_hz
        else:
            q, v = motor_step(self.arm1, self.q[None], self.v[None], np.asarray(target)[None])
            self.q[...], self.v[...] = q[0], v[0]
        cb = self.on_physics
        if cb is not None:
            cb()  # type: ignore[operator]


@dataclass
class EpisodeResult:
    index: int
    success: bool = False
    collided: bool = False
    steps: int = 0  # control periods of plant time when the episode ended
    steps_to_success: int = -1


class SimPlant:
    """Episodes of the reach task on the plant. Thread-safety: the motor runs in the emulator's
    thread under its condition lock ``lock``; render and load take the same lock."""

    def __init__(self, task: TaskConfig, tick_hz: float, seed: int = 1000, episodes: int = 100,
                 lock: threading.Condition | threading.Lock | None = None) -> None:  # fmt: skip
        self.task = task
        self.motor = ArmMotor(task.arm, tick_hz)
        self.motor.on_physics = self._on_physics
        self.spec: EpisodeSpec = sample_episodes(task, seed, episodes)
        self.camera = Camera(task.arm, task.scene, task.camera)
        self.tokens_all = instruction_tokens(self.spec.scenes, self.spec.template)
        self.lock = lock or threading.Lock()
        self.done = threading.Event()
        self.result = EpisodeResult(-1)
        self._physics = 0
        self._scene = self.spec.scenes.select(np.array([0]))
        self.tokens = self.tokens_all[0]

    @property
    def episodes(self) -> int:
        return len(self.spec.scenes)

    def load(self, i: int) -> np.ndarray:
        """Put the arm at episode i's start posture; returns q0 (a,) float32."""
        with self.lock:
            self._scene = self.spec.scenes.select(np.array([i]))
            self.tokens = self.tokens_all[i]
            q0 = self._scene.q0[0].astype(np.float64)
            self.motor.reset(q0)
            self._physics = 0
            self.result = EpisodeResult(i)
            self.done.clear()
        return q0.astype(np.float32)

    def _on_physics(self) -> None:  # emulator thread, lock held
        if self.done.is_set():
            return
        self._physics += 1
        if self._physics % self.task.arm.substeps:
            return
        r = self.result
        r.steps += 1
        q = self.motor.q[None]
        arm, sc = self.task.arm, self.task.scene
        if collides(arm, sc, self._scene, q)[0]:
            r.collided = True
        elif reached(arm, sc, self._scene, q)[0]:
            r.success, r.steps_to_success = True, r.steps
        if r.collided or r.success or r.steps >= self.task.max_steps:
            self.done.set()

    def render(self) -> np.ndarray:
        """The camera frame of the arm where it is now: (H, W, 3) uint8."""
        with self.lock:
            q = self.motor.q.copy()
            scene = self._scene
        return self.camera.render(scene, q[None])[0]

    def joint_positions(self) -> np.ndarray:
        with self.lock:
            return self.motor.q.copy()

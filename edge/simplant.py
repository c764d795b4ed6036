"""The ``--sim`` plant: the simulated arm behind the emulated motor controller on a pty.

The path is the one a robot takes: ControlLoop -> FirmwareBridge -> pty -> EmulatedController ->
motor, or, with a servo-bus profile, ControlLoop -> ServoBus -> pty -> EmulatedServoBus -> motor.
Here the controller's motor is :class:`ArmMotor`, which integrates sim/arm.py's joint
model (PD with torque and velocity limits, stops at the joint limits; ``sim.arm.motor_step``
itself, one control period per setpoint), so the deployed stack drives the same dynamics the
policy was evaluated on. :class:`SimPlant` adds the scene: the camera renders the arm where it
is, and success / collision are checked after every control period (as sim.env does), counted
from the episode's start.

Imported only on the --sim path (it imports sim/, which the robot install does not need).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
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

    Lockstep with the setpoints, as sim.env steps: when a new target arrives (or, while the
    target holds, once per control period after a grace of half a period: the bridge streams
    the newest target at its own rate, so consecutive targets arrive 15-25 ms apart at 50 Hz and
    a one-period timer would insert a spurious step with the old target), the arm advances one control
    period with ``sim.arm.motor_step`` (its substeps at physics_hz, exactly the evaluation's
    integration) and ``on_step()`` checks the scene. Between two advances the arm stays where
    the last one left it, so the camera and the telemetry at the next tick see the state the
    evaluation's observation would. (A free-running physics clock would let a target wait up to
    a physics step for its first substep, and give a jittery number of substeps per target.)
    ``target`` None (torque off) advances with no drive, damping only."""

    def __init__(self, arm: ArmConfig, tick_hz: float) -> None:
        self.arm = arm
        self.period = 1.0 / arm.control_hz
        n = arm.num_joints
        self.q, self.v, self.tau = np.zeros(n), np.zeros(n), np.zeros(n)
        self._since = 0.0  # controller time since the last advance
        self._holding = False  # the last advance was a hold (no new target)
        self._last_target = np.full(n, np.nan)
        self.advances = 0
        self.on_step: object = None

    def reset(self, q0: np.ndarray) -> None:
        self.q[...] = q0
        self.v.fill(0.0)
        self._since = 0.0
        self._holding = False
        self._last_target.fill(np.nan)

    def step(self, target: np.ndarray | None, dt: float, v_max: np.ndarray) -> None:
        self._since += dt
        # (the controller's step limiter leaves ulp-level residues: compare with a tolerance)
        new = target is not None and not np.allclose(target, self._last_target, rtol=0.0, atol=1e-9)
        wait = self.period if self._holding else 1.5 * self.period
        if not new and self._since < wait - 0.5 * dt:
            return
        self._holding = not new
        self._since = 0.0
        if target is None:  # torque off: no PD, damping only
            self.v *= max(0.0, 1.0 - self.arm.kd * self.period)
            self.q += self.v * self.period
        else:
            self._last_target[...] = target
            q, v = motor_step(self.arm, self.q[None], self.v[None], np.asarray(target, np.float64)[None])
            self.q[...], self.v[...] = q[0], v[0]
        self.advances += 1
        cb = self.on_step
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
        self.motor.on_step = self._on_step
        self.spec: EpisodeSpec = sample_episodes(task, seed, episodes)
        self.camera = Camera(task.arm, task.scene, task.camera)
        self.tokens_all = instruction_tokens(self.spec.scenes, self.spec.template)
        self.lock = lock or threading.Lock()
        self.done = threading.Event()
        self.result = EpisodeResult(-1)
        # the rig's hook: the controller (firmware core or servo goal registers) holds q0 from now;
        # returns the target it holds (a servo's is rounded to ticks). Called with the lock held.
        self.hold_at: Callable[[np.ndarray], np.ndarray] | None = None
        self.counting = False
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
            # the controller holds the new start posture, not the old target (and the motor takes
            # that hold for the target it already has: no spurious advance)
            self.motor._last_target[...] = q0 if self.hold_at is None else self.hold_at(q0)
            self.result = EpisodeResult(i)
            self.counting = False
            self.done.clear()
        return q0.astype(np.float32)

    def go(self) -> None:
        """Start the episode's clock (control periods count from here, as sim.env's t from 0)."""
        with self.lock:
            self.counting = True

    def _on_step(self) -> None:  # emulator thread, lock held: after each control period
        if self.done.is_set() or not self.counting:
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

    def observe(self) -> tuple[np.ndarray, np.ndarray]:
        """Camera frame and proprio (positions then velocities, float32) of one instant."""
        with self.lock:
            q, v = self.motor.q.copy(), self.motor.v.copy()
            scene = self._scene
        return self.camera.render(scene, q[None])[0], np.concatenate([q, v]).astype(np.float32)

    def state(self) -> np.ndarray:
        """The simulator's proprio now: joint positions then velocities, (2 j,) float32."""
        with self.lock:
            return np.concatenate([self.motor.q, self.motor.v]).astype(np.float32)

    def joint_positions(self) -> np.ndarray:
        with self.lock:
            return self.motor.q.copy()

"""MetaWorld's push-wall-v3 behind the planar arm's interface: a task nobody on this project wrote.

A Sawyer arm pushes a puck to a goal behind a wall (MuJoCo, 39-d state, 4-d action, 80 Hz:
frame_skip 5 of a 2.5 ms physics step). MetaWorld's scripted expert goes round the wall's left
end; `RightDetour` mirrors it about the wall's centre, and each episode draws one of the two
(50/50), so the demonstrations are bimodal and a policy that changes its mind near the wall
pushes the puck into it or hesitates.

Interface (the same as sim.env.ReachEnv, so rollouts, training and metrics run unchanged):
- Actions are absolute targets (b, 4): the hand's mocap position (x, y, z) in metres and the
  gripper effort in [-1, 1]. The env turns a target into MetaWorld's action, the end-effector
  delta (target - mocap) / action_scale clipped to [-1, 1]: at most 1 cm per step. Targets make
  chunks comparable across time like joint targets (boundary jumps, overlap, smoothness), and
  the normaliser's "relative to the state's first a entries" (hand xyz, gripper opening) holds.
- The state is MetaWorld's 39-d observation with the goal visible; the observation's image is
  (b, 0, 0, 3) unless the camera is on, and its one token names the task.
- b episodes run in lockstep on one MuJoCo model: each episode's physics state is swapped in
  and out with mj_getState / mj_setState (an env instance per episode would cost ~30 MB each).

metaworld and mujoco are the `metaworld` extra; importing this module needs neither.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np

from sim.errors import MissingExtra

NAME = "metaworld-push-wall"
ENV_ID = "push-wall-v3-goal-observable"
WALL_X = (-0.02, 0.22)  # m, the wall's x extent (body at x 0.1, half-size 0.12)
WALL_Y = 0.75  # m, the wall's centre line (half-thickness 0.01)
LEFT, RIGHT = 1, -1  # route labels, the planar arm's side convention (+1 left)


def _metaworld():
    try:
        import metaworld  # noqa: F401
        import mujoco
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE
    except ImportError as e:
        raise MissingExtra(
            f"the {NAME} task needs MetaWorld and MuJoCo ({e.name} is missing): pip install -e '.[metaworld]'"
        ) from None
    return mujoco, ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[ENV_ID]


@dataclass(frozen=True)
class SawyerConfig:
    control_hz: float = 80.0  # MetaWorld: 2.5 ms physics step, frame_skip 5
    action_scale: float = 0.01  # m of mocap motion per unit action (MetaWorld's 1 / 100)
    hand_init: tuple[float, float, float] = (0.0, 0.6, 0.2)  # m, MetaWorld's reset posture

    @property
    def num_joints(self) -> int:
        """Commanded quantities per step (x, y, z, gripper): the action dimension."""
        return 4


@dataclass(frozen=True)
class PushWallCamera:
    enabled: bool = False  # state observations by default; the camera is an option
    height: int = 96  # px; multiples of 8 (the policy's stem downsamples by 8)
    width: int = 96
    camera: str = "corner"  # MetaWorld camera name


@dataclass(frozen=True)
class PushWallExpert:
    # DART noise on the executed action, in action units (0.15 = 1.5 mm per step): the expert
    # still succeeds on ~97 % of episodes (0.3 with correlation 0.8 broke the grasp: 28 %).
    noise_std: float = 0.15
    noise_corr: float = 0.5  # AR(1) correlation of the noise between steps


@dataclass(frozen=True)
class PushWallConfig:
    name: str = NAME
    arm: SawyerConfig = field(default_factory=SawyerConfig)
    camera: PushWallCamera = field(default_factory=PushWallCamera)
    expert: PushWallExpert = field(default_factory=PushWallExpert)
    max_steps: int = 250  # 3.1 s at 80 Hz; the experts need ~80 (left) and ~120 (right) steps
    success_tol: float = 0.07  # m, puck to goal (MetaWorld's own success test)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> PushWallConfig:
        def tup(sub: dict[str, Any]) -> dict[str, Any]:
            return {k: tuple(v) if isinstance(v, list) else v for k, v in sub.items()}

        return PushWallConfig(
            arm=SawyerConfig(**tup(d["arm"])),
            camera=PushWallCamera(**d["camera"]),
            expert=PushWallExpert(**d["expert"]),
            max_steps=int(d["max_steps"]),
            success_tol=float(d["success_tol"]),
        )


@dataclass(frozen=True)
class PushWallScenes:
    """b episodes: reset_seed (b,) seeds MetaWorld's own draw of puck and goal at reset."""

    reset_seed: np.ndarray
    FIELDS: ClassVar[tuple[str, ...]] = ("reset_seed",)

    def __len__(self) -> int:
        return len(self.reset_seed)

    def select(self, idx: np.ndarray) -> PushWallScenes:
        return PushWallScenes(self.reset_seed[idx])

    @staticmethod
    def concat(parts: list[PushWallScenes]) -> PushWallScenes:
        return PushWallScenes(np.concatenate([p.reset_seed for p in parts]))


def sample_episodes(task: PushWallConfig, seed: int, count: int, first: int = 0):
    """Episodes first..first+count-1 of the set with this seed (the sim.episodes rule: episode
    i depends only on (seed, i)): MetaWorld's reset seed, the expert's route, the DART noise."""
    from sim.episodes import EpisodeSpec

    rngs = [np.random.default_rng([seed, i]) for i in range(first, first + count)]
    reset_seed = np.array([rng.integers(2**31 - 1) for rng in rngs], dtype=np.int64)
    side = np.array([rng.choice([LEFT, RIGHT]) for rng in rngs]).astype(np.float64)
    noise = np.stack([rng.standard_normal((task.max_steps, 4)) for rng in rngs])
    return EpisodeSpec(PushWallScenes(reset_seed), side, np.zeros(count, dtype=np.int64), noise)


def right_detour_policy():
    """MetaWorld's push-wall expert mirrored about the wall's centre (x = 0.1): it pushes the
    puck +x past the wall's right end (x > 0.3) instead of -x past the left one (x < -0.1)."""
    from metaworld.policies.sawyer_push_wall_v3_policy import SawyerPushWallV3Policy

    class RightDetour(SawyerPushWallV3Policy):
        @staticmethod
        def _desired_pos(o_d: dict[str, np.ndarray]) -> np.ndarray:
            pos_curr = o_d["hand_pos"]
            pos_obj = o_d["obj_pos"] + np.array([-0.005, 0, 0])
            if np.linalg.norm(pos_curr[:2] - pos_obj[:2]) > 0.02:  # above the puck
                return pos_obj + np.array([0.0, 0.0, 0.2])
            if abs(pos_curr[2] - pos_obj[2]) > 0.04:  # down onto it
                return pos_obj + np.array([0.0, 0.0, 0.03])
            if -0.1 <= pos_obj[0] <= 0.3 and 0.65 <= pos_obj[1] <= 0.75:  # wall ahead: go right
                return pos_curr + np.array([1.0, 0, 0])
            if 0.15 < pos_obj[0] < 0.35 and 0.695 <= pos_obj[1] <= 0.755:  # past its end: go up
                return pos_curr + np.array([0, 1.0, 0])
            return o_d["goal_pos"]

    return RightDetour()


def experts() -> dict[int, Any]:
    """{route: scripted policy}: MetaWorld's own (left) and the mirrored detour (right)."""
    from metaworld.policies.sawyer_push_wall_v3_policy import SawyerPushWallV3Policy

    return {LEFT: SawyerPushWallV3Policy(), RIGHT: right_detour_policy()}


def route_of(plan: np.ndarray, x_hand: np.ndarray) -> np.ndarray:
    """Which end of the wall each planned hand path goes round: +1 left, -1 right, 0 undecided.

    plan (b, h, >= 2) hand targets (x, y, ...) in m; x_hand (b,) the hand's x now. The side is
    where the plan first reaches the wall's line (y >= WALL_Y), left or right of the wall's
    centre, also when its first target is already there (the hand at an end of the wall: the
    rest of such a plan turns back towards the goal, which is no change of route); a plan that
    does not reach the wall is labelled by its lateral motion (more than 3 cm from the hand's x
    towards one end); anything else is undecided.
    """
    x, y = plan[..., 0], plan[..., 1]
    at_wall = y >= WALL_Y
    reaches = at_wall.any(-1)
    first = np.argmax(at_wall, axis=-1)
    x_cross = x[np.arange(len(x)), first]
    centre = 0.5 * (WALL_X[0] + WALL_X[1])
    by_cross = np.where(x_cross < centre, LEFT, RIGHT)
    lo, hi = x.min(-1) - x_hand, x.max(-1) - x_hand
    by_motion = np.where(-lo > np.maximum(hi, 0.03), LEFT, np.where(hi > np.maximum(-lo, 0.03), RIGHT, 0))
    return np.where(reaches, by_cross, by_motion).astype(np.int64)


@dataclass(frozen=True)
class Observation:
    image: np.ndarray  # (b, H, W, 3) uint8; (b, 0, 0, 3) without the camera
    tokens: np.ndarray  # (b, 1) int64: the task's one token
    state: np.ndarray  # (b, 39) float32: MetaWorld's observation, goal included


TASK_TOKEN = 1  # the single instruction token: the task is fixed


class PushWallEnv:
    """b push-wall episodes stepped in lockstep (the ReachEnv interface). `collided` records any
    contact of the puck or the gripper with the wall (it does not end the episode)."""

    def __init__(self, task: PushWallConfig, scenes: PushWallScenes, templates: Any = None,
                 stop_on_success: bool = True) -> None:  # fmt: skip
        self.task, self.scenes = task, scenes
        self.stop_on_success = stop_on_success
        self._mj, cls = _metaworld()
        env = cls()
        env._freeze_rand_vec = False  # a new puck and goal at every reset, from the seeded RNG
        env.seeded_rand_vec = True
        env.max_path_length = 10**9  # the episode length is ours (max_steps)
        self.env = env
        m = env.model
        self._spec = self._mj.mjtState.mjSTATE_INTEGRATION
        body = [int(x) for x in m.geom_bodyid]
        self._wall = {i for i in range(m.ngeom) if body[i] == int(m.body("wall").id)}
        self._puck = int(m.geom("objGeom").id)
        names = ("rightpad", "leftpad", "hand", "rightclaw_it", "leftclaw_it")
        arm_bodies = {int(m.body(n).id) for n in names if _has_body(m, n)}
        self._touch = {self._puck} | {i for i in range(m.ngeom) if body[i] in arm_bodies}
        self._renderer = None
        ids = {n: int(m.body(n).id) for n in ("hand", "rightclaw", "leftclaw")}
        self._hand, self._rclaw, self._lclaw = ids["hand"], ids["rightclaw"], ids["leftclaw"]
        space = env.sawyer_observation_space
        self._obs_lo, self._obs_hi = space.low, space.high
        self.reset()

    # -- episode state swapping ---------------------------------------------------------
    def _save(self, i: int) -> None:
        self._mj.mj_getState(self.env.model, self.env.data, self._phys[i], self._spec)

    def _load(self, i: int, forward: bool = True) -> None:
        """Swap episode i's physics in; forward=False when the next call is mj_step (which
        computes positions itself) and nothing reads them before."""
        env = self.env
        self._mj.mj_setState(env.model, env.data, self._phys[i], self._spec)
        env._prev_obs = self._prev[i].copy()
        env._target_pos = self.goal[i].copy()
        env.obj_init_pos = self.obj0[i].copy()
        if forward:
            self._mj.mj_forward(env.model, env.data)

    def _observe_one(self, i: int) -> np.ndarray:
        """MetaWorld's 39-d observation of the loaded episode (SawyerXYZEnv._get_obs, without
        its per-call scipy rotation: the quaternion comes from mju_mat2Quat in scipy's sign
        convention, largest component positive; a test pins equality with MetaWorld's step)."""
        d, mj = self.env.data, self._mj
        hand = d.xpos[self._hand]
        grip = np.clip(np.linalg.norm(d.xpos[self._rclaw] - d.xpos[self._lclaw]) / 0.1, 0.0, 1.0)
        g = d.geom(self._puck)
        wxyz = np.zeros(4)
        mj.mju_mat2Quat(wxyz, g.xmat)
        quat = np.array([wxyz[1], wxyz[2], wxyz[3], wxyz[0]])
        if quat[np.argmax(np.abs(quat))] < 0:
            quat = -quat
        curr = np.concatenate([hand, [grip], g.xpos, quat, np.zeros(7)])
        obs = np.concatenate([curr, self._prev[i], self.goal[i]])
        self._prev[i] = curr
        return np.clip(obs, self._obs_lo, self._obs_hi)

    def reset(self) -> None:
        env, b = self.env, len(self.scenes)
        size = self._mj.mj_stateSize(env.model, self._spec)
        self._phys = np.zeros((b, size))
        self._prev: list[np.ndarray] = [np.zeros(18)] * b
        self.obs = np.zeros((b, 39))
        self.goal, self.obj0 = np.zeros((b, 3)), np.zeros((b, 3))
        for i, s in enumerate(self.scenes.reset_seed):
            env.seed(int(s))
            self.obs[i] = env.reset()[0]
            self.goal[i], self.obj0[i] = env._target_pos, env.obj_init_pos
            self._prev[i] = env._prev_obs.copy()
            self._save(i)
        self.mocap = np.tile(env.data.mocap_pos[0], (b, 1))
        for i in range(b):  # the mocap of each episode (identical after MetaWorld's hand reset)
            self._load(i)
            self.mocap[i] = env.data.mocap_pos[0]
        self.last_target = np.concatenate([self.mocap, np.zeros((b, 1))], -1)
        self.t = 0
        self.success = np.zeros(b, dtype=bool)
        self.collided = np.zeros(b, dtype=bool)
        self.steps_to_success = np.full(b, -1, dtype=np.int64)
        self.rejected_actions = 0

    @property
    def done(self) -> np.ndarray:
        finished = self.success & self.stop_on_success
        return finished | (self.t >= self.task.max_steps)

    @property
    def all_done(self) -> bool:
        return bool(np.all(self.done))

    @property
    def q(self) -> np.ndarray:
        """The commanded quantities as measured: hand xyz (m) and gripper opening, (b, 4)."""
        return self.obs[:, :4].copy()

    def state(self) -> np.ndarray:
        return self.obs.astype(np.float32)

    def end_effector(self) -> np.ndarray:
        """Hand position (b, 3), m."""
        return self.obs[:, :3].copy()

    def puck(self) -> np.ndarray:
        return self.obs[:, 4:7].copy()

    def observe(self) -> Observation:
        b = len(self.scenes)
        cam = self.task.camera
        image = self.render() if cam.enabled else np.zeros((b, 0, 0, 3), np.uint8)
        return Observation(image, np.full((b, 1), TASK_TOKEN, np.int64), self.state())

    def render(self) -> np.ndarray:
        """(b, H, W, 3) uint8 from the task's camera (MUJOCO_GL=egl headless)."""
        os.environ.setdefault("MUJOCO_GL", "egl")
        cam, env = self.task.camera, self.env
        if self._renderer is None:
            self._renderer = self._mj.Renderer(env.model, cam.height, cam.width)
        out = np.zeros((len(self.scenes), cam.height, cam.width, 3), np.uint8)
        for i in range(len(self.scenes)):
            self._load(i)
            env.model.site("goal").pos = self.goal[i]
            self._renderer.update_scene(env.data, camera=cam.camera)
            out[i] = self._renderer.render()
        return out

    # -- the interface the planar arm's metrics use ---------------------------------------
    def decision_open(self) -> np.ndarray:
        """(b,) True while the route is still to be chosen: the hand is on the puck (pushing)
        and the puck has not passed the wall's line."""
        hand, puck = self.end_effector(), self.puck()
        on = (np.linalg.norm(hand[:, :2] - puck[:, :2], axis=-1) < 0.03) & (hand[:, 2] - puck[:, 2] < 0.06)
        return on & (puck[:, 1] < WALL_Y)

    def route_labels(self, chunk: np.ndarray) -> np.ndarray:
        """(b,) the route each planned chunk (b, h, 4) takes (route_of)."""
        return route_of(chunk, self.end_effector()[:, 0])

    # -- stepping ---------------------------------------------------------------------------
    def to_action(self, target: np.ndarray) -> np.ndarray:
        """Absolute targets (b, 4) -> MetaWorld actions (b, 4) in [-1, 1]."""
        delta = (target[:, :3] - self.mocap) / self.task.arm.action_scale
        return np.clip(np.concatenate([delta, target[:, 3:4]], -1), -1.0, 1.0)

    def to_target(self, action: np.ndarray) -> np.ndarray:
        """MetaWorld actions (b, 4) -> the absolute targets they reach from the current mocap."""
        a = np.clip(action, -1.0, 1.0)
        return np.concatenate([self.mocap + a[:, :3] * self.task.arm.action_scale, a[:, 3:4]], -1)

    def step(self, target: np.ndarray) -> None:
        """Apply absolute targets (b, 4) for one control period (MetaWorld's step without its
        reward: set the mocap, simulate frame_skip physics steps, observe)."""
        if target.shape != (len(self.scenes), 4):
            raise ValueError(f"action shape {target.shape} != (b, 4)")
        finite = np.all(np.isfinite(target), axis=-1)
        self.rejected_actions += int(np.sum(~finite & ~self.done))
        target = np.where(finite[:, None], np.nan_to_num(target), self.last_target)  # NaN never moves it
        action = self.to_action(target)
        env, active, mj = self.env, ~self.done, self._mj
        d = env.data
        lo, hi = env.mocap_low, env.mocap_high
        for i in np.flatnonzero(active):  # SawyerXYZEnv.step: set_xyz_action, do_simulation, mj_forward
            self._load(i, forward=False)
            d.mocap_pos[0] = np.clip(d.mocap_pos[0] + action[i, :3] * env.action_scale, lo, hi)
            d.mocap_quat[0] = (1.0, 0.0, 1.0, 0.0)
            d.ctrl[:] = (action[i, 3], -action[i, 3])
            mj.mj_step(env.model, d, nstep=env.frame_skip)
            mj.mj_forward(env.model, d)
            self.obs[i] = self._observe_one(i)
            self.mocap[i] = d.mocap_pos[0]
            self.collided[i] |= self._touching_wall()
            self._save(i)
        self.last_target = np.where(active[:, None], target, self.last_target)
        self.t += 1
        reached = np.linalg.norm(self.obs[:, 4:7] - self.goal, axis=-1) <= self.task.success_tol
        ok = active & ~self.success & reached
        self.success |= ok
        self.steps_to_success = np.where(ok, self.t, self.steps_to_success)

    def _touching_wall(self) -> bool:
        d = self.env.data
        for k in range(d.ncon):
            g1, g2 = int(d.contact[k].geom1), int(d.contact[k].geom2)
            if (g1 in self._wall and g2 in self._touch) or (g2 in self._wall and g1 in self._touch):
                return True
        return False

    def expert_actions(self, side: np.ndarray, policies: dict[int, Any]) -> np.ndarray:
        """The scripted experts' actions (b, 4) at the current observations."""
        import warnings

        with warnings.catch_warnings():  # the shipped expert's gain of 10 warns that the env clips
            warnings.simplefilter("ignore", UserWarning)
            return np.stack([policies[int(s)].get_action(o) for s, o in zip(side, self.obs, strict=True)])


def _has_body(model: Any, name: str) -> bool:
    try:
        model.body(name)
    except KeyError:
        return False
    return True


def noise_process(white: np.ndarray, corr: float) -> np.ndarray:
    """Stationary AR(1) noise of unit variance from white noise (b, t, a) along t."""
    out = np.empty_like(white)
    out[:, 0] = white[:, 0]
    scale = np.sqrt(1 - corr**2)
    for k in range(1, white.shape[1]):
        out[:, k] = corr * out[:, k - 1] + scale * white[:, k]
    return out


def generate(task: PushWallConfig, seed: int, episodes: int, batch: int = 100, progress=None,
             settle: int = 25) -> dict[str, Any]:  # fmt: skip
    """Expert demonstrations (the fields of legato.demos.Demos): each episode's expert (its
    route) runs with DART noise on the executed action while the clean action at the visited
    state is the label; recorded until `settle` steps after success."""
    pols = experts()
    parts = []
    for first in range(0, episodes, batch):
        count = min(batch, episodes - first)
        spec = sample_episodes(task, seed, count, first)
        env = PushWallEnv(task, spec.scenes, stop_on_success=False)
        noise = noise_process(spec.noise, task.expert.noise_corr) * task.expert.noise_std
        states, labels, alive = [], [], []
        for k in range(task.max_steps):
            settled = env.success & (k >= env.steps_to_success + settle)
            alive.append(~env.done & ~settled)
            if not alive[-1].any():
                alive.pop()
                break
            clean = env.expert_actions(spec.side, pols)
            states.append(env.state())
            labels.append(env.to_target(clean))
            env.step(env.to_target(clean + noise[:, k]))
        parts.append((spec, env.success.copy(), np.stack(alive, 1), np.stack(states, 1), np.stack(labels, 1)))
        if progress is not None:
            progress(first + count)
    lengths = np.concatenate([p[2].sum(1) for p in parts])
    state = np.concatenate([p[3][i, : p[2][i].sum()] for p in parts for i in range(len(p[2]))])
    action = np.concatenate([p[4][i, : p[2][i].sum()] for p in parts for i in range(len(p[2]))])
    return {
        "scenes": PushWallScenes.concat([p[0].scenes for p in parts]),
        "side": np.concatenate([p[0].side for p in parts]).astype(np.int8),
        "template": np.zeros(episodes, dtype=np.int64),
        "success": np.concatenate([p[1] for p in parts]),
        "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "state": state.astype(np.float32),
        "action": action.astype(np.float32),
    }

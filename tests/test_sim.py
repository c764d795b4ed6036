"""The simulated arm task: kinematics, motor model, scenes, camera, language, expert."""

import dataclasses

import numpy as np
import pytest

from sim.arm import ArmConfig, end_effector, jacobian, joint_positions, motor_step
from sim.camera import Camera, pixel_centres
from sim.env import ReachEnv
from sim.episodes import run_expert, sample_episodes
from sim.language import VOCAB, detokenize, instruction, tokenize
from sim.scene import COLORS, Scenes, collides, side_of_path
from sim.task import TaskConfig

TASK = TaskConfig()


def test_forward_kinematics_of_a_straight_arm():
    arm = ArmConfig()
    pts = joint_positions(arm, np.zeros((1, 3)))
    np.testing.assert_allclose(pts[0, :, 0], np.cumsum([0, *arm.link_lengths]))
    np.testing.assert_allclose(end_effector(arm, np.array([[np.pi / 2, 0, 0]])), [[0, arm.reach]], atol=1e-12)


def test_jacobian_matches_finite_differences():
    arm, rng = ArmConfig(), np.random.default_rng(0)
    q = rng.uniform(-1, 1, (5, 3))
    e = 1e-6
    num = np.stack(
        [
            (end_effector(arm, q + e * np.eye(3)[k]) - end_effector(arm, q - e * np.eye(3)[k])) / (2 * e)
            for k in range(3)
        ],
        -1,
    )
    np.testing.assert_allclose(jacobian(arm, q), num, atol=1e-8)


def test_motor_model_respects_velocity_and_joint_limits():
    arm = ArmConfig()
    q, qd = np.zeros((1, 3)), np.zeros((1, 3))
    target = np.array([[10.0, -10.0, 0.5]])  # far outside the limits
    for _ in range(200):
        q, qd = motor_step(arm, q, qd, target)
        assert np.all(np.abs(qd) <= arm.vel_max + 1e-12)
        assert np.all(q >= np.array(arm.q_min) - 1e-12) and np.all(q <= np.array(arm.q_max) + 1e-12)
    np.testing.assert_allclose(q[0], [arm.q_max[0], arm.q_min[1], 0.5], atol=1e-3)


def test_arm_config_rejects_bad_rates_and_too_few_joints():
    with pytest.raises(ValueError, match="multiple"):
        ArmConfig(physics_hz=210.0)
    with pytest.raises(ValueError, match="3 joints"):
        ArmConfig(link_lengths=(0.5, 0.5), q_min=(0, 0), q_max=(1, 1))


def test_expert_splits_sides_about_evenly_and_succeeds_on_200_episodes():
    spec = sample_episodes(TASK, seed=7, count=200)
    left = float(np.mean(spec.side > 0))
    assert 0.40 <= left <= 0.60, left
    env = run_expert(TASK, spec.scenes, spec.side, spec.noise)
    assert env.success.mean() >= 0.95, env.success.mean()


def test_expert_paths_go_around_the_side_it_chose():
    spec = sample_episodes(TASK, seed=3, count=40)
    env = ReachEnv(TASK, spec.scenes)
    from sim.expert import expert_actions

    acts = expert_actions(TASK.arm, spec.scenes, spec.side, TASK.max_steps, TASK.expert, None)
    path = []
    for k in range(120):
        env.step(acts[:, k])
        path.append(env.end_effector())
    start = end_effector(TASK.arm, spec.scenes.q0)
    sides = side_of_path(start, spec.scenes.goal, spec.scenes.obstacle, np.stack(path, 1))
    np.testing.assert_array_equal(sides, spec.side)


def test_episodes_depend_only_on_seed_and_index():
    a = sample_episodes(TASK, seed=5, count=6)
    b = sample_episodes(TASK, seed=5, count=3, first=3)
    np.testing.assert_array_equal(a.scenes.targets[3:], b.scenes.targets)
    np.testing.assert_array_equal(a.side[3:], b.side)
    c = sample_episodes(TASK, seed=6, count=3, first=3)
    assert not np.allclose(c.scenes.targets, b.scenes.targets)


def test_collision_is_detected_when_a_link_crosses_the_obstacle():
    q = np.array([[np.pi / 2, 0.0, 0.0]])  # arm straight up the y axis
    sc = Scenes(np.zeros((1, 3, 2)), np.array([[0.0, 0.7]]), np.array([0.05]), np.array([0]), q)
    assert collides(TASK.arm, TASK.scene, sc, q)[0]
    sc_far = dataclasses.replace(sc, obstacle=np.array([[0.5, 0.7]]))
    assert not collides(TASK.arm, TASK.scene, sc_far, q)[0]


def test_camera_draws_each_target_in_its_colour_at_its_position():
    spec = sample_episodes(TASK, seed=11, count=2)
    cam = Camera(TASK.arm, TASK.scene, TASK.camera)
    img = cam.render(spec.scenes, spec.scenes.q0)
    assert img.shape == (2, TASK.camera.height, TASK.camera.width, 3) and img.dtype == np.uint8
    pix = pixel_centres(TASK.camera)
    for k, colour in enumerate(COLORS):
        centre = spec.scenes.targets[0, k]
        px = np.argmin(np.linalg.norm(pix - centre, axis=-1))
        rgb = img[0].reshape(-1, 3)[px].astype(int)
        assert np.argmax(rgb) == k, (colour, rgb)  # red, green, blue channel dominates


def test_tokenizer_round_trips_instructions_and_pads():
    ids = tokenize(instruction("green", 0))
    assert detokenize(ids) == "reach the green target"
    assert ids[-1] == 0 and len(ids) == 6
    assert tokenize("reach the purple target")[2] == VOCAB.index("<unk>")
    with pytest.raises(ValueError):
        tokenize("one two three four five six seven")
    with pytest.raises(ValueError):
        instruction("purple")


def test_env_never_sends_nan_and_clamps_targets():
    spec = sample_episodes(TASK, seed=1, count=2)
    env = ReachEnv(TASK, spec.scenes)
    q_before = env.q.copy()
    env.step(np.full((2, 3), np.nan))
    assert env.rejected_actions == 2
    assert np.all(np.isfinite(env.q))
    np.testing.assert_allclose(env.q, q_before, atol=1e-9)  # held where it was
    env.step(np.full((2, 3), 100.0))
    assert np.all(env.last_target <= np.array(TASK.arm.q_max))
    with pytest.raises(ValueError, match="action shape"):
        env.step(np.zeros((3, 3)))


def test_task_config_round_trips_through_json_dict():
    assert TaskConfig.from_dict(TASK.to_dict()) == TASK


def test_a_task_written_before_tasks_had_names_is_the_same_planar_task():
    from sim.tasks import canonical_task

    old = {k: v for k, v in TASK.to_dict().items() if k != "name"}  # the committed planar checkpoints
    assert canonical_task(old) == canonical_task(TASK.to_dict())
    other = TASK.to_dict() | {"max_steps": TASK.max_steps + 1}
    assert canonical_task(other) != canonical_task(TASK.to_dict())

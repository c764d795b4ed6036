"""MetaWorld push-wall behind the planar arm's interface (needs the metaworld extra)."""

import numpy as np
import pytest

pytest.importorskip("metaworld")

from sim.pushwall import (  # noqa: E402
    LEFT,
    RIGHT,
    PushWallConfig,
    PushWallEnv,
    _metaworld,
    experts,
    route_of,
    sample_episodes,
)

TASK = PushWallConfig()


def test_lockstep_env_equals_metaworlds_own_step():
    """The state-swapping batch env and MetaWorld's env.step give the same observations."""
    spec = sample_episodes(TASK, 1000, 2)
    env = PushWallEnv(TASK, spec.scenes, stop_on_success=False)
    _, cls = _metaworld()
    refs = []
    for seed in spec.scenes.reset_seed:
        e = cls()
        e._freeze_rand_vec, e.seeded_rand_vec, e.max_path_length = False, True, 10**9
        e.seed(int(seed))
        refs.append((e, e.reset()[0]))
    assert np.array_equal(env.obs, np.stack([o for _, o in refs]))
    pols, rng = experts(), np.random.default_rng(0)
    for _ in range(40):
        a = env.expert_actions(spec.side, pols) + 0.3 * rng.standard_normal((2, 4))
        env.step(env.to_target(a))
        want = np.stack([e.step(np.clip(a[i], -1, 1))[0] for i, (e, _) in enumerate(refs)])
        np.testing.assert_allclose(env.obs, want, atol=1e-12)


def test_both_experts_succeed_each_round_its_own_end_of_the_wall():
    spec = sample_episodes(TASK, 1000, 6)
    side = np.array([LEFT, LEFT, LEFT, RIGHT, RIGHT, RIGHT], dtype=float)
    env = PushWallEnv(TASK, spec.scenes)
    pols, xs = experts(), []
    while not env.all_done:
        env.step(env.to_target(env.expert_actions(side, pols)))
        xs.append(env.end_effector()[:, 0])
    xs = np.stack(xs, 1)
    assert env.success.all() and not env.collided.any()
    assert (xs[:3].min(1) < -0.1).all() and (xs[:3].max(1) < 0.1).all()
    assert (xs[3:].max(1) > 0.3).all()
    # the right detour is the longer way round (the wall's centre is at x = 0.1)
    assert env.steps_to_success[3:].mean() > env.steps_to_success[:3].mean() + 20


def test_episodes_depend_only_on_seed_and_index_and_draw_both_routes():
    a = sample_episodes(TASK, 1000, 6)
    b = sample_episodes(TASK, 1000, 3, first=3)
    assert np.array_equal(a.scenes.reset_seed[3:], b.scenes.reset_seed)
    assert np.array_equal(a.side[3:], b.side) and np.array_equal(a.noise[3:], b.noise)
    many = sample_episodes(TASK, 1000, 400).side
    assert 0.4 < np.mean(many == LEFT) < 0.6
    assert not np.array_equal(sample_episodes(TASK, 1001, 6).scenes.reset_seed, a.scenes.reset_seed)


def test_route_of_reads_where_the_plan_crosses_the_wall_or_its_lateral_motion():
    y = np.linspace(0.6, 0.8, 10)
    cross_left = np.stack([np.full(10, -0.1), y], -1)
    cross_right = np.stack([np.full(10, 0.3), y], -1)
    short = np.linspace(0.6, 0.7, 10)
    moving_left = np.stack([np.linspace(0.0, -0.05, 10), short], -1)
    moving_right = np.stack([np.linspace(0.0, 0.05, 10), short], -1)
    still = np.stack([np.linspace(0.0, 0.01, 10), short], -1)
    # Round the right end already, heading back left to the goal: still the right route (read
    # by lateral motion alone it looked like a switch to the left in most episodes).
    past_right = np.stack([np.linspace(0.33, -0.02, 10), np.linspace(0.78, 0.98, 10)], -1)
    plans = np.stack([cross_left, cross_right, moving_left, moving_right, still, past_right])
    x_hand = np.r_[np.zeros(5), 0.31]
    assert route_of(plans, x_hand).tolist() == [LEFT, RIGHT, LEFT, RIGHT, 0, RIGHT]


def test_nan_targets_hold_and_are_counted():
    spec = sample_episodes(TASK, 1000, 2)
    env = PushWallEnv(TASK, spec.scenes)
    before = env.mocap.copy()
    env.step(np.full((2, 4), np.nan))
    assert env.rejected_actions == 2
    np.testing.assert_allclose(env.mocap, before, atol=1e-12)


def test_missing_metaworld_is_one_line_naming_the_extra(monkeypatch):
    import builtins

    from sim.errors import MissingExtra

    real = builtins.__import__

    def no_metaworld(name, *args, **kwargs):
        if name.startswith("metaworld"):
            raise ImportError("no", name="metaworld")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_metaworld)
    with pytest.raises(MissingExtra, match=r"pip install -e '\.\[metaworld\]'"):
        _metaworld()


def test_the_wait_for_the_first_chunk_holds_the_hand_and_leaves_the_gripper_open():
    """Before the first chunk arrives (d steps) the rollout sends the env's own hold command:
    the mocap where it is and zero gripper effort. (It sent q, whose fourth entry is the
    measured opening, 1.0 = open: as a command that is effort +1, which closed the gripper.)"""
    from types import SimpleNamespace

    from edge.policy import ChunkRequest
    from legato.rollout import rollout

    h, d = 8, 4
    spec = sample_episodes(TASK, 1000, 2)

    class StayOpen:  # plans the current hand position with an open gripper
        spec = SimpleNamespace(action_dim=4, horizon=h)
        adapter = SimpleNamespace(action_pad=4)

        def chunk(self, method, obs, prev, req, eps):
            now = np.concatenate([obs.state[:, :3], -np.ones((len(obs.state), 1))], -1)
            return np.repeat(now[:, None], h, 1).astype(np.float32)

    mocap0 = PushWallEnv(TASK, spec.scenes).mocap
    res = rollout(StayOpen(), "naive", TASK, spec.scenes, spec.template, ChunkRequest(d=d, s=4, r=0), seed=0,
                  max_steps=d + 4)  # fmt: skip
    np.testing.assert_allclose(res.commanded[:, :d, :3], np.repeat(mocap0[:, None], d, 1), atol=1e-6)
    assert np.all(res.commanded[:, :d, 3] == 0.0)
    assert np.all(res.joints[:, d, 3] > 0.9)  # still open when the first chunk takes over

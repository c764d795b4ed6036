"""edge.normalize: state-relative, per-index action normalisation."""

import numpy as np
import pytest

from edge.normalize import Normalizer


def _fit(seed=0):
    rng = np.random.default_rng(seed)
    states = rng.normal(size=(500, 6))
    chunks = states[:, None, :3] + np.linspace(0, 1, 8)[None, :, None] * rng.normal(1, 0.3, size=(500, 1, 3))
    return Normalizer.fit(states, chunks), states, chunks


def test_chunks_round_trip_through_normalisation():
    norm, states, chunks = _fit()
    x = norm.action(chunks[:10], states[:10])
    np.testing.assert_allclose(norm.unaction(x, states[:10]), chunks[:10], atol=1e-5)


def test_actions_are_relative_to_joint_positions_and_normalised_per_index():
    norm, states, chunks = _fit()
    x = norm.action(chunks, states)
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-4)
    # index 0 sits exactly on q: no spread, so its std is the floor, not the joint's range
    assert norm.action_std.shape == (8, 3)
    np.testing.assert_allclose(norm.action_std[0], 1e-2)
    np.testing.assert_allclose(x[:, 1:].std(0), 1, atol=1e-3)


def test_statistics_round_trip_and_bad_shapes_are_refused():
    norm, *_ = _fit()
    again = Normalizer.from_dict(norm.to_dict())
    np.testing.assert_array_equal(again.action_std, norm.action_std)
    d = norm.to_dict()
    d["action_mean"] = d["action_mean"][0]
    with pytest.raises(ValueError, match=r"\(h, a\)"):
        Normalizer.from_dict(d)


def test_a_mismatched_action_std_is_named_with_its_own_shape():
    norm, *_ = _fit()
    d = norm.to_dict()
    d["action_std"] = d["action_std"][:5]
    with pytest.raises(ValueError, match=r"action_mean \(8, 3\) and action_std \(5, 3\)"):
        Normalizer.from_dict(d)


def test_mean_std_kind_with_epsilons_normalises_like_lerobot():
    """LeRobot's MEAN_STD: (x - mean) / (std + eps) on the way in, x * std + mean on the way out,
    with per-joint action statistics; no state-relative offset."""
    rng = np.random.default_rng(1)
    nm = Normalizer.from_dict({"kind": "mean-std", "state_eps": 1e-8, "action_eps": 1e-8,
                               "state_mean": [0.5, -1.0], "state_std": [2.0, 0.0],
                               "action_mean": [1.0, 2.0, 3.0], "action_std": [0.5, 1.0, 2.0]})  # fmt: skip
    state = rng.normal(size=(4, 2))
    np.testing.assert_allclose(
        nm.state(state), (state - [0.5, -1.0]) / (np.array([2.0, 0.0]) + 1e-8), rtol=1e-6
    )
    chunk = rng.normal(size=(4, 5, 3))
    x = nm.action(chunk, state)
    np.testing.assert_allclose(x, (chunk - [1.0, 2.0, 3.0]) / (np.array([0.5, 1.0, 2.0]) + 1e-8), rtol=1e-5)
    np.testing.assert_allclose(nm.unaction(x, state), x * [0.5, 1.0, 2.0] + [1.0, 2.0, 3.0], rtol=1e-6)
    assert Normalizer.from_dict(nm.to_dict()).kind == "mean-std"
    with pytest.raises(ValueError, match="kind 'min-max' is not one of"):
        Normalizer.from_dict({**nm.to_dict(), "kind": "min-max"})

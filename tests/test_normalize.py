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

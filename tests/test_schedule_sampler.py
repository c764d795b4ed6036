"""The inference contract in edge/: omega schedule, blend, Euler step, samplers, delay rule."""

import numpy as np
import pytest

from edge.sampler import blend, hard_prefix_sample, legato_sample, pad_reference
from edge.schedule import delay_from_latencies, omega_batch, omega_schedule


def test_omega_is_one_on_the_prefix_a_linear_ramp_then_zero():
    om = omega_schedule(d=3, r=4, horizon=12)
    assert om.dtype == np.float32
    np.testing.assert_allclose(om[:3], 1.0)
    np.testing.assert_allclose(om[3:7], [4 / 5, 3 / 5, 2 / 5, 1 / 5])  # (d + r - i) / (r + 1)
    np.testing.assert_allclose(om[7:], 0.0)


def test_omega_without_ramp_is_a_hard_prefix_and_zero_delay_is_free():
    np.testing.assert_array_equal(omega_schedule(2, 0, 6), [1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(omega_schedule(0, 0, 6), np.zeros(6))


def test_omega_batch_matches_the_single_schedule():
    d, r = np.array([0, 2, 4]), np.array([3, 0, 5])
    batch = omega_batch(d, r, 16)
    for k in range(3):
        np.testing.assert_array_equal(batch[k], omega_schedule(int(d[k]), int(r[k]), 16))


@pytest.mark.parametrize("bad", [dict(d=-1, r=0), dict(d=17, r=0), dict(d=2, r=-1)])
def test_omega_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        omega_schedule(horizon=16, **bad)


def test_omega_rejects_an_unknown_shape():
    with pytest.raises(ValueError, match="cosine"):
        omega_schedule(1, 2, 8, shape="cosine")


def _ideal_field(a, eps, num_steps):
    """Legato's reshaped target as a velocity function: u = (1 - (omega / dt)(1 - t)) (A - eps)."""
    seen = []

    def v(y, t, omega):
        seen.append(y.copy())
        kappa = omega * num_steps
        return (1 - kappa * (1 - t))[..., None] * (a - eps)

    return v, seen


@pytest.mark.parametrize("seed", range(5))
def test_ideal_field_drives_the_sampler_exactly_onto_the_data_for_random_omega(seed):
    """legato.md's check: with v = target and A_ref = A, the recursion ends at A (before and
    after the final blend) and every blended input Y_k equals the training input at t_k."""
    rng = np.random.default_rng(seed)
    b, h, a, n = 4, 16, 3, 5
    A = rng.standard_normal((b, h, a))
    eps = rng.standard_normal((b, h, a))
    omega = rng.random((b, h))  # arbitrary omega in [0, 1), not only ramps
    omega[:, :2] = 1.0
    v, seen = _ideal_field(A, eps, n)
    x_before = legato_sample(v, eps, A, omega, n, final_blend=False)
    np.testing.assert_allclose(x_before, A, atol=1e-12, rtol=0)
    np.testing.assert_allclose(
        legato_sample(_ideal_field(A, eps, n)[0], eps, A, omega, n), A, atol=1e-12, rtol=0
    )
    for k, y in enumerate(seen):
        t = k / n
        x_t = (1 - t) * eps + t * A
        training_input = (1 - omega[..., None]) * x_t + omega[..., None] * A
        np.testing.assert_allclose(y, training_input, atol=1e-12, rtol=0)


def test_the_plus_sign_variant_of_the_target_overshoots():
    """Guard against the sign reported in a public port: with +, the sampler misses A."""
    rng = np.random.default_rng(0)
    A, eps = rng.standard_normal((1, 16, 2)), rng.standard_normal((1, 16, 2))
    omega = omega_schedule(2, 6, 16)[None].astype(np.float64)
    wrong = lambda y, t, om: (1 + om * 5 * (1 - t))[..., None] * (A - eps)  # noqa: E731
    assert np.abs(legato_sample(wrong, eps, A, omega, 5, final_blend=False) - A).max() > 0.1


def test_zero_omega_is_plain_euler_sampling():
    rng = np.random.default_rng(1)
    eps = rng.standard_normal((2, 8, 3)).astype(np.float32)
    v = lambda y, t, om: -y + t[..., None]  # noqa: E731
    x = eps.copy()
    for k in range(4):
        x = x + 0.25 * v(x, np.full((2, 8), k / 4), None)
    out = legato_sample(v, eps, np.full_like(eps, 99.0), np.zeros((2, 8), np.float32), 4)
    np.testing.assert_allclose(out, x, rtol=1e-6)


def test_blend_is_elementwise_per_token():
    x, ref = np.zeros((1, 3, 2)), np.ones((1, 3, 2))
    np.testing.assert_allclose(blend(x, ref, np.array([[1.0, 0.25, 0.0]])), [[[1, 1], [0.25, 0.25], [0, 0]]])


def test_pad_reference_repeats_the_last_action():
    tail = np.arange(6, dtype=np.float32).reshape(1, 3, 2)
    out = pad_reference(tail, 5)
    np.testing.assert_array_equal(out[0, :3], tail[0])
    np.testing.assert_array_equal(out[0, 3:], [[4, 5], [4, 5]])
    with pytest.raises(ValueError):
        pad_reference(tail, 2)


def test_sampler_rejects_mismatched_shapes():
    eps = np.zeros((2, 8, 3), np.float32)
    with pytest.raises(ValueError, match="omega shape"):
        legato_sample(lambda y, t, o: y, eps, eps, np.zeros((2, 7), np.float32), 5)
    with pytest.raises(ValueError, match="reference"):
        legato_sample(lambda y, t, o: y, eps, eps[:, :4], np.zeros((2, 8), np.float32), 5)


def test_hard_prefix_keeps_the_reference_and_marks_prefix_time_as_one():
    rng = np.random.default_rng(2)
    eps = rng.standard_normal((1, 8, 2)).astype(np.float32)
    ref = rng.standard_normal((1, 8, 2)).astype(np.float32)
    times = []

    def v(y, t, mask):
        times.append(t.copy())
        np.testing.assert_array_equal(mask[0], [1, 1, 1, 0, 0, 0, 0, 0])
        np.testing.assert_array_equal(y[:, :3], ref[:, :3])
        return np.ones_like(y)

    out = hard_prefix_sample(v, eps, ref, d=3, num_steps=4)
    np.testing.assert_array_equal(out[:, :3], ref[:, :3])
    np.testing.assert_allclose(out[:, 3:], eps[:, 3:] + 1.0, rtol=1e-6)
    assert all(np.all(t[:, :3] == 1.0) for t in times)
    np.testing.assert_allclose([t[0, 5] for t in times], [0, 0.25, 0.5, 0.75])


def test_delay_rule_is_ceil_of_max_latency_over_period_clipped():
    assert delay_from_latencies(np.array([0.011, 0.035, 0.02]), 0.02, d_max=4) == (2, False)
    assert delay_from_latencies(np.array([0.04]), 0.02, d_max=4) == (2, False)  # exact multiple
    assert delay_from_latencies(np.array([0.5]), 0.02, d_max=4) == (4, True)
    assert delay_from_latencies(np.array([]), 0.02, d_max=4) == (0, False)

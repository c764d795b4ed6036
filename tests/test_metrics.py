"""legato.metrics: every formula pinned by a hand-computed value."""

import math

import numpy as np
import pytest

from legato import metrics as M

DT = 0.02  # 50 Hz control


def nan_tail(x: np.ndarray, rows: int = 7) -> np.ndarray:
    """x with `rows` NaN rows appended, as in a padded episode."""
    x = np.asarray(x, dtype=np.float64)
    return np.concatenate([x, np.full((rows, *x.shape[1:]), np.nan)])


# --- wilson_interval ---------------------------------------------------------------------------


def test_wilson_interval_known_values():
    lo, hi = M.wilson_interval(5, 10)
    # centre 0.5; half = 1.96 / 1.38416 * sqrt(0.025 + 3.8416 / 400) = 0.263410
    assert lo == pytest.approx(0.236590, abs=1e-6)
    assert hi == pytest.approx(0.763410, abs=1e-6)
    # 0 of n: lower bound 0, upper z^2 / (n + z^2).
    lo, hi = M.wilson_interval(0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(1.96**2 / (10 + 1.96**2), rel=1e-12)
    lo, hi = M.wilson_interval(10, 10)
    assert (lo, hi) == (pytest.approx(10 / (10 + 1.96**2), rel=1e-12), 1.0)


def test_wilson_interval_empty_and_invalid():
    assert all(math.isnan(v) for v in M.wilson_interval(0, 0))
    with pytest.raises(ValueError, match="successes=11"):
        M.wilson_interval(11, 10)


# --- speed_profile and sparc -------------------------------------------------------------------


def test_speed_profile_is_norm_of_first_difference():
    x = np.array([[0.0, 0.0], [0.03, 0.04], [0.03, 0.04]])
    np.testing.assert_allclose(M.speed_profile(x, DT), [0.05 / DT, 0.0])
    np.testing.assert_allclose(M.speed_profile(nan_tail(x), DT), [0.05 / DT, 0.0])


def test_sparc_hand_computed_spectrum():
    # Normalised spectrum: 1 at DC, 0.25 at 4 Hz, 0 at 1..3 Hz; the band is [0, 4] Hz in 1 Hz bins.
    t = np.arange(64) / 64
    v = 1 + 0.5 * np.sin(2 * np.pi * 4 * t)
    expected = -(math.sqrt(1 / 16 + 1) + 2 / 4 + math.sqrt(1 / 16 + 1 / 16))
    assert expected == pytest.approx(-1.8844, abs=1e-4)
    assert M.sparc(v, fs=64, pad_level=0, fc=32) == pytest.approx(expected, abs=1e-9)
    assert M.nsparc(v, fs=64, pad_level=0, fc=32) == pytest.approx(-expected, abs=1e-9)


def test_sparc_cutoff_is_capped_at_nyquist():
    t = np.arange(64) / 64
    v = 1 + 0.5 * np.sin(2 * np.pi * 4 * t)
    assert M.sparc(v, fs=64, pad_level=0, fc=1000) == M.sparc(v, fs=64, pad_level=0, fc=32)


def test_sparc_single_bin_band_is_zero_and_no_motion_is_nan():
    # A constant speed without zero-padding has all its power at DC: the band is one bin.
    assert M.sparc(np.ones(64), fs=50, pad_level=0) == 0.0
    assert math.isnan(M.sparc(np.zeros(50), fs=50))


def test_sparc_prefers_a_smooth_bell_over_an_oscillating_one():
    t = np.arange(100) * DT  # a 2 s reach
    bell = np.exp(-(((t - 1.0) / 0.3) ** 2))
    wobbly = bell * (1 + 0.3 * np.sin(2 * np.pi * 5 * t))
    smooth, rough = M.sparc(bell, fs=1 / DT), M.sparc(wobbly, fs=1 / DT)
    assert rough < smooth < 0
    assert M.nsparc(bell, fs=1 / DT) < M.nsparc(wobbly, fs=1 / DT)


def test_sparc_of_padded_actions_matches_the_valid_rows():
    t = np.arange(80) * DT
    actions = np.stack([np.sin(t), 0.5 * np.cos(2 * t), t**2], axis=1)  # (t, a) rad
    valid = M.nsparc(M.speed_profile(actions, DT), fs=1 / DT)
    padded = M.nsparc(M.speed_profile(nan_tail(actions), DT), fs=1 / DT)
    assert math.isfinite(valid)
    assert padded == valid


def test_interior_nan_is_rejected():
    x = np.zeros((10, 3))
    x[4] = np.nan
    with pytest.raises(ValueError, match="row 4"):
        M.speed_profile(x, DT)


# --- jerk --------------------------------------------------------------------------------------


def test_log_dimensionless_jerk_of_a_cubic_is_ln4():
    # x = t^3 on [0, 1]: v_peak = 3, jerk = 6, integral of jerk^2 = 36, 1^3 / 9 * 36 = 4.
    dt = 1e-3
    t = np.arange(1001) * dt
    assert M.log_dimensionless_jerk(t**3, dt) == pytest.approx(math.log(4), abs=1e-2)


def test_log_dimensionless_jerk_ranks_jerky_above_smooth():
    t = np.linspace(0, 1, 101)
    dt = t[1] - t[0]
    smooth = 10 * t**3 - 15 * t**4 + 6 * t**5  # minimum-jerk reach
    jerky = smooth + 0.01 * np.sin(2 * np.pi * 10 * t)
    assert M.log_dimensionless_jerk(jerky, dt) > M.log_dimensionless_jerk(smooth, dt)
    assert math.isnan(M.log_dimensionless_jerk(np.zeros(3), dt))


def test_mean_squared_jerk_of_cubic_and_line():
    t = np.arange(50) * DT
    cubic = np.stack([t**3, np.zeros_like(t)], axis=1)
    assert M.mean_squared_jerk(cubic, DT) == pytest.approx(36.0, rel=1e-6)
    line = np.stack([0.3 * t, -2 * t], axis=1)
    assert M.mean_squared_jerk(line, DT) == pytest.approx(0.0, abs=1e-6)
    # Two joints each with jerk 6: ||j||^2 = 72.
    assert M.mean_squared_jerk(np.stack([t**3, t**3], axis=1), DT) == pytest.approx(72.0, rel=1e-6)


def test_mean_squared_jerk_ignores_nan_tail():
    t = np.arange(50) * DT
    cubic = np.stack([t**3, np.zeros_like(t)], axis=1)
    assert M.mean_squared_jerk(nan_tail(cubic), DT) == M.mean_squared_jerk(cubic, DT)


# --- boundary_discontinuity --------------------------------------------------------------------


def test_boundary_discontinuity_ramp_has_ratio_one():
    a = np.repeat(0.01 * np.arange(48)[:, None], 3, axis=1) / math.sqrt(3)  # 0.01 per step in L2
    jump, ratio = M.boundary_discontinuity(a, np.array([16, 32]))
    assert jump == pytest.approx(0.01, rel=1e-9)
    assert ratio == pytest.approx(1.0, rel=1e-9)


def test_boundary_discontinuity_step_on_a_ramp():
    # Joint 0 ramps 0.01/step; joint 1 steps by 0.5 at t = 10. Jump = ||(0.01, 0.5)||.
    t = np.arange(30)
    a = np.stack([0.01 * t, np.where(t >= 10, 0.5, 0.0)], axis=1)
    jump, ratio = M.boundary_discontinuity(a, np.array([10]))
    assert jump == pytest.approx(math.hypot(0.01, 0.5), rel=1e-12)
    assert ratio == pytest.approx(math.hypot(0.01, 0.5) / 0.01, rel=1e-9)


def test_boundary_discontinuity_constant_with_step():
    a = np.where(np.arange(20)[:, None] >= 10, 0.3, 0.0) * np.ones((1, 3))
    jump, ratio = M.boundary_discontinuity(a, np.array([10]))
    assert jump == pytest.approx(0.3 * math.sqrt(3), rel=1e-12)
    assert ratio == math.inf
    # No jump and no motion: the ratio is undefined.
    assert math.isnan(M.boundary_discontinuity(np.zeros((20, 3)), np.array([10]))[1])


def test_boundary_discontinuity_ignores_nan_tail_and_out_of_range_boundaries():
    t = np.arange(30)
    a = np.stack([0.01 * t, np.where(t >= 10, 0.5, 0.0)], axis=1)
    expected = M.boundary_discontinuity(a, np.array([10]))
    # 0 and -3 precede the episode; 30 and 33 fall in the NaN tail; 10 is listed twice.
    got = M.boundary_discontinuity(nan_tail(a), np.array([0, -3, 10, 10, 30, 33]))
    assert got == expected
    assert all(math.isnan(v) for v in M.boundary_discontinuity(a, np.array([], dtype=int)))
    assert all(math.isnan(v) for v in M.boundary_discontinuity(nan_tail(a), np.array([31])))


# --- overlap_inconsistency ---------------------------------------------------------------------


def test_overlap_inconsistency_hand_computed():
    # Old covers steps 0..15, new covers 5..20 and took over at 8: overlap is steps 8..15.
    old = np.zeros((16, 3))
    new = np.tile([0.1, 0.2, 0.2], (16, 1))
    new[:3] = 9.0  # rows for steps 5..7, before the takeover: must not count
    expected = math.sqrt((0.01 + 0.04 + 0.04) / 3)
    assert M.overlap_inconsistency(old, 0, new, 5, 8) == pytest.approx(expected, rel=1e-12)


def test_overlap_inconsistency_counts_only_overlapping_rows():
    # Overlap steps 12..15 (4 rows): differences 0, 0, 0, 2 on one joint -> RMSE sqrt(4 / 4).
    old = np.zeros((16, 1))
    new = np.zeros((16, 1))
    new[3] = 2.0  # step 12 + 3 = 15
    assert M.overlap_inconsistency(old, 0, new, 12, 12) == pytest.approx(1.0, rel=1e-12)


def test_overlap_inconsistency_identical_continuation_and_empty():
    def plan(origin: int) -> np.ndarray:
        s = origin + np.arange(16)
        return np.stack([np.sin(0.1 * s), 0.02 * s], axis=1)

    assert M.overlap_inconsistency(plan(0), 0, plan(6), 6, 8) == 0.0
    # The new chunk takes over after the old one ran out: nothing overlaps.
    assert math.isnan(M.overlap_inconsistency(plan(0), 0, plan(16), 16, 16))


# --- mode_switches -----------------------------------------------------------------------------


def test_mode_switches():
    assert M.mode_switches(np.array([1, 1, -1, 0, -1, 1])) == 2
    assert M.mode_switches(np.array([0, 0])) == 0
    assert M.mode_switches(np.array([])) == 0
    assert M.mode_switches(np.array([-1, 0, 0, 1, 0, -1])) == 2
    with pytest.raises(ValueError, match="labels"):
        M.mode_switches(np.array([1, 2]))


# --- stall_fraction ----------------------------------------------------------------------------


def test_stall_fraction_hold_then_move():
    # 21 positions = 20 steps; still for steps 0..4, then 0.01 m per step.
    x = np.concatenate([np.zeros(5), 0.01 * np.arange(16)])
    ee = np.stack([x, np.zeros_like(x)], axis=1)
    assert M.stall_fraction(ee, DT) == pytest.approx(5 / 20)
    assert M.stall_fraction(ee, DT, until=10) == pytest.approx(5 / 10)
    assert M.stall_fraction(nan_tail(ee), DT) == pytest.approx(5 / 20)


def test_stall_fraction_threshold_is_relative_to_episode_max():
    # Speeds 1, 0.05, 0.2 (x 1/dt): only the 0.05 step is below 10% of the max.
    x = np.cumsum([0.0, 1.0, 0.05, 0.2])
    ee = np.stack([x, np.zeros_like(x)], axis=1)
    assert M.stall_fraction(ee, DT) == pytest.approx(1 / 3)
    # Before step 1 only the fast step counts, but the max is still the episode's.
    assert M.stall_fraction(ee, DT, until=1) == 0.0
    assert M.stall_fraction(np.zeros((5, 2)), DT) == 1.0
    assert math.isnan(M.stall_fraction(ee, DT, until=0))


# --- throughput --------------------------------------------------------------------------------


def test_throughput():
    # 3 successes in 1500 steps of 0.02 s = 30 s -> 6 per minute.
    assert M.throughput(3, 1500, DT) == pytest.approx(6.0)
    assert math.isnan(M.throughput(0, 0, DT))

"""legato.paired: paired bootstrap intervals on per-episode differences."""

import numpy as np
import pytest

from legato.episode_metrics import EPISODE_KEYS
from legato.paired import bootstrap_interval, compare, mean_difference, mean_ratio, resample_indices


def test_identical_methods_differ_by_exactly_zero():
    a = np.random.default_rng(0).random(200)
    est, lo, hi = bootstrap_interval(a, a.copy(), mean_difference)
    assert est == lo == hi == 0.0


def test_a_shift_on_every_episode_is_recovered_with_a_tight_interval():
    rng = np.random.default_rng(1)
    b = rng.random(400)
    est, lo, hi = bootstrap_interval(b + 0.1, b, mean_difference)
    assert est == pytest.approx(0.1) and lo == pytest.approx(0.1) and hi == pytest.approx(0.1)


def test_pairing_is_what_makes_the_interval_narrow():
    """The same per-episode difference with a large shared episode effect: the paired interval
    is narrow, while the marginal spread of either method is wide."""
    rng = np.random.default_rng(2)
    episode = rng.normal(0, 1.0, 400)
    a, b = episode + 0.05 + rng.normal(0, 0.01, 400), episode
    _, lo, hi = bootstrap_interval(a, b, mean_difference)
    assert 0.04 < lo < 0.05 < hi < 0.06
    assert np.std(a) > 0.9


def test_ratio_uses_only_episodes_both_methods_completed():
    a = np.array([1.0, 2.0, np.nan, 4.0])
    b = np.array([2.0, 2.0, 3.0, np.nan])
    assert mean_ratio(a, b) == pytest.approx(1.5 / 2.0)
    assert np.isnan(mean_ratio(np.full(3, np.nan), np.ones(3)))


def test_compare_refuses_cells_of_different_episodes():
    k = len(EPISODE_KEYS)
    with pytest.raises(ValueError, match="different episodes"):
        compare(np.zeros((10, k)), np.zeros((11, k)))


def test_compare_reports_success_difference_and_completion_ratio():
    k = len(EPISODE_KEYS)
    a, b = np.zeros((100, k)), np.zeros((100, k))
    s, c = EPISODE_KEYS.index("success"), EPISODE_KEYS.index("completion_s")
    a[:, s], b[:, s] = 1.0, np.r_[np.ones(90), np.zeros(10)]
    a[:, c], b[:, c] = 0.9, np.r_[np.ones(90), np.full(10, np.nan)]
    out = compare(a, b, resamples=500)
    assert out["success"][0] == pytest.approx(0.1)
    assert out["success"][1] > 0.03
    assert out["completion_s"][:3] == pytest.approx([0.9, 0.9, 0.9])


def test_completion_on_the_same_route_is_not_fooled_by_a_preference_for_the_short_one():
    """A goes the short way (1 s) on 70 episodes, B on 40; on each route they are equally fast."""
    k = len(EPISODE_KEYS)
    a, b = np.zeros((100, k)), np.zeros((100, k))
    r, c = EPISODE_KEYS.index("route"), EPISODE_KEYS.index("completion_s")
    a[:, r] = np.where(np.arange(100) < 70, 1.0, -1.0)
    b[:, r] = np.where(np.arange(100) < 40, 1.0, -1.0)
    for t in (a, b):
        t[:, c] = np.where(t[:, r] > 0, 1.0, 1.5)
    out = compare(a, b, resamples=300)
    assert out["completion_s"][0] == pytest.approx(1.15 / 1.3)  # the mix makes A look 12 % faster
    assert out["completion_same_route"][:3] == pytest.approx([1.0, 1.0, 1.0])
    a[:, r] = np.nan  # never routed: nothing to compare
    assert np.isnan(compare(a, b, resamples=100)["completion_same_route"][0])


def test_compare_reports_the_stall_fraction_difference():
    """Stall ("hesitates more than the expert") is compared per episode like the switches."""
    k = len(EPISODE_KEYS)
    a, b = np.zeros((100, k)), np.zeros((100, k))
    st = EPISODE_KEYS.index("stall_fraction")
    b[:, st] = np.random.default_rng(3).random(100) * 0.1
    a[:, st] = b[:, st] + 0.2
    out = compare(a, b, resamples=500)
    assert out["stall_fraction"] == pytest.approx([0.2, 0.2, 0.2])


def test_the_paired_table_shows_stall_and_reads_reports_without_it():
    from legato.report import paired_table

    row = {"a": "rtc", "b": "expert", "d": 4, "s": 12, "success": [-0.1, -0.2, 0.0],
           "completion_s": [1.1, 1.0, 1.2], "mode_switches": [0.3, 0.1, 0.5],
           "boundary_jump": [0.0] * 3}  # fmt: skip
    assert paired_table([row]).splitlines()[-1].endswith("| n/a |")
    row["stall_fraction"] = [0.25, 0.2, 0.3]
    assert paired_table([row]).splitlines()[-1].endswith("| +0.250 [+0.200, +0.300] |")


def test_stratified_resamples_keep_each_held_out_sets_size():
    strata = np.repeat([0, 1, 2], [30, 50, 20])
    idx = resample_indices(strata, 500, np.random.default_rng(0))
    assert idx.shape == (500, 100)
    for g, n in ((0, 30), (1, 50), (2, 20)):
        assert (np.sum(strata[idx] == g, axis=1) == n).all()
    assert len(np.unique(idx[:, :30])) == 30  # with replacement, over the whole stratum


def test_a_stratified_interval_is_narrower_when_the_sets_differ():
    """Set 0: A wins every episode; set 1: a tie. Pooled, the success difference is 0.5 in every
    stratified resample; unstratified, the mix of the two sets varies and so does the mean."""
    a = np.ones(100)
    b = np.r_[np.zeros(50), np.ones(50)]
    strata = np.repeat([0, 1], 50)
    assert bootstrap_interval(a, b, mean_difference, strata=strata) == pytest.approx((0.5, 0.5, 0.5))
    _, lo, hi = bootstrap_interval(a, b, mean_difference)
    assert lo < 0.45 and hi > 0.55
    with pytest.raises(ValueError, match="one label per episode"):
        bootstrap_interval(a, b, mean_difference, strata=strata[:10])

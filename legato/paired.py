"""Paired comparisons of two methods on the same episodes and sampling noise.

Every cell of the evaluation runs the same held-out episodes with the same noise seed for
each method, so episode k of method A and episode k of method B differ only by the method.
The interval on a difference resamples episodes (indices shared by both methods) with
replacement: a paired bootstrap, 95 % percentile interval. Episodes pooled from several held-out
sets resample within each set (strata), so every resample keeps each set's size, as the
evaluation's design fixed it.

- success: mean over episodes of (success_A - success_B), in points of success rate / 100.
- completion: ratio mean(completion_A) / mean(completion_B) over the episodes both methods
  completed (each resample recomputes both means on its own common successes).
- completion, same route: the same ratio over the episodes both completed on the same route
  (legato.episode_metrics "route"), so a method that picks the short route more often does not
  look faster for it.
- mode switches, boundary jump, stall fraction: mean of per-episode differences (episodes
  where both are defined; the jump is undefined for an episode with a single chunk).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from legato.episode_metrics import EPISODE_KEYS

Statistic = Callable[[np.ndarray, np.ndarray], float]


def resample_indices(strata: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, n) episode indices drawn with replacement within each stratum: resample k
    holds, for each stratum, as many of its own episodes as it has. strata: (n,) labels."""
    groups = [np.flatnonzero(strata == g) for g in np.unique(strata)]
    draws = [g[rng.integers(len(g), size=(resamples, len(g)))] for g in groups]
    return np.concatenate(draws, axis=1)


def bootstrap_interval(
    a: np.ndarray,
    b: np.ndarray,
    stat: Statistic,
    resamples: int = 4000,
    seed: int = 0,
    level: float = 0.95,
    strata: np.ndarray | None = None,
) -> tuple[float, float, float]:
    """(estimate, low, high) of stat(a, b) and its paired bootstrap percentile interval.
    a, b: (n,) per-episode values of the two methods on the same n episodes; strata: (n,) labels
    of the held-out set each episode belongs to (None: one set)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples need equal 1-D shapes, got {a.shape} and {b.shape}")
    if strata is not None and np.shape(strata) != a.shape:
        raise ValueError(f"strata need one label per episode: {np.shape(strata)} for {a.shape}")
    est = stat(a, b)
    rng = np.random.default_rng(seed)
    if strata is None:
        idx = rng.integers(len(a), size=(resamples, len(a)))
    else:
        idx = resample_indices(np.asarray(strata), resamples, rng)
    draws = np.array([stat(a[k], b[k]) for k in idx])
    draws = draws[np.isfinite(draws)]
    if len(draws) == 0:
        return est, math.nan, math.nan
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(draws, [tail, 100 - tail])
    return est, float(lo), float(hi)


def mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean of a - b over the entries where both are finite (NaN if none)."""
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.mean(a[ok] - b[ok])) if ok.any() else math.nan


def mean_ratio(a: np.ndarray, b: np.ndarray) -> float:
    """mean(a) / mean(b) over the entries where both are finite (NaN if none, or if mean(b) = 0)."""
    ok = np.isfinite(a) & np.isfinite(b)
    den = float(np.mean(b[ok])) if ok.any() else 0.0
    return float(np.mean(a[ok])) / den if den != 0 else math.nan


COMPARISONS: tuple[tuple[str, str, Statistic], ...] = (
    ("success", "success difference", mean_difference),
    ("completion_s", "completion time ratio", mean_ratio),
    ("mode_switches", "mode-switch difference", mean_difference),
    ("boundary_jump", "boundary-jump difference", mean_difference),
    ("stall_fraction", "stall-fraction difference", mean_difference),
)


def compare(
    table_a: np.ndarray, table_b: np.ndarray, resamples: int = 4000, seed: int = 0,
    strata: np.ndarray | None = None,
) -> dict[str, list]:  # fmt: skip
    """{metric: [estimate, low, high]} of method A against method B on the same episodes.
    table_a, table_b: legato.episode_metrics.episode_table of each method, same episode order;
    strata: (episodes,) held-out set labels of a pooled sample (bootstrap_interval)."""
    if table_a.shape != table_b.shape:
        raise ValueError(f"the two cells ran different episodes: {table_a.shape} vs {table_b.shape}")
    out = {}
    for key, _, stat in COMPARISONS:
        j = EPISODE_KEYS.index(key)
        ci = bootstrap_interval(table_a[:, j], table_b[:, j], stat, resamples, seed, strata=strata)
        out[key] = list(ci)
    # Masking per episode before resampling keeps the pairing: the mask travels with the episode.
    r, c = EPISODE_KEYS.index("route"), EPISODE_KEYS.index("completion_s")
    same = table_a[:, r] == table_b[:, r]  # NaN routes never match
    a, b = np.where(same, table_a[:, c], math.nan), np.where(same, table_b[:, c], math.nan)
    out["completion_same_route"] = list(bootstrap_interval(a, b, mean_ratio, resamples, seed, strata=strata))
    return out

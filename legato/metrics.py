"""Per-episode evaluation metrics: success statistics, chunk-boundary behaviour, smoothness, hesitation.

Pure numpy, no torch, so the metrics run anywhere the rollouts' arrays can be loaded.

Conventions (shared by every function here):
- Time is in control steps of length dt seconds (50 Hz control: dt = 0.02 s).
- actions (t, a): commanded joint-position targets in radians, row t executed at step t.
- x (t, k): sampled positions (joint angles in rad, or end-effector points in m), row t at time t * dt.
- A "step" i is the interval between rows i and i + 1, so t rows give t - 1 steps.
- Rows after an episode ended are NaN. Every function drops a trailing block of rows that contain
  any NaN; a NaN row followed by a finite row is not a padded tail and raises ValueError.
- A metric that is undefined for the input (too few rows, no motion, nothing to compare) is NaN,
  so batch means can skip it with nanmean.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "boundary_discontinuity",
    "log_dimensionless_jerk",
    "mean_squared_jerk",
    "mode_switches",
    "nsparc",
    "overlap_inconsistency",
    "sparc",
    "speed_profile",
    "stall_fraction",
    "throughput",
    "wilson_interval",
]


def _valid_rows(x: np.ndarray, name: str) -> np.ndarray:
    """x as float64 (t, k) with its trailing NaN rows removed; a 1-D (t,) input becomes (t, 1)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} must be (t,) or (t, k), got shape {x.shape}")
    bad = np.isnan(x).any(axis=1)
    if not bad.any():
        return x
    first_bad = int(np.argmax(bad))
    if not bad[first_bad:].all():
        # A finite row after a NaN row means the NaN is not end-of-episode padding: refuse to guess.
        raise ValueError(
            f"{name} has NaN at row {first_bad} followed by finite rows; only a NaN tail is allowed"
        )
    return x[:first_bad]


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% for z = 1.96).

    With p = successes / n:
        centre = (p + z^2 / (2n)) / (1 + z^2 / n)
        half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))
    returns (centre - half, centre + half), clipped to [0, 1] against rounding. n = 0 gives (nan, nan).
    """
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def speed_profile(x: np.ndarray, dt: float) -> np.ndarray:
    """Speed per step from positions by first differences.

    x: (t, k) positions (or (t,)), trailing NaN rows dropped; dt in s.
    Returns (t - 1,): v_i = ||x_(i+1) - x_i||_2 / dt, in x's units per second.
    """
    x = _valid_rows(x, "x")
    return np.linalg.norm(np.diff(x, axis=0), axis=1) / dt


def sparc(speed: np.ndarray, fs: float, pad_level: int = 4, fc: float = 10.0, amp_th: float = 0.05) -> float:
    """Spectral arc length of a speed profile (Balasubramanian et al. 2015); closer to 0 is smoother.

    speed: (t,) speeds (trailing NaNs dropped), fs: sampling rate in Hz, fc: cut-off in Hz.
    1. nfft = 2^(ceil(log2 t) + pad_level); M(f) = |FFT(speed, nfft)| over f in [0, fs/2],
       normalised by max M.
    2. Keep f <= min(fc, fs/2), then the contiguous band from the first to the last f with M >= amp_th.
    3. SPARC = -sum sqrt((diff(f) / (f_last - f_first))^2 + diff(M)^2) over that band.
    A band of a single bin gives 0.0. Fewer than 2 samples, or an all-zero profile (no spectrum to
    normalise), give nan.
    """
    v = _valid_rows(speed, "speed")
    if v.shape[1] != 1:
        raise ValueError(f"speed must be 1-D, got shape {np.shape(speed)}")
    v = v[:, 0]
    if len(v) < 2:
        return math.nan
    nfft = 2 ** (math.ceil(math.log2(len(v))) + pad_level)
    f = np.fft.rfftfreq(nfft, d=1.0 / fs)  # 0 .. fs/2: the one-sided spectrum already stops at Nyquist
    mag = np.abs(np.fft.rfft(v, nfft))
    peak = mag.max()
    if peak == 0.0:
        return math.nan
    mag = mag / peak
    # The real spectrum is symmetric, so the one-sided max equals the two-sided max of the paper.
    keep = f <= min(fc, fs / 2)
    f, mag = f[keep], mag[keep]
    above = np.flatnonzero(mag >= amp_th)
    if len(above) == 0:
        # Every in-band bin is below threshold (all power above fc): no arc to measure.
        return math.nan
    lo, hi = above[0], above[-1] + 1
    f, mag = f[lo:hi], mag[lo:hi]
    if len(f) < 2:
        return 0.0
    df = np.diff(f) / (f[-1] - f[0])
    return float(-np.sum(np.sqrt(df**2 + np.diff(mag) ** 2)))


def nsparc(speed: np.ndarray, fs: float, pad_level: int = 4, fc: float = 10.0, amp_th: float = 0.05) -> float:
    """NSPARC = -SPARC (>= 0; lower is smoother), the sign the paper reports. Arguments as in sparc."""
    return -sparc(speed, fs, pad_level=pad_level, fc=fc, amp_th=amp_th)


def _jerk(x: np.ndarray, dt: float) -> np.ndarray:
    """(t - 3, k) third differences / dt^3: the jerk over each run of four consecutive rows."""
    return np.diff(x, n=3, axis=0) / dt**3


def log_dimensionless_jerk(x: np.ndarray, dt: float) -> float:
    """Log dimensionless jerk (Hogan & Sternad 2009); larger is jerkier.

    x: (t, k) positions (trailing NaNs dropped), dt in s. With D = (t - 1) dt the duration,
    v_peak = max of speed_profile(x, dt) and j = third differences / dt^3, (t - 3, k):
        LDJ = ln( D^3 / v_peak^2 * sum_i ||j_i||^2 dt ).
    Sign: this is +ln of the dimensionless jerk, so larger = jerkier (Balasubramanian et al. 2015
    report -LDJ, where larger = smoother). Fewer than 4 rows, no motion, or zero jerk give nan
    (ln 0 is -inf, which would poison means).
    """
    x = _valid_rows(x, "x")
    if len(x) < 4:
        return math.nan
    duration = (len(x) - 1) * dt
    v_peak = float(speed_profile(x, dt).max())
    integral = float(np.sum(_jerk(x, dt) ** 2) * dt)
    if v_peak == 0.0 or integral == 0.0:
        return math.nan
    return math.log(duration**3 / v_peak**2 * integral)


def mean_squared_jerk(x: np.ndarray, dt: float) -> float:
    """Mean over steps of the squared jerk norm.

    x: (t, k) positions (trailing NaNs dropped), dt in s. j = third differences / dt^3, (t - 3, k);
    returns mean_i ||j_i||^2 in (x units / s^3)^2. Fewer than 4 rows give nan.
    """
    x = _valid_rows(x, "x")
    if len(x) < 4:
        return math.nan
    return float(np.mean(np.sum(_jerk(x, dt) ** 2, axis=1)))


def boundary_discontinuity(actions: np.ndarray, boundaries: np.ndarray) -> tuple[float, float]:
    """Jump in the commanded action where execution switches chunk, alone and relative to within-chunk steps.

    actions: (t, a) rad (trailing NaNs dropped); boundaries: integer steps tb where a new chunk's
    action is first executed. Duplicates count once; tb < 1 or tb >= t (no a_tb or a_(tb-1) to
    difference) are ignored. With d_s = ||a_s - a_(s-1)||_2 (L2 over joints):
        jump  = mean over boundaries tb of d_tb
        ratio = jump / mean over non-boundary s in [1, t) of d_s
    No boundaries left gives (nan, nan). If there are no non-boundary steps the ratio is nan; if
    their mean is 0 the ratio is inf for jump > 0 and nan for jump = 0.
    """
    a = _valid_rows(actions, "actions")
    d = np.linalg.norm(np.diff(a, axis=0), axis=1)  # d[s - 1] = ||a_s - a_(s-1)||, s = 1 .. t-1
    tb = np.unique(np.asarray(boundaries, dtype=np.int64).ravel())
    tb = tb[(tb >= 1) & (tb < len(a))]
    if len(tb) == 0:
        return math.nan, math.nan
    is_boundary = np.zeros(len(d), dtype=bool)
    is_boundary[tb - 1] = True
    jump = float(d[is_boundary].mean())
    if is_boundary.all():
        return jump, math.nan
    within = float(d[~is_boundary].mean())
    if within == 0.0:
        return jump, (math.inf if jump > 0 else math.nan)
    return jump, jump / within


def overlap_inconsistency(
    old_chunk: np.ndarray, old_origin: int, new_chunk: np.ndarray, new_origin: int, new_start: int
) -> float:
    """RMSE between a new chunk and the discarded tail of the chunk it replaced.

    old_chunk: (h_old, a), new_chunk: (h_new, a), rad; row i of a chunk is the target for step
    origin + i. The new chunk took over at step new_start, so the old chunk's steps
    [new_start, old_origin + h_old) were never executed. The overlap is those steps that the new
    chunk also covers,
        S = [max(new_start, old_origin, new_origin), min(old_origin + h_old, new_origin + h_new)),
        RMSE = sqrt( mean over s in S and joints of (new_(s - new_origin) - old_(s - old_origin))^2 ).
    An empty overlap gives nan.
    """
    old = np.asarray(old_chunk, dtype=np.float64)
    new = np.asarray(new_chunk, dtype=np.float64)
    if old.ndim != 2 or new.ndim != 2 or old.shape[1] != new.shape[1]:
        raise ValueError(f"chunks must be (h, a) with the same a, got {old.shape} and {new.shape}")
    lo = max(new_start, old_origin, new_origin)
    hi = min(old_origin + len(old), new_origin + len(new))
    if hi <= lo:
        return math.nan
    diff = new[lo - new_origin : hi - new_origin] - old[lo - old_origin : hi - old_origin]
    return float(np.sqrt(np.mean(diff**2)))


def mode_switches(labels: np.ndarray) -> int:
    """Number of side changes between consecutive decided chunk labels.

    labels: (c,) one per chunk in {-1, 0, +1} (see sim.scene.side_of_path); 0 (undecided) and NaN
    are skipped. With l the decided labels in order, returns sum_i [l_i != l_(i-1)].
    """
    lab = np.asarray(labels, dtype=np.float64).ravel()
    lab = lab[~np.isnan(lab)]
    if not np.isin(lab, (-1.0, 0.0, 1.0)).all():
        raise ValueError(f"labels must be in {{-1, 0, 1}}, got {np.unique(lab).tolist()}")
    decided = lab[lab != 0]
    return int(np.sum(decided[1:] != decided[:-1]))


def stall_fraction(ee: np.ndarray, dt: float, until: int | None = None, threshold: float = 0.1) -> float:
    """Share of steps before success in which the end effector is nearly still.

    ee: (t + 1, 2) end-effector positions in m (trailing NaNs dropped), dt in s. v = speed_profile(ee, dt)
    has one entry per step i (rows i -> i + 1), t in all; v_max = max v over the whole valid episode.
    Counted steps are i < until (until = steps to success, i.e. the number of steps executed up to
    and including the one that reached the goal), or all t if until is None:
        fraction = #{i < until : v_i < threshold * v_max} / #{i < until}.
    If the arm never moves (v_max = 0) every counted step is a stall (1.0). No counted steps give nan.
    """
    v = speed_profile(ee, dt)
    counted = v if until is None else v[: max(until, 0)]
    if len(counted) == 0:
        return math.nan
    v_max = float(v.max())
    if v_max == 0.0:
        return 1.0
    return float(np.mean(counted < threshold * v_max))


def throughput(successes: int, total_steps: int, dt: float) -> float:
    """Successes per minute of robot time: successes / (total_steps * dt) * 60. total_steps = 0 gives nan."""
    if successes < 0 or total_steps < 0 or dt <= 0:
        raise ValueError(
            f"need successes >= 0, total_steps >= 0, dt > 0; got {successes}, {total_steps}, {dt}"
        )
    if total_steps == 0:
        return math.nan
    return successes / (total_steps * dt) * 60.0

"""Clock offset and drift between host and controller from round-trip time-sync exchanges.

One exchange (NTP's four timestamps, all microseconds)::

    t1 host sends REQUEST      t2 controller receives it
    t4 host receives RESPONSE  t3 controller sends RESPONSE

    offset = ((t2 - t1) + (t3 - t4)) / 2      # controller clock minus host clock
    delay  = (t4 - t1) - (t3 - t2)            # round trip on the wire and in the drivers

The offset of one exchange is exact when both directions take equally long. Over a window of
recent exchanges, those with a delay above the window's median are discarded (a frame that sat
in a buffer one way), and a least-squares line ``offset(t) = offset0 + drift * (t - t_ref)``
is fitted through the rest: its slope is the drift (reported in ppm).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClockEstimate:
    offset_us: float  # controller minus host, at host time ``at_us``
    drift_ppm: float  # controller rate minus host rate, parts per million
    at_us: float  # host clock the estimate refers to
    delay_us: float  # smallest round trip in the window
    samples: int


def exchange(t1: int, t2: int, t3: int, t4: int) -> tuple[float, float]:
    """(offset, delay) of one exchange, microseconds."""
    return ((t2 - t1) + (t3 - t4)) / 2.0, float((t4 - t1) - (t3 - t2))


def line_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares (slope, intercept) of y = intercept + slope * x, in closed form: what
    ``np.polyfit(x, y, 1)`` returns without its LAPACK call and checks (about 140 us with the GIL
    held each time-sync exchange, in the clock's process; this is a few numpy reductions). x: (k,),
    y: (k,), k >= 2, x not constant."""
    xm, ym = float(x.mean()), float(y.mean())
    dx = x - xm
    slope = float(np.dot(dx, y - ym) / np.dot(dx, dx))
    return slope, ym - slope * xm


class ClockSync:
    """Keeps the last ``window`` exchanges and fits offset and drift. Single writer."""

    def __init__(self, window: int = 64) -> None:
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        self._samples: collections.deque[tuple[float, float, float]] = collections.deque(maxlen=window)
        self._estimate: ClockEstimate | None = None

    def add(self, t1: int, t2: int, t3: int, t4: int) -> None:
        if t4 < t1 or t3 < t2:
            return  # impossible ordering: a stale or mangled response, not a measurement
        offset, delay = exchange(t1, t2, t3, t4)
        self._samples.append(((t1 + t4) / 2.0, offset, delay))
        self._estimate = self._fit()

    def reset(self) -> None:
        """Forget everything (a reconnected controller may have rebooted: new clock)."""
        self._samples.clear()
        self._estimate = None

    @property
    def estimate(self) -> ClockEstimate | None:
        return self._estimate

    def _fit(self) -> ClockEstimate:
        s = np.asarray(self._samples, dtype=np.float64)  # (k, 3): host time, offset, delay
        keep = s[s[:, 2] <= np.median(s[:, 2])]
        t, off = keep[:, 0], keep[:, 1]
        t_ref = float(s[-1, 0])
        if len(keep) >= 2 and float(t.max() - t.min()) > 0:
            slope, intercept = line_fit(t - t_ref, off)
        else:
            slope, intercept = 0.0, float(off.mean())
        return ClockEstimate(float(intercept), float(slope) * 1e6, t_ref, float(s[:, 2].min()), len(s))

    def to_host_us(self, controller_us: int, host_now_us: float, wrap_bits: int = 32) -> float | None:
        """Map a controller timestamp (modulo 2**wrap_bits, in the recent past) to the host clock."""
        est = self._estimate
        if est is None:
            return None
        offset = est.offset_us + est.drift_ppm * 1e-6 * (host_now_us - est.at_us)
        ctrl_now = host_now_us + offset
        mod = 1 << wrap_bits
        back = (int(ctrl_now) - controller_us) % mod  # how long ago, unwrapping the counter
        if back > mod // 2:  # "in the future" by a little: clock jitter, not a wrap
            back -= mod
        return ctrl_now - back - offset

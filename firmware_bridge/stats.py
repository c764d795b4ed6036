"""Link statistics: frame counters, sequence gaps, the setpoint round trip, and a sample ring.

Threading: every counter has one writer thread (the reader or the streamer, as noted; a
reconnect resets some from the thread that owns the port), so increments need no lock; readers
take snapshots that may be a frame apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from firmware_bridge.seq import SEQ_MOD, seq_distance, seq_newer


@dataclass
class RxCounters:
    """Written by the reader thread only."""

    frames: int = 0
    bytes: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # ProtocolError.kind -> count
    overflows: int = 0  # packets longer than MAX_FRAME discarded by the splitter
    seq_gaps: int = 0  # controller sequence numbers never received
    seq_late: int = 0  # frames older than one already received (duplicated or reordered)
    callback_errors: int = 0  # exceptions raised by frame handlers (kept apart from I/O errors)
    disconnects: int = 0
    session_frames: int = 0  # frames since the last (re)connect
    first_seq: int | None = None  # first controller sequence number of this connection
    _last_seq: int | None = None

    def count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    @property
    def decode_errors(self) -> int:
        return sum(self.errors.values()) + self.overflows

    def track_seq(self, seq: int) -> None:
        self.session_frames += 1
        last = self._last_seq
        if last is None:
            self.first_seq = seq
        if last is None or seq_newer(seq, last):
            if last is not None:
                self.seq_gaps += seq_distance(seq, last) - 1
            self._last_seq = seq
        else:
            self.seq_late += 1

    def restart_seq(self) -> None:
        """After a reconnect: frames lost while unplugged are counted as disconnects, not gaps."""
        self._last_seq = None
        self.first_seq = None
        self.session_frames = 0

    @property
    def session_span(self) -> int:
        """Controller frames sent from the first to the newest seen on this connection."""
        if self.first_seq is None or self._last_seq is None:
            return 0
        return seq_distance(self._last_seq, self.first_seq) + 1


@dataclass
class TxCounters:
    """Written under the link's write lock."""

    frames: int = 0
    bytes: int = 0
    write_errors: int = 0
    by_type: dict[int, int] = field(default_factory=dict)


class Ring:
    """The newest ``capacity`` float samples in one preallocated array (no allocation per sample;
    a deque of Python floats costs ~32 bytes a sample). One writer; ``values()`` copies."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._a = np.zeros(capacity)
        self._n = 0  # samples ever appended

    def append(self, x: float) -> None:
        self._a[self._n % len(self._a)] = x
        self._n += 1

    def __len__(self) -> int:
        return min(self._n, len(self._a))

    def values(self) -> np.ndarray:
        """The kept samples, oldest first (a copy)."""
        n, cap = self._n, len(self._a)
        if n <= cap:
            return self._a[:n].copy()
        k = n % cap
        return np.concatenate((self._a[k:], self._a[:k]))

    def percentiles(self, qs: tuple[float, ...], scale: float = 1.0) -> tuple[float, ...] | None:
        """Percentiles of the kept samples times ``scale``, or None without samples."""
        if not self._n:
            return None
        return tuple(float(v) * scale for v in np.percentile(self._a[: len(self)], qs))

    def clear(self) -> None:
        self._n = 0


class RoundTrip:
    """Setpoint send time by sequence number -> round trip when telemetry echoes that number.

    ``sent`` is written by the streamer, ``echo`` by the reader; a slot is only read after its
    sequence number was echoed, i.e. after it was written.
    """

    # Percentiles come from a histogram of log-spaced bins (1 % wide, 1 us .. 100 s), so that
    # health() costs the same after an hour as after a second: a bus shares its process with a
    # control clock, and np.percentile over 200,000 samples held the GIL for 15-35 ms.
    BIN_LO, BIN_RATIO = 1e-6, 1.01
    N_BINS = int(math.log(1e8) / math.log(1.01)) + 2

    def __init__(self, keep: int = 200_000) -> None:
        self._sent = np.full(SEQ_MOD, math.nan)  # host monotonic seconds, indexed by seq
        self._last_echo: int | None = None
        self.samples = Ring(keep)  # seconds
        self._hist = np.zeros(self.N_BINS, np.int64)  # bin b: [LO * RATIO^(b-1), LO * RATIO^b)
        self._log_ratio = math.log(self.BIN_RATIO)

    def sent(self, seq: int, t: float) -> None:
        self._sent[seq] = t

    def echo(self, seq: int, t: float) -> None:
        if seq == self._last_echo:
            return  # the same applied setpoint reported again: not a new round trip
        self._last_echo = seq
        t0 = self._sent[seq]
        if not math.isnan(t0):
            rtt = t - t0
            self.samples.append(rtt)
            b = 0 if rtt < self.BIN_LO else int(math.log(rtt / self.BIN_LO) / self._log_ratio) + 1
            self._hist[min(b, self.N_BINS - 1)] += 1
            self._sent[seq] = math.nan  # a later echo of a wrapped seq must not reuse it

    def percentiles(self, qs: tuple[float, ...] = (50.0, 99.0)) -> tuple[float, ...] | None:
        """Round-trip percentiles in milliseconds (within 1 %: the middle of their histogram bin),
        or None without samples."""
        cum = np.cumsum(self._hist)
        total = int(cum[-1])
        if total == 0:
            return None
        out = []
        for q in qs:
            b = int(np.searchsorted(cum, max(1.0, q / 100.0 * total)))
            out.append(self.BIN_LO * self.BIN_RATIO ** (b - 0.5) * 1e3 if b > 0 else 0.0)
        return tuple(out)

    def reset(self) -> None:
        self._sent.fill(math.nan)
        self._last_echo = None

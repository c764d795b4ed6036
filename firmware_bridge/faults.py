"""A fault-injecting transport for tests, usable on either side of the link.

Wraps any :class:`~firmware_bridge.transport.Transport`. Per written frame (one ``write`` call is
one frame on both sides): drop it, duplicate it, hold it back and send it after the next one
(reorder). Per written byte: corrupt it (XOR with a random non-zero value) or drop it. On the
receive side: delay delivery by ``delay_s`` (what an FTDI latency timer does). And by command:
``stall(seconds)`` freezes both directions of this side (a hung host), ``close_port()`` makes
every later call fail as an unplugged adapter would.

The random source is seeded, so a failing test replays exactly.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from dataclasses import dataclass, field

from firmware_bridge.errors import TransportError
from firmware_bridge.transport import Transport


@dataclass(frozen=True)
class FaultPlan:
    """Probabilities are per byte or per frame, in [0, 1]."""

    corrupt_byte_p: float = 0.0  # each written byte XORed with a random non-zero value
    drop_byte_p: float = 0.0  # each written byte removed
    drop_frame_p: float = 0.0  # whole written frame never sent
    duplicate_frame_p: float = 0.0  # frame sent twice
    reorder_frame_p: float = 0.0  # frame held back and sent after the next frame
    delay_s: float = 0.0  # received bytes released this long after they arrived

    def __post_init__(self) -> None:
        for name in ("corrupt_byte_p", "drop_byte_p", "drop_frame_p", "duplicate_frame_p", "reorder_frame_p"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p!r}")
        if self.delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {self.delay_s!r}")


@dataclass
class FaultCounts:
    frames_written: int = 0
    corrupted_bytes: int = 0
    corrupted_frames: int = 0  # frames with at least one byte corrupted or dropped
    dropped_bytes: int = 0
    dropped_frames: int = 0
    duplicated_frames: int = 0
    reordered_frames: int = 0
    by_frame: list[bool] = field(default_factory=list)  # per written frame: damaged on the wire?


class FaultyTransport:
    """Transport wrapper that injects the faults of a :class:`FaultPlan`."""

    def __init__(self, inner: Transport, plan: FaultPlan | None = None, seed: int = 0) -> None:
        self._inner = inner
        self.plan = plan or FaultPlan()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._held: bytes | None = None  # frame waiting to be reordered
        self._delayed: collections.deque[tuple[float, bytes]] = collections.deque()
        self._stall_until = 0.0
        self._unstall = threading.Event()
        self._closed = False
        self.counts = FaultCounts()

    def set_plan(self, plan: FaultPlan) -> None:
        with self._lock:
            self.plan = plan

    def stall(self, seconds: float) -> None:
        """Freeze reads and writes on this side for ``seconds`` (writes block, as a hung host)."""
        self._unstall.clear()
        self._stall_until = time.monotonic() + seconds

    def close_port(self) -> None:
        """Behave as an unplugged adapter from now on."""
        self._closed = True
        self._unstall.set()
        self._inner.close()

    def _wait_stall(self) -> None:
        remaining = self._stall_until - time.monotonic()
        if remaining > 0:
            self._unstall.wait(remaining)
        if self._closed:
            raise TransportError("port closed by fault injection")

    def write(self, data: bytes) -> None:
        self._wait_stall()
        with self._lock:
            plan, rng, c = self.plan, self._rng, self.counts
            c.frames_written += 1
            if rng.random() < plan.drop_frame_p:
                c.dropped_frames += 1
                c.by_frame.append(True)
                return
            out = bytearray()
            damaged = False
            for b in data:
                if plan.drop_byte_p and rng.random() < plan.drop_byte_p:
                    c.dropped_bytes += 1
                    damaged = True
                    continue
                if plan.corrupt_byte_p and rng.random() < plan.corrupt_byte_p:
                    b ^= rng.randrange(1, 256)
                    c.corrupted_bytes += 1
                    damaged = True
                out.append(b)
            c.corrupted_frames += damaged
            c.by_frame.append(damaged)
            frames = [bytes(out)]
            if rng.random() < plan.duplicate_frame_p:
                c.duplicated_frames += 1
                frames.append(bytes(out))
            if self._held is not None:
                frames.append(self._held)  # the held frame goes out after this one: reordered
                self._held = None
            elif rng.random() < plan.reorder_frame_p:
                c.reordered_frames += 1
                self._held = frames.pop(0)
        for f in frames:
            self._inner.write(f)

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        self._wait_stall()
        delay = self.plan.delay_s
        if delay <= 0 and not self._delayed:
            return self._inner.read(max_bytes, timeout_s)
        now = time.monotonic()
        if not self._delayed or self._delayed[0][0] + delay > now:
            wait = timeout_s if not self._delayed else min(timeout_s, self._delayed[0][0] + delay - now)
            data = self._inner.read(max_bytes, max(0.0, wait))
            if data:
                self._delayed.append((time.monotonic(), data))
        now = time.monotonic()
        out = bytearray()
        while self._delayed and self._delayed[0][0] + delay <= now:
            out += self._delayed.popleft()[1]
        return bytes(out)

    def cancel_read(self) -> None:
        self._unstall.set()
        self._inner.cancel_read()

    def close(self) -> None:
        self._closed = True
        self._unstall.set()
        self._inner.close()

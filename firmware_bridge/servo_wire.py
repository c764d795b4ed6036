"""Requests and replies on one servo bus port: the exchange every servo command uses.

A :class:`ServoWire` owns nothing but a port it was handed, a dialect (Feetech or Dynamixel) and
a parser. ``exchange`` writes one request (optionally after packets that get no reply, such as
the goals' sync write) and collects the status packets of the servos asked, matched by ID, until
all came or the reply deadline passed::

    reply deadline = send time + wire time of the request and of every reply + timeout_s

Until the first byte of any reply is in, it waits up to ``hard_deadline`` instead: no reply at all
means the adapter (an FTDI latency timer) or this host is late, not that every servo went silent.

The servo bus's cycle (:mod:`firmware_bridge.servo_bus`) and the one-off commands (``legato servo
ping / scan / calibrate``: :mod:`firmware_bridge.servo_tools`) both use it. Raises only
TransportError (the port); a servo that does not answer is simply missing from the result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from firmware_bridge.servo_common import Packet, wire_time_s
from firmware_bridge.servo_dialects import Dynamixel, Feetech
from firmware_bridge.servo_port import BytePort

Replies = dict[int, tuple[Packet, float]]  # servo id -> (status packet, host time it arrived)


class ServoWire:
    def __init__(self, port: BytePort, dialect: Feetech | Dynamixel, baudrate: int,
                 clock: Callable[[], float] = time.monotonic, counts: Any = None) -> None:  # fmt: skip
        """``counts``: where ``frames_sent`` / ``frames_received`` add up (a bus keeps its totals
        across reconnects, each with a new wire); default this wire."""
        self.port, self.d, self.baudrate, self._clock = port, dialect, baudrate, clock
        self.parser = dialect.parser()
        self.frames_sent = 0
        self.frames_received = 0
        self.counts = self if counts is None else counts

    def exchange(self, request: bytes, ids: Sequence[int], n_params: int, timeout_s: float,
                 hard_deadline: float, before: bytes = b"") -> Replies:  # fmt: skip
        """Send ``before`` and ``request`` in one write (one syscall: a pty write costs tens of us)
        and collect the status packets of ``ids`` (``n_params`` data bytes each expected)."""
        port, clock = self.port, self._clock
        port.discard_input()  # late replies of an earlier request must not be taken for these
        self.parser.reset()
        sent = clock()
        port.write(before + request, hard_deadline)
        self.counts.frames_sent += 2 if before else 1
        baud, size = self.baudrate, self.d.status_size(n_params)
        deadline = min(sent + wire_time_s(len(before) + len(request) + len(ids) * size, baud) + timeout_s,
                       hard_deadline)  # fmt: skip
        want = set(ids)
        got: Replies = {}
        split = self.d.split
        first = True
        while want:
            data = port.read(hard_deadline if first else deadline)
            now = clock()
            if data:
                if first:  # replies flow: the others get their wire time + timeout_s from here
                    first = False
                    deadline = min(max(deadline, now + wire_time_s(len(want) * size, baud) + timeout_s),
                                   hard_deadline)  # fmt: skip
                for pkt in self.parser.feed(data):
                    for p in split(pkt):
                        if p.servo_id in want:
                            want.discard(p.servo_id)
                            got[p.servo_id] = (p, now)
            if now >= (hard_deadline if first else deadline):
                break
        self.counts.frames_received += len(got)
        return got

    def request(self, request: bytes, sid: int, n_params: int, timeout_s: float) -> Packet | None:
        """One instruction to one servo; its status packet, or None if it did not answer within
        ``timeout_s`` (the whole wait: a one-off command has no cycle budget to protect)."""
        got = self.exchange(request, [sid], n_params, timeout_s, self._clock() + timeout_s)
        return got[sid][0] if sid in got else None

    def send(self, packet: bytes) -> None:
        """A packet that gets no reply (broadcast, sync write)."""
        self.port.write(packet, self._clock() + 0.05)
        self.counts.frames_sent += 1

    # ---- one servo's registers -------------------------------------------------------------
    def ping(self, sid: int, timeout_s: float) -> tuple[int, int | None] | None:
        """(status error byte, model number or None) of servo ``sid``, or None: no answer."""
        d = self.d
        pkt = self.request(d.ping(sid), sid, 0 if isinstance(d, Feetech) else 3, timeout_s)
        if pkt is None:
            return None
        model = d.model(pkt.params, lambda addr, n: self.read(sid, addr, n, timeout_s))
        return pkt.code, model

    def read(self, sid: int, address: int, length: int, timeout_s: float) -> bytes | None:
        """``length`` bytes of servo ``sid``'s control table at ``address``, or None."""
        pkt = self.request(self.d.read(sid, address, length), sid, length, timeout_s)
        return pkt.params[:length] if pkt is not None and len(pkt.params) >= length else None

    def write(self, sid: int, address: int, data: bytes, timeout_s: float) -> int | None:
        """Write ``data`` at ``address`` of servo ``sid``; its status error byte, or None."""
        pkt = self.request(self.d.write(sid, address, data), sid, 0, timeout_s)
        return None if pkt is None else pkt.code

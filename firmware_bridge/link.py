"""The link: one port, one reader thread, locked writes, acknowledged requests, reconnect.

Shape follows pyserial's ``threaded.ReaderThread``: exactly one thread reads the port and turns
bytes into frames (``FrameSplitter`` + ``decode``, which never touch the port); every write goes
through one lock, so frames never interleave and sequence numbers leave in order. I/O failures
(an unplugged adapter) and errors raised by frame handlers are kept apart: the first ends the
connection and reconnects through the one reconnect path every bus shares
(:class:`~firmware_bridge.reconnect.PortKeeper`: backoff, ``connection_made`` /
``connection_lost``), the second is counted and logged.

The link knows nothing about joints or streaming; :mod:`firmware_bridge.bridge` builds on it.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

from firmware_bridge.config import LinkConfig
from firmware_bridge.errors import LinkError, ProtocolError, TransportError
from firmware_bridge.framing import FrameSplitter
from firmware_bridge.messages import Ack, Frame, Message, Nack, NackReason, decode, encode
from firmware_bridge.reconnect import PortKeeper
from firmware_bridge.seq import seq_add
from firmware_bridge.stats import RxCounters, TxCounters
from firmware_bridge.transport import SerialTransport, Transport

log = logging.getLogger(__name__)

FrameHandler = Callable[[Frame, float], None]


def _reason(code: int) -> str:
    try:
        return NackReason(code).name
    except ValueError:
        return f"reason {code}"


class SerialLink:
    """Owns the transport. ``on_frame(frame, t_received)`` runs in the reader thread."""

    READ_CHUNK = 4096
    _ACK_MEMORY = 256  # acknowledgements remembered for requests that wait on them

    def __init__(
        self,
        config: LinkConfig,
        open_transport: Callable[[], Transport] | None = None,
        *,
        on_frame: FrameHandler | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str = "fw-link",
    ) -> None:
        self.config = config
        self._open = open_transport or (
            lambda: SerialTransport(config.port, config.baudrate, config.write_timeout_s)
        )
        self._on_frame = on_frame
        self._clock = clock
        self._name = name
        self._transport: Transport | None = None
        self._write_lock = threading.Lock()
        self._seq = 0
        self._acks: collections.OrderedDict[int, Ack] = collections.OrderedDict()
        self._ack_cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._splitter = FrameSplitter()
        self.rx = RxCounters()
        self.tx = TxCounters()
        self.ack_timeouts = 0  # request attempts that got no ACK/NACK in time
        self._keeper: PortKeeper[Transport] = PortKeeper(
            self._open, self, min_s=config.reconnect_min_s, max_s=config.reconnect_max_s, clock=clock
        )

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self, wait_s: float | None = None) -> bool:
        """Start the reader (it opens the port). With ``wait_s``, wait that long for a connection."""
        if self._thread is not None:
            raise RuntimeError("link already started")
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        return self._keeper.wait_connected(wait_s) if wait_s is not None else self.connected

    def close(self) -> None:
        """Stop the reader, join it, release the port. Idempotent; never raises."""
        self._stop.set()
        t = self._transport
        if t is not None:
            t.cancel_read()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():  # a driver stuck in read(): say so rather than hide it
                log.error("%s: reader thread did not stop within 5 s", self._name)
        self._keeper.close()

    @property
    def connected(self) -> bool:
        return self._keeper.connected

    @property
    def generation(self) -> int:
        """Incremented on every (re)connect; a changed value means: configure the controller again."""
        return self._keeper.generation

    def wait_connected(self, timeout_s: float) -> bool:
        return self._keeper.wait_connected(timeout_s)

    # ---- the port's owner (PortKeeper callbacks, reader thread) -----------------------------
    def connection_made(self, t: Transport) -> None:
        self._splitter.reset()
        self.rx.restart_seq()
        with self._write_lock:
            self._transport = t

    def connection_lost(self, exc: BaseException | None) -> None:
        with self._write_lock:
            self._transport = None
        if exc is not None:
            self.rx.disconnects += 1

    def host_us(self, t: float | None = None) -> int:
        """Host clock in microseconds (the header and time-sync timestamps)."""
        return int((self._clock() if t is None else t) * 1e6)

    # ---- sending ---------------------------------------------------------------------------
    def send(self, msg: Message) -> int:
        """Frame and write one message; return its sequence number. Raises LinkError."""
        with self._write_lock:
            t = self._transport
            if t is None:
                raise LinkError("not connected")
            seq = self._seq
            self._seq = seq_add(seq, 1)
            data = encode(msg, seq, self.host_us())
            try:
                t.write(data)
            except TransportError as exc:
                self.tx.write_errors += 1
                raise LinkError(f"write failed: {exc}") from exc
            self.tx.frames += 1
            self.tx.bytes += len(data)
            self.tx.by_type[msg.TYPE] = self.tx.by_type.get(msg.TYPE, 0) + 1
        return seq

    def request(self, msg: Message, timeout_s: float | None = None, retries: int | None = None) -> Ack:
        """Send an acknowledged command, resending (new sequence number each time: the commands
        are idempotent) until an ACK or NACK for any attempt arrives. Raises LinkError."""
        timeout_s = self.config.ack_timeout_s if timeout_s is None else timeout_s
        retries = self.config.retries if retries is None else retries
        sent: list[int] = []
        last_error = "no attempt made"
        for _ in range(retries):
            if self._stop.is_set():
                break
            try:
                sent.append(self.send(msg))
            except LinkError as exc:
                last_error = str(exc)
                self._stop.wait(timeout_s)  # port may be coming back: wait one attempt's time
                continue
            deadline = time.monotonic() + timeout_s
            with self._ack_cond:
                while True:
                    ack = next((self._acks[s] for s in sent if s in self._acks), None)
                    remaining = deadline - time.monotonic()
                    if ack is not None or remaining <= 0:
                        break
                    self._ack_cond.wait(remaining)
            if ack is not None:
                if isinstance(ack, Nack):
                    raise LinkError(f"{msg.TYPE.name} refused by the controller: {_reason(ack.reason)}")
                return ack
            self.ack_timeouts += 1
            last_error = f"no acknowledgement within {timeout_s * 1e3:.0f} ms"
        raise LinkError(f"{msg.TYPE.name} failed after {len(sent)} attempts: {last_error}")

    # ---- reader thread ---------------------------------------------------------------------
    def _run(self) -> None:
        keeper = self._keeper
        while not self._stop.is_set():
            t = keeper.acquire()
            if t is None:
                log.debug("%s: port not open (%s); retry in %.3f s", self._name, keeper.last_error,
                          keeper.retry_in())  # fmt: skip
                self._stop.wait(keeper.retry_in())
                continue
            try:
                data = t.read(self.READ_CHUNK, self.config.read_timeout_s)
            except TransportError as exc:
                if not self._stop.is_set():
                    log.warning("%s: port lost (%s); reconnecting", self._name, exc)
                    keeper.lost(t, exc)
                continue
            if data:
                self._handle_bytes(data, self._clock())

    def _handle_bytes(self, data: bytes, now: float) -> None:
        rx = self.rx
        rx.bytes += len(data)
        for packet in self._splitter.feed(data):
            try:
                frame = decode(packet)
            except ProtocolError as exc:
                rx.count_error(exc.kind)
                continue
            rx.frames += 1
            rx.track_seq(frame.seq)
            if isinstance(frame.msg, Ack):
                with self._ack_cond:
                    self._acks[frame.msg.acked_seq] = frame.msg
                    while len(self._acks) > self._ACK_MEMORY:
                        self._acks.popitem(last=False)
                    self._ack_cond.notify_all()
            if self._on_frame is not None:
                try:
                    self._on_frame(frame, now)
                except Exception:  # a handler bug must not kill the only reader of the port
                    rx.callback_errors += 1
                    log.exception("%s: frame handler failed on %s", self._name, frame.msg.TYPE.name)
        rx.overflows = self._splitter.overflows

"""Emulated motor controller on a pseudo-terminal: what the demo, the tests and a user without
hardware talk to through pyserial, exactly as to a real port.

One thread runs the controller: wait for bytes until the next tick is due, decode and apply them
(:class:`~firmware_bridge.fwcore.FirmwareCore`), then run every tick that is due. Controller time
is tick time: tick ``k`` happens at ``t0 + k / tick_hz`` on the controller clock even when the OS
wakes the thread late, in which case the due ticks are run back to back. So the firmware rules
(the watchdog above all) are evaluated at the instants a real timer interrupt would have run them,
and their timing can be asserted exactly on a loaded machine; wall-clock lateness is reported
separately (``late_s_max``).

The controller clock can be offset and drift against the host's (tests of time sync).
Unplug/replug (tests of reconnect) run inside the controller thread, which owns the file
descriptors, so no descriptor is ever closed under a thread still waiting on it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from firmware_bridge.errors import ProtocolError, TransportError
from firmware_bridge.framing import FrameSplitter
from firmware_bridge.fwcore import FirmwareCore
from firmware_bridge.messages import Message, MsgType, decode, encode
from firmware_bridge.motor import MotorParams
from firmware_bridge.ptyport import LinkGuard, Pty, open_pty
from firmware_bridge.transport import FdTransport, Transport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmulatorConfig:
    n_joints: int  # joints this controller drives
    tick_hz: float = 1000.0  # control tick rate
    telemetry_hz: int = 50  # until the host configures another (docs/protocol.md boot defaults)
    watchdog_ms: int = 100  # until the host configures another
    motor: MotorParams = field(default_factory=MotorParams)
    clock_offset_us: int = 1_000_000  # controller clock at start (not 0: catches offset sign errors)
    clock_drift_ppm: float = 0.0  # controller clock runs this much fast against the host's
    max_catchup_ticks: int = 2000  # ticks run back to back after a late wake-up before skipping
    record_applied: bool = False  # keep (seq, positions, time) of every applied setpoint (tests)

    def __post_init__(self) -> None:
        if not 1 <= self.n_joints <= 32:
            raise ValueError(f"n_joints must be in 1..32, got {self.n_joints}")
        if not 1 <= self.tick_hz <= 20_000:
            raise ValueError(f"tick_hz must be in 1..20000, got {self.tick_hz}")
        if not 1 <= self.telemetry_hz <= self.tick_hz:
            raise ValueError(f"telemetry_hz must be in 1..tick_hz ({self.tick_hz}), got {self.telemetry_hz}")
        if not 5 <= self.watchdog_ms <= 60_000:
            raise ValueError(f"watchdog_ms must be in 5..60000, got {self.watchdog_ms}")


TransportWrap = Callable[[Transport], Transport]


class EmulatedController:
    """Runs a :class:`FirmwareCore` behind a pty. ``port`` is the path to give pyserial."""

    def __init__(
        self,
        config: EmulatorConfig,
        *,
        link_path: str | None = None,
        wrap: TransportWrap | None = None,
    ) -> None:
        self.config = config
        self._t_boot = time.monotonic()
        self.core = FirmwareCore(
            config.n_joints,
            config.tick_hz,
            self.clock_us,
            telemetry_hz=config.telemetry_hz,
            watchdog_ms=config.watchdog_ms,
            motor=config.motor,
        )
        self.applied: list[tuple[int, tuple[float, ...], int]] = []
        if config.record_applied:
            self.core.on_applied = lambda s, p, t: self.applied.append((s, tuple(p.tolist()), t))
        self._link_path = link_path
        self._guard: LinkGuard | None = None
        self._wrap = wrap
        self._pty: Pty | None = None
        self._transport: Transport | None = None
        self._splitter = FrameSplitter()
        self._tx_seq = 0
        self.tx_frames = 0
        self.tx_errors = 0
        self.late_s_max = 0.0  # worst wall-clock lateness of a wake-up
        self.skipped_ticks = 0
        self.telemetry_skipped = 0  # telemetry frames due after a late wake-up and not sent
        self.cond = threading.Condition()  # held while the core changes; notified after each batch
        self._commands: queue.Queue[tuple[Callable[[], None], threading.Event]] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._plug()

    # ---- clock -----------------------------------------------------------------------------
    def clock_us(self, t: float | None = None) -> int:
        """Controller clock (microseconds) at host monotonic time ``t`` (default: now)."""
        elapsed = (time.monotonic() if t is None else t) - self._t_boot
        return self.config.clock_offset_us + int(elapsed * 1e6 * (1.0 + self.config.clock_drift_ppm * 1e-6))

    # ---- port ------------------------------------------------------------------------------
    @property
    def port(self) -> str:
        if self._link_path is not None:
            return self._link_path
        if self._pty is None:
            raise RuntimeError("unplugged: no port")
        return self._pty.path

    @property
    def transport(self) -> Transport | None:
        return self._transport

    def _plug(self) -> None:
        pty = open_pty()
        if self._link_path is not None:
            try:  # refuses (LinkPathError) to replace anything that is not a stale emulator link
                if self._guard is None:
                    self._guard = LinkGuard(self._link_path, pty.path)
                else:
                    self._guard.claim(pty.path)
            except BaseException:
                pty.close()
                raise
        self._pty = pty
        t: Transport = FdTransport(pty.master, owns_fd=False)
        self._transport = self._wrap(t) if self._wrap else t
        self._splitter.reset()

    def _unplug(self) -> None:
        if self._guard is not None:
            self._guard.release()  # only while it still points at our pty
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._pty is not None:
            self._pty.close()  # the host's open slave now reads EOF/EIO: the adapter is gone
            self._pty = None

    def unplug(self, timeout_s: float = 5.0) -> None:
        """Emulate pulling the USB cable: the port disappears, the controller keeps running."""
        self._call(self._unplug, timeout_s)

    def replug(self, timeout_s: float = 5.0) -> None:
        """A new pty appears under the same link path (needs ``link_path``)."""
        if self._link_path is None:
            raise RuntimeError("replug needs link_path: a new pty gets a new /dev/pts name")
        self._call(self._plug, timeout_s)

    def _call(self, fn: Callable[[], None], timeout_s: float) -> None:
        if self._thread is None or not self._thread.is_alive():
            fn()
            return
        done = threading.Event()
        self._commands.put((fn, done))
        if not done.wait(timeout_s):
            raise TimeoutError(f"controller thread did not run {fn.__name__} within {timeout_s} s")

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> EmulatedController:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name="fw-emulator", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop and join the controller thread, close the pty, remove the link. Idempotent."""
        self._stop.set()
        if self._transport is not None:
            self._transport.cancel_read()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                log.error("emulator thread did not stop within 5 s")
        self._unplug()

    def __enter__(self) -> EmulatedController:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_until(self, predicate: Callable[[FirmwareCore], bool], timeout_s: float) -> bool:
        """Wait (on the condition, no polling sleeps) until ``predicate(core)`` holds."""
        with self.cond:
            return self.cond.wait_for(lambda: predicate(self.core), timeout_s)

    def inject_fault(self, bits: int) -> None:
        """Latch fault bits as the board would (e-stop input, over-temperature)."""
        with self.cond:
            self.core.latch(bits)

    # ---- controller thread -----------------------------------------------------------------
    def _send(self, msgs: list[Message]) -> None:
        t = self._transport
        for m in msgs:
            if t is None:
                return  # unplugged: frames go nowhere, as on a real UART with no cable
            data = encode(m, self._tx_seq, self.clock_us())
            self._tx_seq = (self._tx_seq + 1) & 0xFFFF
            try:
                t.write(data)
                self.tx_frames += 1
            except TransportError:
                self.tx_errors += 1

    def _run(self) -> None:
        cfg = self.config
        period = 1.0 / cfg.tick_hz
        t0 = time.monotonic()
        k = 0  # ticks run so far; tick k+1 is due at t0 + (k + 1) * period
        while not self._stop.is_set():
            while not self._commands.empty():
                fn, done = self._commands.get_nowait()
                fn()
                done.set()
            next_due = t0 + (k + 1) * period
            timeout = max(0.0, next_due - time.monotonic())
            data = b""
            t = self._transport
            if t is None:
                self._stop.wait(timeout)
            else:
                try:
                    data = t.read(4096, timeout)
                except TransportError:
                    data = b""
                    if not self._stop.is_set():
                        self._stop.wait(timeout)  # transport killed by fault injection: stay alive
            replies: list[Message] = []
            if data:
                now_us = self.clock_us()
                with self.cond:
                    overflows = self._splitter.overflows
                    packets = self._splitter.feed(data)
                    for _ in range(self._splitter.overflows - overflows):
                        self.core.count_bad()  # an over-long packet is a bad packet too
                    for packet in packets:
                        try:
                            frame = decode(packet)
                        except ProtocolError as exc:  # rx_bad, or NACK UNSUPPORTED for a 0x14..0x1F
                            replies += self.core.undecodable(exc, now_us)
                            continue
                        replies += self.core.handle(frame, now_us)
            now = time.monotonic()
            due = int((now - t0) / period) - k
            if due > 0:
                self.late_s_max = max(self.late_s_max, now - (t0 + (k + 1) * period))
                if due > cfg.max_catchup_ticks:
                    self.skipped_ticks += due - cfg.max_catchup_ticks
                    k += due - cfg.max_catchup_ticks
                    due = cfg.max_catchup_ticks
                out: list[Message] = []
                with self.cond:
                    for _ in range(due):
                        k += 1
                        out += self.core.tick(self.clock_us(t0 + k * period))
                    self.cond.notify_all()
                # after a late wake-up only the newest telemetry is worth sending; the others are
                # counted (docs/protocol.md, rule 6: a controller that runs late may skip them)
                tel = [m for m in out if m.TYPE == MsgType.TELEMETRY]
                self.telemetry_skipped += max(0, len(tel) - 1)
                replies += [m for m in out if m.TYPE != MsgType.TELEMETRY] + tel[-1:]
            elif replies:
                with self.cond:
                    self.cond.notify_all()
            self._send(replies)


def describe(ctrl: EmulatedController) -> str:
    c = ctrl.core
    return (
        f"ticks={c.ticks} rx_good={c.rx_good} rx_bad={c.rx_bad} rx_gap={c.rx_gap} rx_stale={c.rx_stale} "
        f"tx_frames={ctrl.tx_frames} faults=0x{c.faults:04x} late_max={ctrl.late_s_max * 1e3:.1f}ms"
    )

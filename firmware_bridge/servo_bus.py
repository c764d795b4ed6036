"""ServoBus: Feetech STS/SCS or Dynamixel 2.0 servos as a :class:`~firmware_bridge.interface.MotorBus`.

One thread owns the port. Every control period it runs one cycle on absolute monotonic deadlines
(``PeriodicThread``): sync write the newest goal positions (no replies), then sync read the state
block of every servo. The time a cycle may wait for replies comes from what is known, not from a
vendor's fixed timeout::

    reply deadline = send time + wire time of request and expected replies + reply_timeout_s
    hard deadline  = cycle start + cycle_budget * period

A servo that does not answer by the reply deadline is re-read (only the missing ones, at most
``retries`` times, never past the hard deadline); after that the cycle ends with that joint's last
good values marked stale (``Telemetry.stale``) and its ``measured_at`` unchanged, so its age grows
while every other joint stays fresh. Every other servo's reply is used whatever its position in
the chain, so one silent servo costs a few milliseconds, never the whole state.

A lost port (unplugged adapter: a read or write fails) goes through the one reconnect path of
every bus (:class:`~firmware_bridge.reconnect.PortKeeper`): ``connected`` is False at once, the
cycle keeps publishing telemetry with every joint stale (ages growing), and the port is reopened
with backoff; ``connection_made`` then runs the same setup as ``start()`` (ping, calibration,
torque on holding where the servos are) and counts a reconnect.

Error bits in a status packet are data (``Telemetry.servo_errors``, the newest per joint); their
fault bits latch in ``Telemetry.faults`` until ``clear_faults()``, as the firmware's do, and never
raise. ``close()`` always sends torque-off, broadcast twice, whatever bits are set.

Servos echo nothing and have no clock: ``Telemetry.last_applied_seq`` and ``controller_time_us``
are None on this bus.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from firmware_bridge import dynamixel as dx
from firmware_bridge.bus_base import BusBase
from firmware_bridge.calibration import Calibration
from firmware_bridge.config import JointLimits
from firmware_bridge.errors import LinkError, TransportError
from firmware_bridge.interface import BusHealth, Telemetry
from firmware_bridge.messages import Fault
from firmware_bridge.reconnect import PortKeeper
from firmware_bridge.servo_common import Packet, ServoError, fault_bits
from firmware_bridge.servo_dialects import dialect
from firmware_bridge.servo_port import BytePort, ServoPort
from firmware_bridge.servo_wire import Replies, ServoWire
from firmware_bridge.stats import Ring
from firmware_bridge.streamer import PeriodicThread

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServoBusConfig:
    """One bus of servos: what a device profile's ``[serial]`` table gives. Every field is plain
    data (picklable), so a bus can be built in another process from the same settings."""

    port: str  # /dev/ttyACM0, /dev/ttyUSB0, or the emulator's pty
    ids: tuple[int, ...]  # servo IDs in joint order
    baudrate: int = 1_000_000  # bits/s; used for the wire-time part of the reply deadline
    period_s: float = 0.02  # control period: one sync write + sync read per period
    calibration: Calibration | None = None  # None: whole range, joint zero at the middle tick
    limits: JointLimits | None = None  # None: the calibration's range
    reply_timeout_s: float = 0.003  # allowance beyond the replies' wire time (adapter + return delay)
    retries: int = 1  # re-reads of the servos that did not answer, within the same period
    cycle_budget: float = 0.8  # fraction of the period one write + read cycle may take
    watchdog_ms: int = 100  # Dynamixel Bus Watchdog (20 ms units, rounded up); 0 off. Feetech has none
    goal_speed: int | None = None  # raw speed limit written with every goal (Feetech GOAL_SPEED,
    #   ticks/s; Dynamixel PROFILE_VELOCITY, 0.229 rpm); None: the goal position alone
    acceleration: int | None = None  # raw acceleration written with every goal (None: not written)
    effort_scale: float = 0.0019  # Nm per native effort unit (STS3215 load 0.1 % of ~1.9 Nm)
    big_endian: bool = False  # Feetech SCS series (STS is little-endian)
    fast_sync_read: bool = False  # Dynamixel: one combined reply instead of one per servo
    auto_enable: bool = True  # torque on at start(), holding where the servos are
    write_homing: bool = True  # write the calibration (homing, Feetech limits) where the servos differ
    reconnect_min_s: float = 0.05  # first wait after a failed reopen of a lost port
    reconnect_max_s: float = 1.0  # the wait doubles up to this
    setup_timeout_s: float = 0.1  # per request while starting and for one-off commands (ping,
    #   calibration, torque), never in the cycle: a servo answers in ~1 ms, a USB adapter's latency
    #   timer adds up to 16 ms; only a servo that is missing waits it out (3 pings each)

    def __post_init__(self) -> None:
        ids = tuple(int(i) for i in self.ids)
        object.__setattr__(self, "ids", ids)
        if not ids or len(set(ids)) != len(ids) or not all(0 <= i <= 252 for i in ids):
            raise ValueError(f"ids must be distinct servo IDs in 0..252, got {list(ids)}")
        if not self.port:
            raise ValueError("port must be a non-empty path")
        if self.baudrate <= 0:
            raise ValueError(f"baudrate must be > 0, got {self.baudrate}")
        for name in ("period_s", "reply_timeout_s", "reconnect_min_s", "setup_timeout_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        if not self.reconnect_max_s >= self.reconnect_min_s:
            raise ValueError(f"reconnect_max_s {self.reconnect_max_s} must be >= reconnect_min_s")
        if self.setup_timeout_s > 10:
            raise ValueError(f"setup_timeout_s must be <= 10 s, got {self.setup_timeout_s!r}")
        if not 0 < self.cycle_budget <= 1:
            raise ValueError(f"cycle_budget must be in (0, 1], got {self.cycle_budget}")
        if not 0 <= self.retries <= 5:
            raise ValueError(f"retries must be in 0..5, got {self.retries}")
        if self.watchdog_ms and not 2 * self.period_s * 1000 <= self.watchdog_ms <= 2540:
            raise ValueError(
                f"watchdog_ms {self.watchdog_ms} must be 0 (off) or in {2 * self.period_s * 1000:g}..2540 "
                "(two control periods .. 127 x 20 ms)"
            )
        if self.calibration is not None and self.calibration.ids != ids:
            raise ValueError(f"calibration is for ids {list(self.calibration.ids)}, the bus has {list(ids)}")
        if self.limits is not None and self.limits.n_joints != len(ids):
            raise ValueError(f"limits are for {self.limits.n_joints} joints, the bus has {len(ids)} servos")


@dataclass(frozen=True)
class ServoHealth(BusHealth):
    """A vendor bus adds what only it has: replies that never came, checksums, per-servo errors."""

    reply_timeouts: tuple[int, ...]  # per joint: cycles in which the servo did not answer in time
    retries_used: int  # re-reads of missing servos
    checksum_errors: int
    servo_errors: tuple[int, ...]  # per joint: ServoError bits of the newest status packet
    watchdog_ms: int | None  # the Dynamixel Bus Watchdog in force; None: the servos have none


class _Counters:
    def __init__(self) -> None:
        self.cycles = 0
        self.frames_sent = 0
        self.frames_received = 0
        self.retries_used = 0
        self.reconnects = 0
        self.transport_errors = 0
        self.cycle_s = Ring(10_000)  # durations of the newest cycles


class ServoBus(BusBase):
    """Feetech or Dynamixel servos behind MotorBus. ``kind``: "feetech" or "dynamixel"."""

    def __init__(
        self,
        kind: str,
        config: ServoBusConfig,
        *,
        open_port: Callable[[], BytePort] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kind = kind
        self.d = dialect(kind, big_endian=config.big_endian, fast_sync_read=config.fast_sync_read)
        self.config = config
        self.cal = config.calibration or Calibration.centered(config.ids)
        if config.limits is not None:
            limits = config.limits
        else:
            lo, hi = self.cal.limits()
            n = len(config.ids)
            limits = JointLimits(lo, hi, (6.0,) * n, (1.0,) * n)
        super().__init__(limits)
        self._ids = list(config.ids)
        self._index = {sid: j for j, sid in enumerate(self._ids)}
        self._clock = clock
        self._wire: ServoWire | None = None
        self._parser = self.d.parser()  # the wire's, once connected (its checksum counts)
        self._checksum_base = 0
        n, width = len(self._ids), self.d.state_len
        # the newest good state block of each servo, as received (decoded once per publish)
        self._rawbuf = bytearray(n * width)
        self._raw = np.frombuffer(self._rawbuf, np.uint8).reshape(n, width)
        # per joint, as Python lists: six element updates a cycle cost less than numpy scalars
        self._measured = [-math.inf] * n  # host time each joint's block arrived
        self._fresh = [False] * n  # read in the newest cycle
        self._seen = [False] * n  # read at least once since the last (re)connect
        self._answered = [True] * n  # answered in its latest cycle (worth a retry)
        self._errors = [0] * n  # ServoError bits of each servo's newest status packet
        self._latched = 0  # Fault bits since the last clear_faults()
        self._timeouts = [0] * n
        self._wd_tripped = False
        self._wd_check_every = max(1, round(1.0 / config.period_s))  # cycles between watchdog checks
        self._read_all = self.d.read_state(self._ids, fast=True)  # the same request every cycle
        self._last_cycle = clock()
        self._target: tuple[float, ...] | None = None
        self._telemetry: Telemetry | None = None
        self._enabled = False
        self._configured = False
        self._closed = False
        self.setpoints_sent = 0
        self.stats = _Counters()
        self._commands: queue.Queue[tuple[Callable[[], None], threading.Event, list[BaseException]]] = (
            queue.Queue()
        )
        opener = open_port or (lambda: ServoPort(config.port, config.baudrate))
        self._keeper: PortKeeper[BytePort] = PortKeeper(
            opener, self, min_s=config.reconnect_min_s, max_s=config.reconnect_max_s, clock=clock
        )
        self.stream = PeriodicThread(1.0 / config.period_s, self._tick, clock=clock, name=f"{kind}-bus")
        self._streaming = False

    @property
    def _port(self) -> BytePort | None:
        return self._keeper.port

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self, stream: bool = True) -> None:
        """Open the port, find every servo, apply the calibration, read where they are and (with
        ``auto_enable``) enable torque holding there; then run one cycle per period (``stream``).
        Raises TransportError or LinkError after releasing the port."""
        try:
            if self._keeper.acquire() is None:
                err = self._keeper.last_error
                raise err if err is not None else LinkError(f"bus on {self.config.port}: not opened")
        except BaseException:
            self.close()
            raise
        if stream:
            self._streaming = True
            self.stream.start()

    def __enter__(self) -> ServoBus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the cycle, send torque-off to every servo (broadcast, twice: it needs no reply, so
        no error bit and no silent servo can stop it), release the port. Never raises."""
        if self._closed:
            return
        self._closed = True
        try:
            self.stream.stop()
        finally:
            port = self._port
            if port is not None:
                for _ in range(2):
                    try:
                        port.write(self.d.torque(self.d.broadcast, False), self._clock() + 0.05)
                        self.stats.frames_sent += 1
                    except TransportError:
                        log.warning("torque-off not sent on %s: port gone", self.config.port)
                        break
                self._enabled = False
            self._keeper.close()

    # ---- the port's owner (PortKeeper callbacks, bus thread) --------------------------------
    def connection_made(self, port: BytePort) -> None:
        """A port is open (at start, or after a loss): the same setup every time."""
        self._wire = ServoWire(port, self.d, self.config.baudrate, self._clock, counts=self.stats)
        self._checksum_base += self._parser.checksum_errors  # totals survive the new parser
        self._parser = self._wire.parser
        self._seen = [False] * len(self._ids)
        self._answered = [True] * len(self._ids)
        self._setup()
        if self._keeper.generation > 1:
            self.stats.reconnects += 1
            log.info("%s bus on %s: reconnected and configured", self.kind, self.config.port)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._configured = False
        self._fresh = [False] * len(self._ids)
        if exc is not None:
            self._publish(self._clock())  # every joint stale at once, ages growing from here

    def set_torque(self, enable: bool) -> None:
        """Enable (goal = present position first, so nothing jumps) or disable torque."""
        self._run(lambda: self._torque(enable))

    def clear_faults(self) -> None:
        """Forget latched fault bits and clear a tripped Dynamixel bus watchdog (write 0, then the
        setting again); enables torque again with ``auto_enable``. Error bits a servo still
        reports latch again at the next cycle."""

        def clear() -> None:
            if self.d.has_watchdog:
                for sid in self._ids:
                    self._request(self.d.watchdog(sid, 0), [sid], 0, self.config.setup_timeout_s)
            self._wd_tripped = False
            self._errors = [0] * len(self._ids)
            self._latched = 0
            if self.config.auto_enable:
                self._torque(True)
            self._publish(self._clock())

        self._run(clear)

    def _run(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the thread that owns the port (between two cycles). It may take what its
        requests may take (torque on: a state read, then a torque and a watchdog write per servo,
        each up to ``setup_timeout_s`` plus the write allowance), a cycle before it, and slack."""
        if self._port is None:
            raise LinkError(f"bus on {self.config.port} is not connected")
        if not self._streaming:
            fn()
            return
        cfg = self.config
        timeout_s = 2.0 + cfg.period_s + (4 + 3 * len(self._ids)) * (cfg.setup_timeout_s + 0.05)
        done, err = threading.Event(), []
        self._commands.put((fn, done, err))
        if not done.wait(timeout_s):
            raise LinkError(f"bus on {self.config.port}: command not run within {timeout_s} s")
        if err:
            raise err[0]

    # ---- MotorBus --------------------------------------------------------------------------
    def _store_target_impl(self, target: tuple[float, ...]) -> None:
        self._target = target

    def latest_telemetry(self) -> Telemetry | None:
        return self._telemetry

    def health(self) -> ServoHealth:
        t = self._telemetry
        cyc = self.stats.cycle_s.percentiles((50.0, 99.0), 1e3)
        return ServoHealth(
            connected=self._keeper.connected,
            configured=self._configured and self._keeper.connected,
            torque_enabled=self._enabled,
            faults=self._latched,
            frames_sent=self.stats.frames_sent,
            frames_received=self.stats.frames_received,
            decode_errors=self._parser_errors(),
            setpoints_sent=self.setpoints_sent,
            setpoints_rejected=self.setpoints_rejected,
            setpoints_clamped=self.setpoints_clamped,
            reconnects=self.stats.reconnects,
            stream_overruns=self.stream.overruns,
            rtt_p50_ms=cyc[0] if cyc else None,
            rtt_p99_ms=cyc[1] if cyc else None,
            telemetry_age_s=(self._clock() - t.received_at) if t else None,
            stale_joints=self._fresh.count(False),
            missed_replies=sum(self._timeouts),
            reply_timeouts=tuple(self._timeouts),
            retries_used=self.stats.retries_used,
            checksum_errors=self._parser_errors(),
            servo_errors=tuple(self._errors),
            watchdog_ms=self.config.watchdog_ms if self.d.has_watchdog else None,
        )

    def _parser_errors(self) -> int:
        return self._checksum_base + self._parser.checksum_errors

    # ---- requests (bus thread only) --------------------------------------------------------
    def _live_port(self) -> BytePort:
        port = self._port
        if port is None:
            raise LinkError(f"bus on {self.config.port} is not connected")
        return port

    def _exchange(self, request: bytes, ids: Sequence[int], n_params: int, timeout_s: float,
                  hard_deadline: float, before: bytes = b"") -> Replies:  # fmt: skip
        """One request and its replies on the port (ServoWire.exchange): id -> (packet, arrival)."""
        wire = self._wire
        if wire is None or self._port is None:
            raise LinkError(f"bus on {self.config.port} is not connected")
        return wire.exchange(request, ids, n_params, timeout_s, hard_deadline, before)

    def _request(
        self, request: bytes, ids: Sequence[int], n_params: int, timeout_s: float
    ) -> dict[int, Packet]:
        got = self._exchange(request, ids, n_params, timeout_s, self._clock() + timeout_s)
        return {sid: p for sid, (p, _) in got.items()}

    def _read_state(self, ids: Sequence[int], hard_deadline: float, goals: bytes = b"") -> None:
        """Sync read ``ids``; re-read the missing ones while retries and time are left. A servo that
        did not answer in the previous cycle either is not re-read: a servo that stays silent
        costs one reply deadline per cycle, not one per attempt."""
        d, cfg, idx = self.d, self.config, self._index
        width, buf = d.state_len, self._rawbuf
        missing = list(ids)
        for attempt in range(cfg.retries + 1):
            if attempt:
                retry = [i for i in missing if self._answered[idx[i]]]
                for sid in missing:
                    self._answered[idx[sid]] = False
                missing = retry
                if not missing or self._clock() >= hard_deadline:
                    break
                self.stats.retries_used += 1
            req = self._read_all if missing == self._ids else d.read_state(missing, fast=attempt == 0)
            got = self._exchange(req, missing, width, cfg.reply_timeout_s, hard_deadline,
                                 goals if attempt == 0 else b"")  # fmt: skip
            for sid, (pkt, t) in got.items():
                j = idx[sid]
                err = int(d.error(pkt.code)) if pkt.code else 0
                if self._wd_tripped:
                    err |= ServoError.WATCHDOG
                self._errors[j] = err
                if err:
                    self._latched |= fault_bits(ServoError(err))
                if len(pkt.params) < width:
                    continue  # an error status without data: the values stay stale
                buf[j * width : (j + 1) * width] = pkt.params[:width]
                self._measured[j] = t
                self._fresh[j] = self._seen[j] = self._answered[j] = True
            missing = [i for i in missing if i not in got]
            if not missing:
                return
        for j, fresh in enumerate(self._fresh):
            if not fresh:
                self._timeouts[j] += 1
                self._answered[j] = False

    def _ticks(self) -> np.ndarray:
        """(n,) raw present positions of the newest state blocks."""
        return self.d.decode_block(self._raw)[0]

    def _torque(self, enable: bool) -> None:
        d = self.d
        port = self._live_port()
        if not enable:
            for _ in range(2):
                port.write(d.torque(d.broadcast, False), self._clock() + 0.05)
                self.stats.frames_sent += 1
            self._enabled = False
            return
        if not all(self._seen):
            self._read_state(self._ids, self._clock() + self.config.setup_timeout_s * 4)
        if not all(self._seen):
            raise LinkError(f"cannot enable torque: no position from servos {self._missing_ids()}")
        # hold where the servos are: goal = present position, before torque goes on
        ticks = self._ticks()
        port.write(d.goals(self._ids, ticks, self.config.goal_speed, self.config.acceleration),
                   self._clock() + 0.05)  # fmt: skip
        self._target = tuple(self.cal.to_radians(ticks).tolist())
        for sid in self._ids:
            got = self._request(d.torque(sid, True), [sid], 0, self.config.setup_timeout_s)
            if sid in got:
                self._errors[self._index[sid]] = int(d.error(got[sid].code))
        if d.has_watchdog and self.config.watchdog_ms:
            for sid in self._ids:
                self._request(d.watchdog(sid, self.config.watchdog_ms), [sid], 0, self.config.setup_timeout_s)
        self._enabled = True

    def _missing_ids(self) -> list[int]:
        return [i for i, s in zip(self._ids, self._seen, strict=True) if not s]

    def _setup(self) -> None:
        d, cfg = self.d, self.config
        self._configured = False
        missing = []
        for sid in self._ids:
            for _ in range(3):
                if sid in self._request(d.ping(sid), [sid], 3, self.config.setup_timeout_s):
                    break
            else:
                missing.append(sid)
        if missing:
            raise LinkError(
                f"no reply to ping from servo ids {missing} on {cfg.port} (wiring, id, baud rate?)"
            )
        if d.has_watchdog:  # a trip left from an earlier session refuses every goal: clear it
            for sid in self._ids:
                self._request(d.watchdog(sid, 0), [sid], 0, self.config.setup_timeout_s)
            self._wd_tripped = False
        if cfg.calibration is not None and cfg.write_homing:
            self._apply_calibration()
        for _ in range(3):  # as the pings: a reply or two may be late while starting
            self._read_state(self._ids, self._clock() + self.config.setup_timeout_s * 4)
            if all(self._seen):
                break
        else:
            raise LinkError(f"no state read from servos {self._missing_ids()} on {cfg.port}")
        self._publish(self._clock())
        self._configured = True
        if cfg.auto_enable:
            self._torque(True)

    def _apply_calibration(self) -> None:
        """Write the calibration into the servos where they hold other values, as LeRobot's
        write_calibration does (Feetech: homing offset and position limits; Dynamixel: homing)."""
        d, wire = self.d, self._wire
        assert wire is not None  # connection_made made it
        for m in self.cal.motors:
            want = d.calibration_values(m.homing_offset, m.range_min, m.range_max)
            have = []
            for addr, n, sign in d.calibration_registers:
                data = wire.read(m.servo_id, addr, n, self.config.setup_timeout_s)
                if data is None:
                    raise LinkError(f"servo {m.servo_id}: calibration register {addr} not readable")
                have.append(d.decode_register(data, sign))
            if tuple(have) == want:
                continue
            log.info("servo %d: writing calibration %s (it held %s)", m.servo_id, want, tuple(have))
            for pkt in d.write_calibration(m.servo_id, want):
                self._request(pkt, [m.servo_id], 0, self.config.setup_timeout_s)

    # ---- the cycle -------------------------------------------------------------------------
    def cycle(self, start: float | None = None) -> float:
        """One sync write + sync read; returns its duration in seconds. The stream thread calls it
        every period; a benchmark or a test without the thread may call it directly. Raises
        TransportError when the port is gone (the stream hands it to the reconnect path)."""
        t0 = self._clock() if start is None else start
        hard = t0 + self.config.cycle_budget * self.config.period_s
        self._fresh = [False] * len(self._ids)
        target = self._target
        goals = b""
        if self._enabled and target is not None and not self._wd_tripped:
            ticks = self.cal.to_ticks(np.asarray(target))
            goals = self.d.goals(self._ids, ticks, self.config.goal_speed, self.config.acceleration)
            self.setpoints_sent += 1
        self._read_state(self._ids, hard, goals)  # the goals go out in the same write as the read
        gap = t0 - self._last_cycle  # silent longer than the watchdog: it may have tripped, look now
        self._last_cycle = t0
        if (
            self.d.has_watchdog
            and self._enabled
            and self.config.watchdog_ms
            and (self.stats.cycles % self._wd_check_every == 0 or gap * 1000 > self.config.watchdog_ms)
        ):
            self._check_watchdog(hard)
        now = self._clock()
        self._publish(now)
        self.stats.cycles += 1
        dt = now - t0
        self.stats.cycle_s.append(dt)
        return dt

    def _check_watchdog(self, hard_deadline: float) -> None:
        """Once a second, in the cycle's spare time: has a servo's Bus Watchdog tripped (register 98
        reads 0xFF)? Then the servo refuses goals until clear_faults(); report it as a fault."""
        if self._clock() + self.config.reply_timeout_s >= hard_deadline:
            return
        req = dx.sync_read(dx.BUS_WATCHDOG, 1, self._ids)
        got = self._exchange(req, self._ids, 1, self.config.reply_timeout_s, hard_deadline)
        for sid, (pkt, _) in got.items():
            if pkt.params[:1] == b"\xff":
                self._wd_tripped = True
                self._errors[self._index[sid]] |= ServoError.WATCHDOG
                self._latched |= Fault.WATCHDOG

    def _tick(self, k: int, deadline: float) -> None:
        while not self._commands.empty():
            fn, done, err = self._commands.get_nowait()
            try:
                fn()
            except Exception as exc:  # handed to the caller, who raises it
                err.append(exc)
                port = self._port
                if isinstance(exc, TransportError) and port is not None:
                    self._keeper.lost(port, exc)
            finally:
                done.set()
        port = self._port
        if port is None:
            if self._keeper.acquire() is None:  # reopened and configured when the backoff allows
                self._publish(self._clock())
            self.stream.resync()  # an attempt may take many periods
            return
        try:
            self.cycle(deadline)
        except TransportError as exc:
            self.stats.transport_errors += 1
            log.warning("%s bus on %s: port lost (%s); reconnecting", self.kind, self.config.port, exc)
            self._keeper.lost(port, exc)

    def _publish(self, now: float) -> None:
        pos, vel, eff = self.d.decode_block(self._raw)
        stale = ~np.array(self._fresh, dtype=bool)
        stale.setflags(write=False)
        measured = np.array(self._measured)
        measured.setflags(write=False)
        self._telemetry = Telemetry(
            positions=_frozen(self.cal.to_radians(pos)),
            velocities=_frozen(self.cal.speed_to_radians(vel)),
            efforts=_frozen(eff * self.config.effort_scale),
            measured_at=measured,
            received_at=now,
            sent_at=None,
            torque_enabled=self._enabled,
            holding=self._wd_tripped,
            faults=self._latched,
            stale=stale,
            servo_errors=tuple(self._errors),
        )


def _frozen(a: np.ndarray) -> np.ndarray:
    out = np.asarray(a, dtype=np.float32)
    out.setflags(write=False)
    return out

"""Emulated servo buses on a pseudo-terminal: N Feetech STS or Dynamixel X servos, each with its
control table and a motor model, answering ping, read, write, sync write, sync read (Dynamixel
also fast sync read and bulk read), so the runtime, the tests and the vendor SDKs drive them
through pyserial exactly as a real bus (``legato firmware emulate --bus feetech --ids 1-6``).

One thread owns the pty: wait for bytes until the next motor tick is due, answer each complete
instruction at once (the replies of one instruction in one write, as they would follow each other
on the wire), run the due ticks (bounded catch-up, as the controller emulator does). Tests make a
servo ``silent`` (it never answers) or set the ``error`` byte it reports, and ``unplug()`` /
``replug()`` the bus adapter (the servos keep their state and torque, as on a real arm whose USB
cable is pulled while the servo supply stays on).

Like real servos, the emulated ones drop an incomplete packet when the next byte is more than
``inter_byte_timeout_s`` late, so a truncated header (``FF FF ID 255`` and silence) costs one
packet, not every packet until 255 more bytes have arrived.

Position registers follow the vendors: Feetech reports ``encoder - homing_offset``, Dynamixel
``encoder + homing_offset``; the encoder is 0..ticks_per_rev with the joint's zero in the middle.
The Dynamixel Bus Watchdog (register 98) trips when no instruction reached the servo for
``value x 20 ms`` while torque is on: the servo holds where it is, register 98 reads 0xFF and goal
writes are ignored until 98 is written 0.
"""

from __future__ import annotations

import collections
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from firmware_bridge import dynamixel as dx
from firmware_bridge import feetech as ft
from firmware_bridge.calibration import Calibration
from firmware_bridge.errors import TransportError
from firmware_bridge.motor import MotorModel, MotorParams
from firmware_bridge.ptyport import LinkGuard, Pty, open_pty
from firmware_bridge.servo_common import Packet
from firmware_bridge.transport import FdTransport

VOLTAGE_DV = 120  # 12.0 V
TEMPERATURE_C = 32


def parse_ids(text: str) -> tuple[int, ...]:
    """``"1-6"``, ``"1,2,5"`` or ``"1-3,7"`` -> servo IDs."""
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        lo, _, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError(f"servo ids {text!r}: expected e.g. 1-6 or 1,2,5") from None
        if not 0 <= a <= b <= 252:
            raise ValueError(f"servo ids {text!r}: each id in 0..252, ranges low-high")
        ids.extend(range(a, b + 1))
    if len(set(ids)) != len(ids):
        raise ValueError(f"servo ids {text!r} repeat")
    return tuple(ids)


@dataclass(frozen=True)
class ServoEmulatorConfig:
    kind: str  # "feetech" or "dynamixel"
    ids: tuple[int, ...]  # servos on the bus
    tick_hz: float = 1000.0  # motor model rate
    ticks_per_rev: int = 4096
    motor: MotorParams = field(default_factory=lambda: MotorParams(kp=8.0, kd=0.3, torque_max=2.0))
    big_endian: bool = False  # Feetech SCS
    # a packet whose next byte is later than this is dropped (an assumption of the emulator: the
    # vendors document a receive timeout but not its value; 10 ms is far above any byte gap a host
    # writing whole packets produces, even on a loaded machine)
    inter_byte_timeout_s: float = 0.01

    def __post_init__(self) -> None:
        if self.kind not in ("feetech", "dynamixel"):
            raise ValueError(f"unknown servo bus {self.kind!r}; allowed: feetech, dynamixel")
        if not self.ids or not all(0 <= i <= 252 for i in self.ids) or len(set(self.ids)) != len(self.ids):
            raise ValueError(f"ids must be distinct servo IDs in 0..252, got {list(self.ids)}")
        if not 1 <= self.tick_hz <= 20_000:
            raise ValueError(f"tick_hz must be in 1..20000, got {self.tick_hz}")
        if not 0 < self.inter_byte_timeout_s <= 1:
            raise ValueError(f"inter_byte_timeout_s must be in (0, 1], got {self.inter_byte_timeout_s}")


class _Servo:
    """One servo's control table and its register side effects."""

    def __init__(self, kind: str, sid: int, big: bool) -> None:
        self.kind, self.id, self.big = kind, sid, big
        self.table = bytearray(256)
        self.error = 0  # status error byte it reports (tests set it)
        self.silent = False  # never answers (tests set it)
        self.last_rx = 0.0  # host monotonic time of the last instruction that reached it
        if kind == "feetech":
            self.table[0], self.table[1] = 3, 10  # firmware version 3.10 (LeRobot checks they agree)
            self.table[ft.MODEL_NUMBER : ft.MODEL_NUMBER + 2] = ft.word(ft.STS3215_MODEL, big)
            self.table[ft.ID_REG] = sid
            self.table[ft.MAX_ANGLE_LIMIT : ft.MAX_ANGLE_LIMIT + 2] = ft.word(4095, big)  # factory 0..4095
            self.table[ft.LOCK] = 1
        else:
            self.table[dx.MODEL_NUMBER : dx.MODEL_NUMBER + 2] = dx.XM430_W350_MODEL.to_bytes(2, "little")
            self.table[7] = sid

    # register views
    @property
    def torque(self) -> bool:
        return bool(self.table[ft.TORQUE_ENABLE if self.kind == "feetech" else dx.TORQUE_ENABLE])

    @property
    def homing(self) -> int:
        if self.kind == "feetech":
            return ft.from_sign_magnitude(
                ft.unword(self.table[ft.HOMING_OFFSET : ft.HOMING_OFFSET + 2], self.big), 11
            )
        return int.from_bytes(self.table[dx.HOMING_OFFSET : dx.HOMING_OFFSET + 4], "little", signed=True)

    def goal_encoder(self) -> int:
        if self.kind == "feetech":
            raw = ft.from_sign_magnitude(
                ft.unword(self.table[ft.GOAL_POSITION : ft.GOAL_POSITION + 2], self.big), 15
            )
            t, big = self.table, self.big
            lo = ft.unword(t[ft.MIN_ANGLE_LIMIT : ft.MIN_ANGLE_LIMIT + 2], big)
            hi = ft.unword(t[ft.MAX_ANGLE_LIMIT : ft.MAX_ANGLE_LIMIT + 2], big)
            if lo < hi:  # position mode keeps the goal within the angle limits (0, 0: multi-turn)
                raw = min(max(raw, lo), hi)
            return raw + self.homing
        return (
            int.from_bytes(self.table[dx.GOAL_POSITION : dx.GOAL_POSITION + 4], "little", signed=True)
            - self.homing
        )

    def set_goal_encoder(self, enc: int) -> None:
        if self.kind == "feetech":
            self.table[ft.GOAL_POSITION : ft.GOAL_POSITION + 2] = ft.word(
                ft.to_sign_magnitude(enc - self.homing, 15), self.big
            )
        else:
            self.table[dx.GOAL_POSITION : dx.GOAL_POSITION + 4] = (enc + self.homing).to_bytes(
                4, "little", signed=True
            )

    @property
    def watchdog_tripped(self) -> bool:
        return self.kind == "dynamixel" and self.table[dx.BUS_WATCHDOG] == 0xFF

    def present(self, enc: float, vel_ticks: float, load: float) -> None:
        """Refresh the read-only state registers from the motor."""
        t, big = self.table, self.big
        if self.kind == "feetech":
            t[56:58] = ft.word(ft.to_sign_magnitude(int(round(enc)) - self.homing, 15), big)
            t[58:60] = ft.word(ft.to_sign_magnitude(max(-32767, min(32767, int(vel_ticks))), 15), big)
            t[60:62] = ft.word(ft.to_sign_magnitude(max(-1000, min(1000, int(load * 1000))), 10), big)
            t[62], t[63] = VOLTAGE_DV, TEMPERATURE_C
        else:
            units = int(vel_ticks * 60.0 / (dx.TICKS_PER_REV * dx.VELOCITY_UNIT_RPM))
            t[126:128] = int(load * 1000).to_bytes(2, "little", signed=True)
            t[128:132] = units.to_bytes(4, "little", signed=True)
            t[132:136] = (int(round(enc)) + self.homing).to_bytes(4, "little", signed=True)
            t[144:146] = VOLTAGE_DV.to_bytes(2, "little")
            t[146] = TEMPERATURE_C


class EmulatedServoBus:
    """Servos behind a pty. ``port`` is the path to give pyserial or a vendor SDK."""

    def __init__(self, config: ServoEmulatorConfig, *, link_path: str | None = None) -> None:
        self.config = config
        self.kind = config.kind
        self.servos = {sid: _Servo(config.kind, sid, config.big_endian) for sid in config.ids}
        n = len(config.ids)
        self._tpr = config.ticks_per_rev
        self.motor = MotorModel(n, config.motor)
        self._v_max = np.full(n, 6.0)
        self._hold = np.zeros(n)
        self._parser: ft.Parser | dx.Parser = ft.Parser() if self.kind == "feetech" else dx.Parser()
        self.received: collections.deque[Packet] = collections.deque(maxlen=10_000)  # instructions in
        self.replies = 0
        self.partial_dropped = 0  # incomplete packets dropped after the inter-byte timeout
        self._last_rx = -math.inf  # host monotonic time of the last byte received
        self.cond = threading.Condition()
        self._link_path = link_path
        self._guard: LinkGuard | None = None
        self._pty: Pty | None = None
        self._t: FdTransport | None = None
        self._commands: queue.Queue[tuple[Callable[[], None], threading.Event]] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._plug()
        for j, s in enumerate(self.servos.values()):  # goal = where it stands
            s.set_goal_encoder(self._tpr // 2)
            self._refresh(j, s)

    @property
    def port(self) -> str:
        if self._link_path is not None:
            return self._link_path
        if self._pty is None:
            raise RuntimeError("unplugged: no port")
        return self._pty.path

    # ---- the adapter -----------------------------------------------------------------------
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
        self._t = FdTransport(pty.master, owns_fd=False)
        self._parser.reset()

    def _unplug(self) -> None:
        if self._guard is not None:
            self._guard.release()  # only while it still points at our pty
        if self._t is not None:
            self._t.close()
            self._t = None
        if self._pty is not None:
            self._pty.close()  # the host's open slave now reads EOF/EIO: the adapter is gone
            self._pty = None

    def unplug(self, timeout_s: float = 5.0) -> None:
        """Emulate pulling the bus adapter's USB cable: the port disappears, the servos keep
        running (torque, goals and positions unchanged)."""
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
        t = self._t
        if t is not None:
            t.cancel_read()
        if not done.wait(timeout_s):
            raise TimeoutError(f"servo emulator thread did not run {fn.__name__} within {timeout_s} s")

    # ---- test controls ---------------------------------------------------------------------
    def set_silent(self, sid: int, silent: bool = True) -> None:
        with self.cond:
            self.servos[sid].silent = silent

    def set_error(self, sid: int, error: int) -> None:
        with self.cond:
            self.servos[sid].error = error

    def wait_until(self, predicate: Callable[[EmulatedServoBus], bool], timeout_s: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: predicate(self), timeout_s)

    def positions_rad(self) -> np.ndarray:
        return self.motor.q.copy()

    def goals_rad(self) -> np.ndarray:
        """The targets the servos drive to now (their goal registers, encoder zero at mid-turn),
        rad; the caller holds ``cond``."""
        k = 2 * math.pi / self._tpr
        return np.array([(s.goal_encoder() - self._tpr // 2) * k for s in self.servos.values()])

    def set_goals_rad(self, q: np.ndarray) -> np.ndarray:
        """Set every goal register to ``q`` (rad, rounded to ticks), as a host write would; returns
        the targets now held (``goals_rad``). The caller holds ``cond``."""
        k = 2 * math.pi / self._tpr
        for qj, s in zip(np.asarray(q, np.float64), self.servos.values(), strict=True):
            s.set_goal_encoder(int(np.rint(qj / k)) + self._tpr // 2)
        return self.goals_rad()

    def load_calibration(self, cal: Calibration) -> None:
        """Hold ``cal`` in the servos' registers, as an arm calibrated with that file does (Feetech:
        homing offset and position limits in EEPROM; Dynamixel: the homing offset), written the
        way a host writes them (EEPROM unlocked, written, locked again); every goal then equals
        where its servo stands. Raises ValueError for a motor whose id is not on the bus."""
        from firmware_bridge.servo_dialects import dialect

        missing = [m.servo_id for m in cal.motors if m.servo_id not in self.servos]
        if missing:
            raise ValueError(f"calibration names servo ids {missing}, not on this bus {list(self.servos)}")
        d = dialect(self.kind, big_endian=self.config.big_endian)
        parser = d.parser()
        fe = self.kind == "feetech"
        with self.cond:
            for m in cal.motors:
                s = self.servos[m.servo_id]
                values = d.calibration_values(m.homing_offset, m.range_min, m.range_max)
                for pkt in parser.feed(b"".join(d.write_calibration(m.servo_id, values))):
                    p = pkt.params
                    addr, data = (p[0], p[1:]) if fe else (int.from_bytes(p[0:2], "little"), p[2:])
                    self._write(s, addr, data)
            for j, s in enumerate(self.servos.values()):
                s.set_goal_encoder(int(round(self._enc(j))))
            self.cond.notify_all()

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> EmulatedServoBus:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name=f"{self.kind}-emulator", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._t is not None:
            self._t.cancel_read()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._unplug()

    def __enter__(self) -> EmulatedServoBus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the servos ------------------------------------------------------------------------
    def _enc(self, j: int) -> float:
        return self.motor.q[j] * self._tpr / (2 * math.pi) + self._tpr // 2

    def _refresh(self, j: int, s: _Servo) -> None:
        p = self.config.motor
        s.present(self._enc(j), self.motor.v[j] * self._tpr / (2 * math.pi), self.motor.tau[j] / p.torque_max)

    def _tick(self, dt: float, now: float) -> None:
        target = self._hold.copy()
        on = np.zeros(len(self.servos), dtype=bool)
        for j, s in enumerate(self.servos.values()):
            if s.kind == "dynamixel" and s.torque and not s.watchdog_tripped:
                wd = s.table[dx.BUS_WATCHDOG]
                if 0 < wd < 0xFF and now - s.last_rx > wd * dx.WATCHDOG_UNIT_MS / 1000.0:
                    s.table[dx.BUS_WATCHDOG] = 0xFF
                    self._hold[j] = self.motor.q[j]
            on[j] = s.torque
            if s.torque and not s.watchdog_tripped:
                target[j] = (s.goal_encoder() - self._tpr // 2) * 2 * math.pi / self._tpr
                self._hold[j] = self.motor.q[j]
            elif s.torque:
                target[j] = self._hold[j]
        if on.all():
            self.motor.step(target, dt, self._v_max)
        else:  # a motor with torque off coasts: step it with its own position as the target, no gain
            q0 = self.motor.q.copy()
            self.motor.step(np.where(on, target, q0), dt, self._v_max)
            off = ~on
            self.motor.v[off] *= 0.9
            self.motor.tau[off] = 0.0
        for j, s in enumerate(self.servos.values()):
            self._refresh(j, s)

    def _status(self, sid: int, params: bytes = b"") -> bytes:
        s = self.servos[sid]
        if self.kind == "feetech":
            return ft.packet(sid, s.error, params)
        return dx.status(sid, s.error, params)

    def _write(self, s: _Servo, addr: int, data: bytes) -> None:
        if self.kind == "dynamixel":
            if s.watchdog_tripped and addr <= dx.GOAL_POSITION < addr + len(data) and addr != dx.BUS_WATCHDOG:
                return  # a tripped watchdog refuses goals
        elif addr < ft.TORQUE_ENABLE and s.table[ft.LOCK]:
            return  # EEPROM (below address 40) is locked until LOCK is written 0
        j = list(self.servos).index(s.id)
        was_on = s.torque
        s.table[addr : addr + len(data)] = data
        if not was_on and s.torque:
            self._hold[j] = self.motor.q[j]
        self._refresh(j, s)  # a new homing offset shows in the present position at once

    def _handle(self, pkt: Packet, now: float) -> list[bytes]:
        """The replies to one instruction; a malformed one (parameters too short for it) gets
        none, as a servo ignores what it cannot parse."""
        try:
            return self._answer(pkt, now)
        except (IndexError, ValueError):
            return []

    def _answer(self, pkt: Packet, now: float) -> list[bytes]:
        self.received.append(pkt)
        sid, inst, p = pkt.servo_id, pkt.code, pkt.params
        for s in self.servos.values():
            if sid in (s.id, 0xFE):
                s.last_rx = now
        fe = self.kind == "feetech"
        if sid in self.servos:
            s = self.servos[sid]
            if s.silent:
                return []
            if inst == 0x01:  # PING
                return [self._status(sid, b"" if fe else dx.XM430_W350_MODEL.to_bytes(2, "little") + b"\x2d")]
            if inst == 0x02:  # READ
                addr, n = (
                    (p[0], p[1])
                    if fe
                    else (int.from_bytes(p[0:2], "little"), int.from_bytes(p[2:4], "little"))
                )
                return [self._status(sid, bytes(s.table[addr : addr + n]))]
            if inst == 0x03:  # WRITE
                addr, data = (p[0], p[1:]) if fe else (int.from_bytes(p[0:2], "little"), p[2:])
                self._write(s, addr, data)
                return [self._status(sid)]
            return []
        if sid == 0xFE and inst == 0x01:  # broadcast PING: every servo answers, in id order
            return [r for i, sv in sorted(self.servos.items()) if not sv.silent
                    for r in self._answer(Packet(i, 0x01, b""), now)]  # fmt: skip
        if sid == 0xFE and inst == 0x03:  # broadcast WRITE: every servo, no reply
            addr, data = (p[0], p[1:]) if fe else (int.from_bytes(p[0:2], "little"), p[2:])
            for s in self.servos.values():
                self._write(s, addr, data)
            return []
        if sid != 0xFE:
            return []
        if fe:
            addr, n, rest = p[0], p[1], p[2:]
        else:
            addr, n, rest = int.from_bytes(p[0:2], "little"), int.from_bytes(p[2:4], "little"), p[4:]
        if inst == 0x83:  # SYNC WRITE
            for k in range(0, len(rest) - n, n + 1):
                s = self.servos.get(rest[k])
                if s is not None:
                    self._write(s, addr, rest[k + 1 : k + 1 + n])
            return []
        if inst == 0x82:  # SYNC READ
            return [self._status(i, bytes(self.servos[i].table[addr : addr + n]))
                    for i in rest if i in self.servos and not self.servos[i].silent]  # fmt: skip
        if not fe and inst == dx.FAST_SYNC_READ:
            blocks = [(i, self.servos[i].error, bytes(self.servos[i].table[addr : addr + n]))
                      for i in rest if i in self.servos and not self.servos[i].silent]  # fmt: skip
            return [dx.fast_sync_status(blocks)] if blocks else []
        if not fe and inst == dx.BULK_READ:
            out = []
            for k in range(0, len(p) - 4, 5):
                i, a, m = (
                    p[k],
                    int.from_bytes(p[k + 1 : k + 3], "little"),
                    int.from_bytes(p[k + 3 : k + 5], "little"),
                )
                if i in self.servos and not self.servos[i].silent:
                    out.append(self._status(i, bytes(self.servos[i].table[a : a + m])))
            return out
        return []

    def _run(self) -> None:
        period = 1.0 / self.config.tick_hz
        t0 = time.monotonic()
        k = 0
        while not self._stop.is_set():
            while not self._commands.empty():
                fn, done = self._commands.get_nowait()
                fn()
                done.set()
            timeout = max(0.0, t0 + (k + 1) * period - time.monotonic())
            t = self._t
            data = b""
            if t is None:
                self._stop.wait(timeout)
            else:
                try:
                    data = t.read(4096, timeout)
                except TransportError:
                    if not self._stop.wait(timeout):
                        continue
                    return
            now = time.monotonic()
            # the line is idle now (this read found nothing) and the packet's last byte is older
            # than the timeout: the rest never came, drop it as a servo does. Judged only on an
            # idle line, so an emulator thread that wakes late never drops bytes still queued
            stale = now - self._last_rx > self.config.inter_byte_timeout_s
            if not data and t is not None and self._parser.pending and stale:
                self._parser.reset()
                self.partial_dropped += 1
            if data:
                self._last_rx = now
                out: list[bytes] = []
                with self.cond:
                    for pkt in self._parser.feed(data):
                        out += self._handle(pkt, now)
                    self.cond.notify_all()
                if out and t is not None:
                    try:
                        t.write(b"".join(out))
                        self.replies += len(out)
                    except TransportError:
                        pass  # host gone: as a servo on an unplugged bus
            due = min(int((now - t0) / period) - k, 200)
            if due > 0:
                with self.cond:
                    for _ in range(due):
                        self._tick(period, now)
                    self.cond.notify_all()
                k = max(k + due, int((now - t0) / period))

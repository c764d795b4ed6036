"""Protocol core and firmware rules of docs/protocol.md, for MicroPython (and CPython).

Self-contained on purpose: no numpy, dataclasses, enum, typing or cobs package (none exist on a
microcontroller), only ``struct`` and ``math``. Same rules as firmware_bridge/fwcore.py, which is
the numpy version the emulator runs; tests/firmware_bridge/test_fw_micropython.py runs this file
against the host bridge over a pty.

The board drives it: ``feed(bytes, now_us)`` with UART input, ``tick(now_us)`` from the control
loop; both return encoded frames to write to the UART. A ``motor`` object provides ``q`` (list of
measured positions) and ``step(targets_or_None, dt, v_max)``.
"""

import math
import struct

try:  # on the board: compile the hot byte loops to native code
    import micropython

    native = micropython.native
except ImportError:  # CPython

    def native(f):
        return f


VERSION = 1
HEADER = "<BBHI"
HEADER_SIZE = 8
MAX_FRAME = 1024

HELLO, CAPABILITIES = 0x01, 0x02
CONFIGURE_LIMITS, CONFIGURE_WATCHDOG, TORQUE, CLEAR_FAULTS = 0x10, 0x11, 0x12, 0x13
SETPOINT, HEARTBEAT, TELEMETRY, FAULT_REPORT = 0x20, 0x21, 0x30, 0x31
TIME_SYNC_REQUEST, TIME_SYNC_RESPONSE, ACK, NACK = 0x40, 0x41, 0x7E, 0x7F

COMMANDS_LO, COMMANDS_HI = 0x10, 0x1F  # acknowledged commands: one not implemented gets NACK UNSUPPORTED
F_WATCHDOG, F_POSITION_LIMIT, F_EXTERNAL = 0x0001, 0x0002, 0x0100
N_BAD_VALUE, N_JOINT_COUNT, N_NOT_CONFIGURED, N_FAULT_LATCHED, N_UNSUPPORTED = 1, 2, 3, 4, 5
S_TORQUE, S_HOLDING, S_FAULT, S_CONFIGURED = 0x01, 0x02, 0x04, 0x08
POSITION_MARGIN = 0.1
_SIZES = {HELLO: 1, HEARTBEAT: 0, CONFIGURE_WATCHDOG: 4, TORQUE: 1, CLEAR_FAULTS: 2, TIME_SYNC_REQUEST: 8}
U32 = 0xFFFFFFFF


def _crc_table() -> list:
    table = []
    for byte in range(256):
        c = byte
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


@native
def crc32c(data) -> int:
    t = _TABLE
    c = 0xFFFFFFFF
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


@native
def cobs_encode(data) -> bytes:
    out = bytearray(b"\x00")
    code_at, code = 0, 1
    for b in data:
        if b:
            out.append(b)
            code += 1
        if not b or code == 0xFF:
            out[code_at] = code
            code_at, code = len(out), 1
            out.append(0)
    out[code_at] = code
    return bytes(out)


@native
def cobs_decode(data):
    """Decoded bytes, or None if ``data`` is not valid COBS."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0 or i + code > n:
            return None
        for j in range(i + 1, i + code):
            if data[j] == 0:
                return None
            out.append(data[j])
        i += code
        if code < 0xFF and i < n:
            out.append(0)
    return bytes(out)


def seq_newer(a: int, b: int) -> bool:
    d = (a - b) & 0xFFFF
    return 0 < d < 0x8000


def _finite(values) -> bool:
    return all(math.isfinite(v) for v in values)


class Controller:
    def __init__(self, n_joints: int, tick_hz: int, clock_us, motor, name: bytes = b"legato-mpy",
                 watchdog_ms: int = 100, telemetry_hz: int = 50) -> None:  # fmt: skip
        self.n = n_joints
        self.tick_hz = tick_hz
        self.dt = 1.0 / tick_hz
        self.clock_us = clock_us
        self.motor = motor
        self.name = name
        self.watchdog_us = watchdog_ms * 1000
        self.telemetry_hz = telemetry_hz
        inf = float("inf")
        self.lo, self.hi = [-inf] * n_joints, [inf] * n_joints
        self.v_max, self.step_max = [inf] * n_joints, [inf] * n_joints
        self.configured = False
        self.enabled = False
        self.faults = 0
        self.commanded = [0.0] * n_joints
        self.target = [0.0] * n_joints
        self.hold = [0.0] * n_joints
        self.last_applied = 0
        self.ref_seq = None
        self.last_rx_seq = None
        self.last_feed = 0
        self.age = 0xFFFF  # saturated = no setpoint applied yet
        self.tel_acc = 0
        self.rx_good = self.rx_bad = self.rx_gap = self.rx_stale = 0
        self.tx_seq = 0
        self.buf = bytearray()
        self.discarding = False
        self.out = []

    # ---- framing ---------------------------------------------------------------------------
    def frame(self, mtype: int, payload: bytes) -> bytes:
        body = struct.pack(HEADER, VERSION, mtype, self.tx_seq, self.clock_us() & U32) + payload
        self.tx_seq = (self.tx_seq + 1) & 0xFFFF
        return cobs_encode(body + struct.pack("<I", crc32c(body))) + b"\x00"

    def feed(self, data, now_us: int) -> list:
        """Bytes from the UART -> frames to send back."""
        for b in data:
            if b:
                if not self.discarding:
                    self.buf.append(b)
                    if len(self.buf) > MAX_FRAME + MAX_FRAME // 254 + 2:
                        self.buf = bytearray()
                        self.discarding = True
                        self.rx_bad = (self.rx_bad + 1) & U32
                continue
            if self.buf and not self.discarding:
                self.packet(bytes(self.buf), now_us)
            self.buf = bytearray()
            self.discarding = False
        out, self.out = self.out, []
        return out

    def packet(self, packet: bytes, now_us: int) -> None:
        raw = cobs_decode(packet)
        if raw is None or len(raw) < HEADER_SIZE + 4:
            self.rx_bad = (self.rx_bad + 1) & U32
            return
        body = raw[:-4]
        if struct.unpack("<I", raw[-4:])[0] != crc32c(body):
            self.rx_bad = (self.rx_bad + 1) & U32
            return
        version, mtype, seq, _t = struct.unpack(HEADER, body[:HEADER_SIZE])
        if version != VERSION or not self.handle(mtype, seq, body[HEADER_SIZE:], now_us):
            self.rx_bad = (self.rx_bad + 1) & U32

    # ---- messages --------------------------------------------------------------------------
    def ack(self, seq: int, mtype: int, reason: int = 0) -> None:
        self.out.append(self.frame(NACK if reason else ACK, struct.pack("<HBB", seq, mtype, reason)))

    def track_rx(self, seq: int) -> None:
        last = self.last_rx_seq
        if last is None or seq_newer(seq, last):
            if last is not None:
                self.rx_gap = (self.rx_gap + ((seq - last) & 0xFFFF) - 1) & U32
            self.last_rx_seq = seq

    def handle(self, mtype: int, seq: int, p: bytes, now_us: int) -> bool:
        """Apply one CRC-valid frame; False if its type or payload is invalid (dropped)."""
        n = self.n
        if COMMANDS_LO <= mtype <= COMMANDS_HI and mtype not in (CONFIGURE_LIMITS, CONFIGURE_WATCHDOG,
                                                                 TORQUE, CLEAR_FAULTS):  # fmt: skip
            self.rx_good = (self.rx_good + 1) & U32  # a valid frame of a command this firmware lacks
            self.track_rx(seq)
            self.ack(seq, mtype, N_UNSUPPORTED)
            return True
        if mtype == SETPOINT:
            if len(p) != 1 + 4 * n or p[0] != n:
                return False
            values = struct.unpack(f"<{n}f", p[1:])
            if not _finite(values):
                return False
        elif mtype == CONFIGURE_LIMITS:
            if len(p) < 1 or len(p) != 1 + 16 * p[0] or not 1 <= p[0] <= 32:
                return False
            values = struct.unpack(f"<{4 * p[0]}f", p[1:])
            if not _finite(values):
                return False
        elif mtype not in (HELLO, HEARTBEAT, CONFIGURE_WATCHDOG, TORQUE, CLEAR_FAULTS, TIME_SYNC_REQUEST):
            return False
        if mtype in _SIZES and len(p) != _SIZES[mtype]:
            return False
        if mtype == TORQUE and p[0] > 1:
            return False
        self.rx_good = (self.rx_good + 1) & U32
        if mtype == HELLO:
            self.last_rx_seq = None
            self.fresh(now_us)  # a new session does not inherit the old target
        self.track_rx(seq)
        if mtype == SETPOINT:
            self.setpoint(seq, values, now_us)
        elif mtype == HEARTBEAT:
            if self.enabled:
                self.last_feed = now_us
        elif mtype == TIME_SYNC_REQUEST:
            t1 = struct.unpack("<Q", p)[0]
            self.out.append(self.frame(TIME_SYNC_RESPONSE, struct.pack("<QQQ", t1, now_us, self.clock_us())))
        elif mtype == HELLO:
            caps = struct.pack("<BBHHH16s", n, VERSION, self.tick_hz, self.telemetry_hz,
                               min(self.watchdog_us // 1000, 0xFFFF), self.name)  # fmt: skip
            self.out.append(self.frame(CAPABILITIES, caps))
        elif mtype == CONFIGURE_LIMITS:
            self.configure_limits(seq, p[0], values)
        elif mtype == CONFIGURE_WATCHDOG:
            timeout_ms, tel_hz = struct.unpack("<HH", p)
            if 5 <= timeout_ms <= 60000 and 1 <= tel_hz <= self.tick_hz:
                self.watchdog_us, self.telemetry_hz = timeout_ms * 1000, tel_hz
                self.ack(seq, mtype)
            else:
                self.ack(seq, mtype, N_BAD_VALUE)
        elif mtype == TORQUE:
            self.torque(seq, p[0] == 1, now_us)
        elif mtype == CLEAR_FAULTS:
            mask = struct.unpack("<H", p)[0]
            cleared = self.faults & mask
            self.faults &= ~mask & 0xFFFF
            if cleared and self.enabled and not self.faults:
                self.fresh(now_us)
            self.ack(seq, mtype)
        return True

    def setpoint(self, seq: int, values, now_us: int) -> None:
        if not self.enabled or self.faults:
            return
        if self.ref_seq is not None and not seq_newer(seq, self.ref_seq):
            self.rx_stale = (self.rx_stale + 1) & U32
            return
        self.ref_seq = self.last_applied = seq
        self.last_feed = now_us
        self.age = 0
        for j in range(self.n):
            self.commanded[j] = min(max(values[j], self.lo[j]), self.hi[j])

    def configure_limits(self, seq: int, n: int, v) -> None:
        if n != self.n:
            self.ack(seq, CONFIGURE_LIMITS, N_JOINT_COUNT)
            return
        lo, hi, vm, st = list(v[0::4]), list(v[1::4]), list(v[2::4]), list(v[3::4])
        for j in range(n):
            if not (lo[j] < hi[j] and vm[j] > 0 and st[j] > 0):
                self.ack(seq, CONFIGURE_LIMITS, N_BAD_VALUE)
                return
        self.lo, self.hi, self.v_max, self.step_max = lo, hi, vm, st
        self.commanded = [min(max(c, lo[j]), hi[j]) for j, c in enumerate(self.commanded)]
        self.configured = True
        self.ack(seq, CONFIGURE_LIMITS)

    def torque(self, seq: int, enable: bool, now_us: int) -> None:
        if not enable:
            self.enabled = False  # accepted in every state
            self.ack(seq, TORQUE)
        elif not self.configured:
            self.ack(seq, TORQUE, N_NOT_CONFIGURED)
        elif self.faults:
            self.ack(seq, TORQUE, N_FAULT_LATCHED)
        else:
            self.enabled = True
            self.fresh(now_us)  # every accepted TORQUE(1): enabling never jumps
            self.ack(seq, TORQUE)

    def clamped_q(self) -> list:
        return [min(max(q, self.lo[j]), self.hi[j]) for j, q in enumerate(self.motor.q)]

    def fresh(self, now_us: int) -> None:
        self.commanded = self.clamped_q()
        self.target = list(self.commanded)
        self.ref_seq = None
        self.last_feed = now_us

    # ---- control tick ----------------------------------------------------------------------
    def latch(self, bits: int, joint: int = 255, value: float = 0.0) -> None:
        new = bits & ~self.faults
        if not new:
            return
        if not self.faults:
            self.hold = self.clamped_q()  # inside the limits: a POSITION_LIMIT hold recovers
        self.faults |= bits
        self.out.append(self.frame(FAULT_REPORT, struct.pack("<HHBf", self.faults, new, joint, value)))

    def tick(self, now_us: int) -> list:
        self.age = min(self.age + 1, 0xFFFF)
        if self.enabled and not self.faults and now_us - self.last_feed > self.watchdog_us:
            self.latch(F_WATCHDOG, 255, (now_us - self.last_feed) / 1000.0)
        if not self.enabled:
            self.motor.step(None, self.dt, self.v_max)
        elif self.faults:
            self.motor.step(self.hold, self.dt, self.v_max)
        else:
            for j in range(self.n):
                d = self.commanded[j] - self.target[j]
                s = self.step_max[j]
                self.target[j] += s if d > s else (-s if d < -s else d)
            self.motor.step(self.target, self.dt, self.v_max)
        if self.configured:
            for j in range(self.n):
                q = self.motor.q[j]
                if q < self.lo[j] - POSITION_MARGIN or q > self.hi[j] + POSITION_MARGIN:
                    self.latch(F_POSITION_LIMIT, j, q)
                    break
        self.tel_acc += self.telemetry_hz
        if self.tel_acc >= self.tick_hz:
            self.tel_acc -= self.tick_hz
            self.out.append(self.frame(TELEMETRY, self.telemetry()))
        out, self.out = self.out, []
        return out

    def state(self) -> int:
        s = S_CONFIGURED if self.configured else 0
        if self.enabled:
            s |= S_TORQUE | (S_HOLDING if self.faults else 0)
        return s | (S_FAULT if self.faults else 0)

    def telemetry(self) -> bytes:
        n, m = self.n, self.motor
        head = struct.pack("<HBBHHIIII", self.last_applied, self.state(), n, self.faults, self.age,
                           self.rx_good, self.rx_bad, self.rx_gap, self.rx_stale)  # fmt: skip
        return head + struct.pack(f"<{3 * n}f", *(list(m.q) + list(m.v) + list(m.tau)))


class SimMotor:
    """First-order position response for tests without hardware: the joint moves toward the
    target at up to ``v_max`` with time constant ``tau_s``; torque off leaves it where it is."""

    def __init__(self, n: int, tau_s: float = 0.02) -> None:
        self.q, self.v, self.tau = [0.0] * n, [0.0] * n, [0.0] * n
        self.tau_s = tau_s

    def step(self, targets, dt: float, v_max) -> None:
        for j in range(len(self.q)):
            if targets is None:
                self.v[j] = 0.0
                continue
            v = (targets[j] - self.q[j]) / self.tau_s
            v = max(-v_max[j], min(v_max[j], v))
            self.v[j] = v
            self.q[j] += v * dt

"""The MicroPython reference firmware's core (firmware_bridge/micropython/legato_fw.py) under
CPython: its COBS and CRC against the host's, its parser against garbage, and the whole of it
behind a real pty against the host bridge through pyserial."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from cobs import cobs
from fw_helpers import WAIT_S, make_host, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.crc import crc32c
from firmware_bridge.errors import TransportError
from firmware_bridge.messages import Fault, decode
from firmware_bridge.micropython import legato_fw as fw
from firmware_bridge.ptyport import open_pty
from firmware_bridge.transport import FdTransport


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_cobs_and_crc_match_the_host(data: bytes) -> None:
    assert fw.cobs_encode(data) == cobs.encode(data)
    assert fw.cobs_decode(cobs.encode(data)) == data
    assert fw.crc32c(data) == crc32c(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_firmware_parser_counts_garbage_and_never_raises(data: bytes) -> None:
    """Every non-empty packet between delimiters is counted once, good or bad; garbage never
    enables torque."""
    ctrl = fw.Controller(2, 100, lambda: 0, fw.SimMotor(2))
    ctrl.feed(data + b"\x00", 0)
    packets = [p for p in (data + b"\x00").split(b"\x00")[:-1] if p]
    assert ctrl.rx_good + ctrl.rx_bad == len(packets) and not ctrl.enabled


class Runner:
    """Drives the firmware core like main.py does on the board, with a pty for the UART."""

    def __init__(self, n: int, tick_hz: int = 500) -> None:
        self.pty = open_pty()
        self.uart = FdTransport(self.pty.master, owns_fd=False)
        self.ctrl = fw.Controller(n, tick_hz, self.clock_us, fw.SimMotor(n), telemetry_hz=100)
        self.lock = threading.Lock()
        self.period = 1.0 / tick_hz
        self.hold_at: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mpy-fw", daemon=True)

    @staticmethod
    def clock_us() -> int:
        return int(time.monotonic() * 1e6)

    def _run(self) -> None:
        t0, k = time.monotonic(), 0
        while not self._stop.is_set():
            try:
                data = self.uart.read(4096, max(0.0, t0 + (k + 1) * self.period - time.monotonic()))
            except TransportError:
                return
            out = []
            with self.lock:
                if data:
                    out += self.ctrl.feed(data, self.clock_us())
                while time.monotonic() >= t0 + (k + 1) * self.period:
                    k += 1
                    out += self.ctrl.tick(int((t0 + k * self.period) * 1e6))
                    if self.ctrl.faults & fw.F_WATCHDOG and self.hold_at is None:
                        self.hold_at = int((t0 + k * self.period) * 1e6)
            for f in out:
                self.uart.write(f)

    def __enter__(self) -> Runner:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.uart.cancel_read()
        self._thread.join(5.0)
        self.uart.close()
        self.pty.close()


@pytest.fixture
def mpy(no_leaks: None) -> Iterator[Runner]:
    with Runner(3) as r:
        yield r


def test_micropython_core_against_the_host_bridge(mpy: Runner) -> None:
    """Handshake, streaming (positions follow), watchdog hold within timeout + one tick (2 ms at
    500 Hz), and torque-off on close with a fault latched."""
    h = make_host(mpy.pty.path, 3, rate_hz=200, watchdog_ms=40, telemetry_hz=100)
    br = h.bridge
    try:
        br.start(timeout_s=WAIT_S)
        caps = br.capabilities
        assert caps is not None and caps.name == b"legato-mpy" and caps.n_joints == 3
        goal = np.array([0.4, -0.3, 0.2], dtype=np.float32)
        br.send_setpoint(goal)
        assert wait_for(
            lambda: (t := br.latest_telemetry()) is not None and np.allclose(t.positions, goal, atol=1e-3)
        )
        assert br.health().controller_rx_gaps == 0 and br.health().rx_seq_gaps == 0
        assert h.faulty is not None
        h.faulty.stall(0.3)
        assert wait_for(lambda: mpy.hold_at is not None)
        with mpy.lock:
            fed = mpy.ctrl.last_feed
            assert mpy.hold_at is not None
            assert 40_000 < mpy.hold_at - fed <= 40_000 + 2_000
        assert wait_for(lambda: (t := br.latest_telemetry()) is not None and t.holding)
        with mpy.lock:
            mpy.ctrl.latch(fw.F_EXTERNAL)
        assert wait_for(lambda: (t := br.latest_telemetry()) is not None and bool(t.faults & Fault.EXTERNAL))
    finally:
        br.close()
    with mpy.lock:
        assert not mpy.ctrl.enabled and mpy.ctrl.faults & fw.F_EXTERNAL


def test_micropython_frames_decode_on_the_host() -> None:
    ctrl = fw.Controller(2, 100, lambda: 123_456, fw.SimMotor(2), telemetry_hz=100)
    frames = ctrl.tick(10_000)
    assert frames, "telemetry expected every tick at 100 Hz"
    f = decode(frames[-1][:-1])
    assert f.t_us == 123_456 and f.msg.TYPE == 0x30

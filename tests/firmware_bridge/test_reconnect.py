"""The one reconnect path (firmware_bridge.reconnect.PortKeeper) on a fake clock, and the servo
bus on it with a fake port: disconnected at the first failing cycle, telemetry still published
(every joint stale, ages growing), reopened with backoff, configured again."""

from __future__ import annotations

import numpy as np
import pytest
from fw_helpers import Clock, EmuPort

from firmware_bridge.errors import LinkError, TransportError
from firmware_bridge.reconnect import PortKeeper
from firmware_bridge.servo_bus import ServoBus, ServoBusConfig
from firmware_bridge.servo_emulator import EmulatedServoBus, ServoEmulatorConfig


class Port:
    def __init__(self, n: int) -> None:
        self.n, self.closed = n, False

    def close(self) -> None:
        self.closed = True


class Owner:
    def __init__(self) -> None:
        self.made: list[int] = []
        self.lost: list[BaseException | None] = []
        self.refuse: BaseException | None = None

    def connection_made(self, port: Port) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.made.append(port.n)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)


def _keeper(fail: list[bool]) -> tuple[PortKeeper[Port], Owner, Clock, list[Port]]:
    clock, owner, ports = Clock(), Owner(), []

    def open_port() -> Port:
        if fail and fail.pop(0):
            raise TransportError("no such port")
        ports.append(Port(len(ports)))
        return ports[-1]

    return PortKeeper(open_port, owner, min_s=0.1, max_s=0.4, clock=clock), owner, clock, ports


def test_failed_opens_back_off_doubling_up_to_the_maximum() -> None:
    k, owner, clock, _ = _keeper([True, True, True, True, False])
    waits = []
    while k.acquire() is None:
        waits.append(round(k.retry_in(), 6))
        assert k.acquire() is None  # not before the backoff has passed
        clock.t += k.retry_in()
    assert waits == [0.1, 0.2, 0.4, 0.4] and k.connected and k.generation == 1 and owner.made == [0]


def test_a_lost_port_is_closed_disconnected_at_once_and_reopened_immediately() -> None:
    k, owner, clock, ports = _keeper([])
    p0 = k.acquire()
    assert p0 is not None and k.connected
    exc = TransportError("EIO")
    k.lost(p0, exc)
    assert not k.connected and p0.closed and owner.lost == [exc] and k.disconnects == 1
    p1 = k.acquire()  # the first attempt after a loss does not wait
    assert p1 is ports[1] and k.generation == 2 and owner.made == [0, 1]
    k.lost(p0, exc)  # a stale report about the old port changes nothing
    assert k.connected and k.disconnects == 1


def test_a_setup_that_fails_is_a_failed_attempt_and_a_bug_is_not_swallowed() -> None:
    k, owner, clock, ports = _keeper([])
    owner.refuse = LinkError("servo 3 does not answer")
    assert k.acquire() is None and ports[0].closed and not k.connected
    assert isinstance(k.last_error, LinkError) and k.retry_in() == pytest.approx(0.1)
    owner.refuse = ZeroDivisionError()
    clock.t += 1
    with pytest.raises(ZeroDivisionError):
        k.acquire()
    assert ports[1].closed and not k.connected
    owner.refuse = None
    clock.t += 1
    assert k.acquire() is ports[2] and k.connected


def test_servo_bus_says_disconnected_at_the_first_failing_cycle_and_reconnects() -> None:
    emu = EmulatedServoBus(ServoEmulatorConfig("feetech", (1, 2)))
    plugged, clock = [True], Clock()
    opened: list[EmuPort] = []

    def open_port() -> EmuPort:
        if not plugged[0]:
            raise TransportError("port /dev/ttyACM0 does not exist")
        opened.append(EmuPort(emu, plugged))
        return opened[-1]

    cfg = ServoBusConfig("/dev/ttyACM0", (1, 2), reconnect_min_s=0.05, reconnect_max_s=0.2)
    bus = ServoBus("feetech", cfg, open_port=open_port, clock=clock)
    try:
        bus.start(stream=False)
        bus._tick(0, clock.t)
        before = bus.latest_telemetry()
        assert before is not None and bus.health().connected and not before.stale.any()
        plugged[0] = False
        clock.t += 0.02
        bus._tick(1, clock.t)  # one failing cycle
        h, t = bus.health(), bus.latest_telemetry()
        assert not h.connected and not h.configured and t is not None and t.stale.all()
        assert np.array_equal(t.measured_at, before.measured_at)  # nothing new was measured
        for _ in range(3):  # gone: backoff, every tick still publishes (ages growing)
            clock.t += 0.02
            bus._tick(2, clock.t)
        assert bus.health().reconnects == 0 and len(opened) == 1
        plugged[0] = True
        clock.t += 0.5
        bus._tick(3, clock.t)  # reopened, pinged, torque on holding where the servos are
        h = bus.health()
        assert h.connected and h.configured and h.reconnects == 1 and h.torque_enabled and len(opened) == 2
        clock.t += 0.02
        bus._tick(4, clock.t)
        t = bus.latest_telemetry()
        assert t is not None and not t.stale.any() and np.all(t.measured_at > before.measured_at)
    finally:
        bus.close()
        emu.close()

"""ServoBus against the emulated Feetech and Dynamixel buses on a real pty, through pyserial; the
vendor SDKs as hosts against the same emulators; the faults users report."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from fw_helpers import SETUP_S, WAIT_S, Clock, EmuPort, patient_port, sdk_retry

from firmware_bridge import dynamixel as dx
from firmware_bridge import feetech as ft
from firmware_bridge.config import JointLimits
from firmware_bridge.errors import LinkError
from firmware_bridge.factory import open_bus
from firmware_bridge.messages import Fault
from firmware_bridge.portcheck import PortError, check_port
from firmware_bridge.servo_bus import ServoBus, ServoBusConfig
from firmware_bridge.servo_common import ServoError
from firmware_bridge.servo_emulator import EmulatedServoBus, ServoEmulatorConfig, parse_ids

IDS = (1, 2, 3, 4, 5, 6)
KINDS = ("feetech", "dynamixel")


@pytest.fixture
def servos(no_leaks: None) -> Iterator[Callable[..., EmulatedServoBus]]:
    made: list[EmulatedServoBus] = []

    def make(kind: str, ids: tuple[int, ...] = IDS, **kw: object) -> EmulatedServoBus:
        emu = EmulatedServoBus(ServoEmulatorConfig(kind, ids, **kw)).start()  # type: ignore[arg-type]
        made.append(emu)
        return emu

    try:
        yield make
    finally:
        for e in made:
            e.close()


@pytest.fixture
def buses() -> Iterator[Callable[..., ServoBus]]:
    made: list[ServoBus] = []

    def make(kind: str, port: str, stream: bool = False, **kw: object) -> ServoBus:
        kw.setdefault("ids", IDS)
        # tests call cycle() themselves: a long period gives the replies a hard deadline (0.8 x
        # period) that a loaded machine does not miss, so the counts below are exact
        kw.setdefault("period_s", 0.5)
        kw.setdefault("watchdog_ms", 0 if kw["period_s"] > 0.05 else 100)  # >= two periods, or off
        kw.setdefault("setup_timeout_s", SETUP_S)
        bus = ServoBus(kind, ServoBusConfig(port, **kw))  # type: ignore[arg-type]
        made.append(bus)
        bus.start(stream=stream)
        return bus

    try:
        yield make
    finally:
        for b in made:
            b.close()


def _goals(emu: EmulatedServoBus) -> list[int]:
    return [s.goal_encoder() for s in emu.servos.values()]


def _torque(emu: EmulatedServoBus) -> list[bool]:
    return [s.torque for s in emu.servos.values()]


@pytest.mark.parametrize("kind", KINDS)
def test_start_enables_torque_holding_where_the_servos_are_and_goals_follow_setpoints(kind, servos, buses):
    emu = servos(kind)
    bus = buses(kind, emu.port)
    assert all(_torque(emu)) and bus.health().torque_enabled
    enc = [s.goal_encoder() for s in emu.servos.values()]
    assert enc == [2048] * 6  # goal = present: enabling does not jump
    bus.send_setpoint(np.array([0.5, -0.5, 0.0, 1.0, -1.0, 0.25], dtype=np.float32))
    bus.cycle()
    expect = np.rint(np.array([0.5, -0.5, 0.0, 1.0, -1.0, 0.25]) * 4096 / (2 * np.pi) + 2048)
    assert emu.wait_until(lambda e: _goals(e) == expect.astype(int).tolist(), WAIT_S)
    t = bus.latest_telemetry()
    assert t is not None and t.stale is not None and not t.stale.any() and t.servo_errors == (0,) * 6


@pytest.mark.parametrize("kind", KINDS)
def test_nan_is_never_sent_and_targets_are_clamped(kind, servos, buses):
    emu = servos(kind)
    bus = buses(kind, emu.port, limits=JointLimits.uniform(6, position=1.0))
    bus.send_setpoint(np.full(6, 0.3, dtype=np.float32))
    bus.cycle()
    before = [int(np.rint(0.3 * 4096 / (2 * np.pi) + 2048))] * 6
    assert emu.wait_until(lambda e: _goals(e) == before, WAIT_S)
    n_writes = sum(1 for p in list(emu.received) if p.code == 0x83)
    bus.send_setpoint(np.array([np.nan, 0, 0, 0, 0, 0], dtype=np.float32))
    bus.cycle()  # the last good target goes out again, never the NaN
    assert emu.wait_until(lambda e: sum(1 for p in list(e.received) if p.code == 0x83) > n_writes, WAIT_S)
    assert _goals(emu) == before and bus.health().setpoints_rejected == 1
    bus.send_setpoint(np.full(6, 3.0, dtype=np.float32))
    bus.cycle()
    top = int(np.rint(1.0 * 4096 / (2 * np.pi) + 2048))
    assert emu.wait_until(lambda e: _goals(e) == [top] * 6, WAIT_S) and bus.health().setpoints_clamped == 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_silent_servo_costs_a_few_ms_the_others_are_read_and_its_joint_is_stale(kind, servos, buses):
    emu = servos(kind)
    bus = buses(kind, emu.port)
    bus.cycle()
    emu.set_silent(3)
    # the emulated servos move: the fresh ones must change, the silent one must keep its last value
    bus.send_setpoint(np.full(6, 0.4, dtype=np.float32))
    bus.cycle()
    assert emu.wait_until(lambda e: abs(e.motor.q[0] - 0.4) < 0.05, WAIT_S)
    for _ in range(5):
        bus.cycle()
    t = bus.latest_telemetry()
    assert t is not None and t.stale is not None
    assert t.stale.tolist() == [False, False, True, False, False, False]
    assert abs(t.positions[0] - 0.4) < 0.06 and abs(t.positions[5] - 0.4) < 0.06  # servos after it too
    assert abs(t.positions[2]) < 0.01  # the last good value, from before it went silent
    h = bus.health()
    # re-read once, the first time it is missing; then one reply deadline per cycle, no retries
    # (what that costs in milliseconds is bench_servo_bus's: 4.5-6 ms against the SDKs' 35 ms)
    assert h.stale_joints == 1 and h.reply_timeouts[2] == 6 and h.retries_used == 1
    assert h.missed_replies == 6 and t.measured_at[2] < t.measured_at[1]
    emu.set_silent(3, False)
    bus.cycle()
    assert not bus.latest_telemetry().stale.any()


ERROR_CASES = [
    ("feetech", ft.ERR_OVERLOAD, ServoError.OVERLOAD),
    ("feetech", ft.ERR_VOLTAGE, ServoError.VOLTAGE),
    ("dynamixel", dx.ERR_ALERT, ServoError.HARDWARE),
]


@pytest.mark.parametrize(("kind", "bit", "err"), ERROR_CASES)
def test_error_bits_are_reported_and_torque_off_still_goes_out_on_close(kind, bit, err, servos):
    emu = servos(kind)
    bus = ServoBus(kind, ServoBusConfig(emu.port, IDS, setup_timeout_s=SETUP_S))
    bus.start(stream=True)  # the real thread this time: close() must stop it and still send torque-off
    try:
        emu.set_error(2, bit)
        assert emu.wait_until(lambda e: True, 0.0) is True
        deadline_ok = _wait_for_telemetry(bus, lambda t: t.servo_errors[1] & err)
        assert deadline_ok
        t = bus.latest_telemetry()
        assert t.faults & (Fault.OVERLOAD if err == ServoError.OVERLOAD else Fault.EXTERNAL)
        assert t.servo_errors[0] == 0 and bus.health().servo_errors[1] & err
        assert all(_torque(emu))
    finally:
        bus.close()
    assert emu.wait_until(lambda e: not any(_torque(e)), WAIT_S), "torque-off did not reach every servo"


def _wait_for_telemetry(bus: ServoBus, pred: Callable, timeout_s: float = WAIT_S) -> bool:
    import threading
    import time

    ev, end = threading.Event(), time.monotonic() + timeout_s
    while time.monotonic() < end:
        t = bus.latest_telemetry()
        if t is not None and pred(t):
            return True
        ev.wait(0.005)
    return False


def test_dynamixel_bus_watchdog_is_set_trips_when_the_host_is_silent_and_clears(servos, buses):
    emu = servos("dynamixel")
    # a 100 ms period: the cycle's spare time for the register 98 check survives a loaded machine;
    # a 1 s watchdog: a starved test process must not trip it again between clear and cycle
    bus = buses("dynamixel", emu.port, period_s=0.1, watchdog_ms=1000)
    assert [s.table[dx.BUS_WATCHDOG] for s in emu.servos.values()] == [50] * 6  # 1000 ms / 20 ms
    bus.cycle()
    # the host goes silent: the servos stop on their own
    assert emu.wait_until(lambda e: all(s.watchdog_tripped for s in e.servos.values()), WAIT_S)
    bus.cycle()  # the first cycle after a gap longer than the watchdog checks register 98
    t = bus.latest_telemetry()
    assert t.holding and t.faults & Fault.WATCHDOG and all(e & ServoError.WATCHDOG for e in t.servo_errors)
    bus.clear_faults()
    assert [s.table[dx.BUS_WATCHDOG] for s in emu.servos.values()] == [50] * 6
    bus.cycle()
    assert not bus.latest_telemetry().holding and bus.latest_telemetry().faults == 0


def test_feetech_calibration_homing_offsets_are_written_where_the_servos_differ(servos, buses, tmp_path):
    import json

    from firmware_bridge.calibration import Calibration

    emu = servos("feetech", ids=(1, 2))
    cal = {
        "a": {"id": 1, "drive_mode": 0, "homing_offset": -100, "range_min": 500, "range_max": 3500},
        "b": {"id": 2, "drive_mode": 1, "homing_offset": 0, "range_min": 1000, "range_max": 3000},
    }
    (tmp_path / "arm.json").write_text(json.dumps(cal))
    bus = buses("feetech", emu.port, ids=(1, 2), calibration=Calibration.from_lerobot(tmp_path / "arm.json"))
    assert [s.homing for s in emu.servos.values()] == [-100, 0]
    assert all(s.table[ft.LOCK] == 1 for s in emu.servos.values())  # EEPROM locked again
    # present = encoder - offset: the middle tick 2048 reads 2148; joint 0 = (2148 - 2000) ticks
    t = bus.latest_telemetry()
    assert t.positions[0] == pytest.approx((2148 - 2000) * 2 * np.pi / 4096, abs=1e-5)


@pytest.mark.parametrize("setup_timeout_s", [None, 0.7])
def test_a_missing_servo_gets_setup_timeout_s_per_ping_then_one_line_naming_it(setup_timeout_s) -> None:
    """Starting is not the cycle: each of the three pings of a servo that does not answer waits
    ``setup_timeout_s`` (100 ms by default), on a fake clock. Before: a fixed 50 ms, which an
    emulator on a starved machine missed, and no way for a slow adapter to ask for more."""
    emu = EmulatedServoBus(ServoEmulatorConfig("feetech", (1, 2)))  # servo 3 is not on the bus
    clock = Clock()
    port = EmuPort(emu, [True], clock)
    kw = {} if setup_timeout_s is None else {"setup_timeout_s": setup_timeout_s}
    bus = ServoBus("feetech", ServoBusConfig("/dev/ttyACM0", (1, 2, 3), **kw), open_port=lambda: port,
                   clock=clock)  # fmt: skip
    try:
        with pytest.raises(LinkError, match=r"no reply to ping from servo ids \[3\] on /dev/ttyACM0"):
            bus.start(stream=False)
    finally:
        bus.close()
        emu.close()
    wait = 0.1 if setup_timeout_s is None else setup_timeout_s
    pings = [t for t, data in port.writes if data == ft.ping(3)]
    assert np.diff(pings) == pytest.approx([wait, wait]) and clock.t - pings[0] == pytest.approx(3 * wait)
    assert [data for _, data in port.writes].count(ft.ping(1)) == 1  # the others answered at once


def test_open_bus_refuses_unknown_settings_and_kinds() -> None:
    with pytest.raises(ValueError, match="unknown settings.*'period'"):
        open_bus("feetech", port="/dev/x", ids=[1], period=0.02)
    with pytest.raises(ValueError, match="allowed: firmware, feetech, dynamixel"):
        open_bus("can")
    with pytest.raises(ValueError, match="watchdog_ms"):
        open_bus("dynamixel", port="/dev/x", ids=[1], period_s=0.1, watchdog_ms=100)
    for bad in (0.0, -1.0, float("nan"), 11.0):
        with pytest.raises(ValueError, match="setup_timeout_s"):
            open_bus("feetech", port="/dev/x", ids=[1], setup_timeout_s=bad)
    assert parse_ids("1-3,7") == (1, 2, 3, 7)


# ---- ports -------------------------------------------------------------------------------------
def test_a_port_in_use_names_the_process_holding_it(servos) -> None:
    emu = servos("feetech")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import serial, sys; s = serial.Serial(sys.argv[1], exclusive=True); "
         "print('held', flush=True); sys.stdin.read()", emu.port],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(PortError, match=f"in use: held by pid {holder.pid} \\(.*python") as exc:
            ServoBus("feetech", ServoBusConfig(emu.port, IDS)).start()
        assert exc.value.kind == "busy"
    finally:
        holder.communicate("", timeout=30)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a probe as an unprivileged user")
def test_a_permission_error_names_the_dialout_group_and_the_udev_rule(servos) -> None:
    import pwd

    emu = servos("feetech")
    os.chmod(emu.port, 0o600)  # a tty that is root's only, the way a fresh ttyACM is for a user
    nobody = pwd.getpwnam("nobody")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child drops to an unprivileged user and probes the port
        try:
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            try:
                check_port(emu.port)
                msg = "opened"
            except PortError as exc:
                msg = f"{exc.kind} {exc}"
            os.write(w, msg.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    os.waitpid(pid, 0)
    assert out.startswith("permission "), out
    assert "dialout" in out and "udev rule" in out


def test_missing_and_not_a_tty_ports_are_told_apart(tmp_path) -> None:
    with pytest.raises(PortError, match="does not exist") as e1:
        check_port(str(tmp_path / "ttyNONE"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(PortError, match="not a serial port") as e2:
        check_port(str(tmp_path / "file"))
    assert (e1.value.kind, e2.value.kind) == ("missing", "not_tty")


# ---- the vendor SDKs as hosts against our emulated buses ---------------------------------------
def test_the_feetech_sdk_pings_reads_and_sync_writes_our_emulated_bus(servos) -> None:
    scs = pytest.importorskip("scservo_sdk")
    emu = servos("feetech")
    port = patient_port(scs, emu.port)
    assert port.openPort() and port.setBaudRate(1_000_000)
    try:
        ph = scs.PacketHandler(0)
        for sid in IDS:
            model, result, error = sdk_retry(lambda: ph.ping(port, sid), scs.COMM_SUCCESS)  # noqa: B023
            assert (model, result, error) == (ft.STS3215_MODEL, scs.COMM_SUCCESS, 0)
        pos, result, _ = sdk_retry(lambda: ph.read2ByteTxRx(port, 4, ft.PRESENT_POSITION), scs.COMM_SUCCESS)
        assert result == scs.COMM_SUCCESS and pos == 2048
        assert (
            sdk_retry(lambda: ph.write1ByteTxRx(port, 4, ft.TORQUE_ENABLE, 1), scs.COMM_SUCCESS)[0]
            == scs.COMM_SUCCESS
        )
        gsw = scs.GroupSyncWrite(port, ph, ft.GOAL_POSITION, 2)
        for sid in IDS:
            gsw.addParam(sid, [(2000 + sid) & 0xFF, (2000 + sid) >> 8])
        assert gsw.txPacket() == scs.COMM_SUCCESS
        assert emu.wait_until(lambda e: _goals(e) == [2001 + i for i in range(6)], WAIT_S)
        gsr = scs.GroupSyncRead(port, ph, ft.PRESENT_POSITION, 8)
        for sid in IDS:
            gsr.addParam(sid)
        assert sdk_retry(gsr.txRxPacket, scs.COMM_SUCCESS) == scs.COMM_SUCCESS
        assert all(gsr.isAvailable(sid, ft.PRESENT_POSITION, 2) for sid in IDS)
        assert gsr.getData(1, ft.PRESENT_VOLTAGE, 1) == 120
    finally:
        port.closePort()


def test_the_dynamixel_sdk_pings_reads_and_sync_writes_our_emulated_bus(servos) -> None:
    sdk = pytest.importorskip("dynamixel_sdk")
    emu = servos("dynamixel")
    port = patient_port(sdk, emu.port)
    assert port.openPort() and port.setBaudRate(1_000_000)
    try:
        ph = sdk.PacketHandler(2.0)
        for sid in IDS:
            model, result, error = sdk_retry(lambda: ph.ping(port, sid), sdk.COMM_SUCCESS)  # noqa: B023
            assert (model, result, error) == (dx.XM430_W350_MODEL, sdk.COMM_SUCCESS, 0)
        pos, result, _ = sdk_retry(lambda: ph.read4ByteTxRx(port, 2, dx.PRESENT_POSITION), sdk.COMM_SUCCESS)
        assert result == sdk.COMM_SUCCESS and pos == 2048
        gsw = sdk.GroupSyncWrite(port, ph, dx.GOAL_POSITION, 4)
        for sid in IDS:
            gsw.addParam(sid, list((1000 + sid).to_bytes(4, "little")))
        assert gsw.txPacket() == sdk.COMM_SUCCESS
        assert emu.wait_until(lambda e: _goals(e) == [1001 + i for i in range(6)], WAIT_S)
        gsr = sdk.GroupSyncRead(port, ph, dx.PRESENT_POSITION, 4)
        for sid in IDS:
            gsr.addParam(sid)
        assert sdk_retry(gsr.txRxPacket, sdk.COMM_SUCCESS) == sdk.COMM_SUCCESS
        assert [gsr.getData(sid, dx.PRESENT_POSITION, 4) for sid in IDS] == [2048] * 6
        assert sdk_retry(gsr.fastSyncRead, sdk.COMM_SUCCESS) == sdk.COMM_SUCCESS
        assert [gsr.getData(sid, dx.PRESENT_POSITION, 4) for sid in IDS] == [2048] * 6
    finally:
        port.closePort()


# ---- the emulated servos as real ones behave ---------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_an_incomplete_packet_is_dropped_after_the_inter_byte_timeout(kind, servos) -> None:
    """A header announcing a long packet, then silence: the servos drop it once the next byte is
    late, so the next instruction is answered (before: deaf until 255 / 1023 more bytes came)."""
    import serial

    emu = servos(kind)
    mod = ft if kind == "feetech" else dx
    truncated = b"\xff\xff\x01\xff" if kind == "feetech" else dx.HEADER + b"\x01\xff\x03"  # LEN 255 / 1023
    expect = mod.status_size(0 if kind == "feetech" else 3)
    with serial.Serial(emu.port, 1_000_000, timeout=WAIT_S) as s:
        s.write(truncated)
        assert emu.wait_until(lambda e: e._parser.pending > 0, WAIT_S)
        time.sleep(3 * emu.config.inter_byte_timeout_s)  # a gap: only its lower bound matters
        s.write(mod.ping(1))
        reply = s.read(expect)
    assert emu.partial_dropped == 1
    pkts = mod.Parser().feed(reply)
    assert [p.servo_id for p in pkts] == [1] and pkts[0].code == 0

"""Feetech and Dynamixel packets as bytes: against the vendor SDKs byte for byte (code nobody here
wrote), the documented check values, the receivers' resync, sign-magnitude, calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import dynamixel as dx
from firmware_bridge import feetech as ft
from firmware_bridge.calibration import Calibration
from firmware_bridge.servo_common import ServoError

scs = pytest.importorskip("scservo_sdk")
dxl = pytest.importorskip("dynamixel_sdk")


class CapturePort:
    """What a vendor SDK writes, with no device behind it (every reply times out at once)."""

    def __init__(self) -> None:
        self.is_using = False
        self.written: list[bytes] = []

    def clearPort(self) -> None:  # noqa: N802 - the SDK's names
        pass

    def writePort(self, packet) -> int:  # noqa: N802
        self.written.append(bytes(packet))
        return len(packet)

    def readPort(self, length: int) -> list[int]:  # noqa: N802
        return []

    def setPacketTimeout(self, *_: object) -> None:  # noqa: N802
        pass

    def setPacketTimeoutMillis(self, *_: object) -> None:  # noqa: N802
        pass

    def isPacketTimeout(self) -> bool:  # noqa: N802
        return True

    def last(self) -> bytes:
        self.is_using = False
        return self.written[-1]


def test_feetech_packets_equal_the_vendor_sdk_byte_for_byte() -> None:
    port, ph = CapturePort(), scs.PacketHandler(0)
    ph.ping(port, 1)
    assert port.written[0] == ft.ping(1)
    ph.readTxRx(port, 3, ft.PRESENT_POSITION, 8)
    assert port.last() == ft.read(3, ft.PRESENT_POSITION, 8)
    ph.write2ByteTxRx(port, 2, ft.GOAL_POSITION, ft.to_sign_magnitude(-300, 15))
    assert port.last() == ft.write(2, ft.GOAL_POSITION, ft.word(ft.to_sign_magnitude(-300, 15)))
    ph.write1ByteTxOnly(port, ft.BROADCAST_ID, ft.TORQUE_ENABLE, 0)
    assert port.last() == ft.write(ft.BROADCAST_ID, ft.TORQUE_ENABLE, b"\x00")
    goals = {1: 2048, 2: 100, 3: 4095, 4: 0, 5: 1234, 6: 3000}
    gsw = scs.GroupSyncWrite(port, ph, ft.GOAL_POSITION, 2)
    for i, t in goals.items():
        gsw.addParam(i, [t & 0xFF, t >> 8])
    gsw.txPacket()
    assert port.last() == ft.sync_write(ft.GOAL_POSITION, 2, [(i, ft.word(t)) for i, t in goals.items()])
    gsr = scs.GroupSyncRead(port, ph, ft.PRESENT_POSITION, 8)
    for i in goals:
        gsr.addParam(i)
    gsr.txPacket()
    assert port.last() == ft.sync_read(ft.PRESENT_POSITION, 8, list(goals))


def test_feetech_scs_is_big_endian_like_the_sdk_with_protocol_end_1() -> None:
    port, ph = CapturePort(), scs.PacketHandler(1)
    try:
        ph.write2ByteTxRx(port, 1, ft.GOAL_POSITION, 0x1234)
        assert port.last() == ft.write(1, ft.GOAL_POSITION, ft.word(0x1234, big_endian=True))
    finally:
        scs.PacketHandler(0)  # the SDK keeps the byte order in a module global


def test_dynamixel_packets_equal_the_vendor_sdk_byte_for_byte() -> None:
    port, ph = CapturePort(), dxl.PacketHandler(2.0)
    ph.ping(port, 1)
    assert port.last() == dx.ping(1) == bytes.fromhex("ffff fd00 0103 0001 194e")  # the documented check
    ph.readTxRx(port, 4, dx.PRESENT_POSITION, 4)
    assert port.last() == dx.read(4, dx.PRESENT_POSITION, 4)
    ph.write4ByteTxRx(port, 2, dx.GOAL_POSITION, (-1000) & 0xFFFFFFFF)
    assert port.last() == dx.write(2, dx.GOAL_POSITION, (-1000).to_bytes(4, "little", signed=True))
    ph.write1ByteTxRx(port, 3, dx.BUS_WATCHDOG, 5)
    assert port.last() == dx.write(3, dx.BUS_WATCHDOG, b"\x05")
    goals = {1: 2048, 2: -5, 3: 4095, 4: 0, 5: 70000, 6: 3000}
    gsw = dxl.GroupSyncWrite(port, ph, dx.GOAL_POSITION, 4)
    for i, t in goals.items():
        gsw.addParam(i, list((t & 0xFFFFFFFF).to_bytes(4, "little")))
    gsw.txPacket()
    blocks = [(i, t.to_bytes(4, "little", signed=True)) for i, t in goals.items()]
    assert port.last() == dx.sync_write(dx.GOAL_POSITION, 4, blocks)
    gsr = dxl.GroupSyncRead(port, ph, *dx.STATE_BLOCK)
    for i in goals:
        gsr.addParam(i)
    gsr.txPacket()
    assert port.last() == dx.sync_read(*dx.STATE_BLOCK, list(goals))
    gsr.fastSyncReadTxPacket()
    assert port.last() == dx.sync_read(*dx.STATE_BLOCK, list(goals), fast=True)
    gbr = dxl.GroupBulkRead(port, ph)
    reads = [(1, dx.PRESENT_POSITION, 4), (2, dx.PRESENT_CURRENT, 2), (3, dx.HARDWARE_ERROR_STATUS, 1)]
    for r in reads:
        gbr.addParam(*r)
    gbr.txPacket()
    assert port.last() == dx.bulk_read(reads)


def test_dynamixel_stuffing_where_the_sdk_4_1_drops_it() -> None:
    """FF FF FD inside a packet must go out as FF FF FD FD (protocol 2.0). dynamixel-sdk 4.1.0's
    txPacket discards addStuffing's result when stuffing lengthens the packet, so it sends the raw
    pattern; we follow the protocol. The SDK's own addStuffing, used on its own, agrees with us."""
    raw = (
        dx.HEADER + bytes((1,)) + (9).to_bytes(2, "little") + bytes((dx.WRITE,)) + b"\x74\x00\xff\xff\xfd\x00"
    )
    ours = dx.write(1, dx.GOAL_POSITION, b"\xff\xff\xfd\x00")
    sdk = dxl.Protocol2PacketHandler().addStuffing(list(raw) + [0, 0])
    assert ours[:-2] == bytes(sdk[:-2]) and b"\xff\xff\xfd\xfd" in ours
    assert dx.Parser().feed(ours)[0].params == b"\x74\x00\xff\xff\xfd\x00"


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 252), st.integers(0, 0x7F), st.binary(max_size=40), st.binary(max_size=20))
def test_dynamixel_status_round_trips_with_stuffing_and_garbage_before(sid, err, params, junk) -> None:
    pkt = dx.status(sid, err, params)
    got = dx.Parser().feed(junk + pkt)
    assert got[-1].servo_id == sid and got[-1].code == err and got[-1].params == params


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 253), st.integers(0, 0xFF), st.binary(max_size=40), st.binary(max_size=20))
def test_feetech_parser_resyncs_on_ff_ff_after_garbage(sid, code, params, junk) -> None:
    """No stuffing: garbage that looks like a header with a long length holds the parser until
    that many bytes came and the checksum fails; then it finds the packets again."""
    pkt = ft.packet(sid, code, params)
    parser = ft.Parser()
    got = parser.feed(junk + pkt * 60)  # >= 360 bytes: more than any length byte can claim
    assert got[-1].servo_id == sid and got[-1].code == code and got[-1].params == params


def test_feetech_checksum_error_is_counted_and_the_next_packet_read() -> None:
    good = ft.packet(1, 0, b"\x10\x20")
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    parser = ft.Parser()
    got = parser.feed(bytes(bad) + good)
    assert [p.servo_id for p in got] == [1] and parser.checksum_errors == 1
    assert ft.checksum(good[2:-1]) == good[-1] == (~(1 + 4 + 0 + 0x10 + 0x20)) & 0xFF


def test_fast_sync_read_reply_splits_per_servo_and_its_last_crc_is_the_packets() -> None:
    blocks = [(1, 0, bytes(range(21))), (2, 0x80, bytes(21)), (3, 0, bytes([0xFF] * 21))]
    pkt = dx.fast_sync_status(blocks)
    got = dx.Parser().feed(pkt)
    assert len(got) == 1 and got[0].servo_id == dx.BROADCAST_ID
    split = dx.parse_fast_sync(got[0].params, 21)
    assert [(p.servo_id, p.code, p.params) for p in split] == blocks


def test_sign_magnitude_is_not_twos_complement() -> None:
    assert ft.to_sign_magnitude(-5, 15) == 0x8005 and ft.from_sign_magnitude(0x8005, 15) == -5
    assert ft.to_sign_magnitude(-5, 10) == 0x405 and ft.from_sign_magnitude(0x405, 10) == -5
    assert ft.from_sign_magnitude(0x7FFF, 15) == 32767
    with pytest.raises(ValueError, match="bit 11"):
        ft.to_sign_magnitude(2048, 11)


def test_error_bits_map_to_one_vocabulary() -> None:
    assert ft.servo_error(ft.ERR_OVERLOAD | ft.ERR_VOLTAGE) == ServoError.OVERLOAD | ServoError.VOLTAGE
    assert dx.servo_error(0x80) == ServoError.HARDWARE and dx.servo_error(0x04) == ServoError.COMMAND
    assert dx.hardware_error(0x20) == ServoError.OVERLOAD


def test_lerobot_calibration_maps_ticks_to_radians_and_back(tmp_path) -> None:
    so101 = {
        "shoulder_pan": {
            "id": 1,
            "drive_mode": 0,
            "homing_offset": -1470,
            "range_min": 758,
            "range_max": 3292,
        },
        "gripper": {"id": 6, "drive_mode": 1, "homing_offset": 1000, "range_min": 2000, "range_max": 3000},
    }
    path = tmp_path / "arm.json"
    path.write_text(json.dumps(so101))
    cal = Calibration.from_lerobot(path)
    assert cal.ids == (1, 6) and cal.names == ("shoulder_pan", "gripper")
    mid = (758 + 3292) / 2
    # hand-computed: one quarter turn above the middle tick is +pi/2; drive_mode 1 flips the sign
    rad = cal.to_radians(np.array([mid + 1024, 2500 + 1024]))
    assert rad[0] == pytest.approx(np.pi / 2, abs=1e-6) and rad[1] == pytest.approx(-np.pi / 2, abs=1e-6)
    assert cal.to_ticks(rad).tolist() == [mid + 1024, 3000]  # the gripper's tick clipped to its range_max
    lo, hi = cal.limits()
    assert lo[0] == pytest.approx(-(3292 - 758) / 2 * 2 * np.pi / 4096, rel=1e-6) and lo[1] < 0 < hi[1]
    path.write_text(json.dumps({"x": {"id": 1}}))
    with pytest.raises(ValueError, match="lacks"):
        Calibration.from_lerobot(path)

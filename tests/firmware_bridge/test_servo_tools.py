"""The one-off servo commands' own rules (firmware_bridge/servo_tools.py), on a fake port and clock."""

from __future__ import annotations

import pytest
from fw_helpers import Clock, EmuPort

from firmware_bridge import feetech as ft
from firmware_bridge.errors import LinkError
from firmware_bridge.servo_dialects import dialect
from firmware_bridge.servo_emulator import EmulatedServoBus, ServoEmulatorConfig
from firmware_bridge.servo_tools import FeetechCalibrator
from firmware_bridge.servo_wire import ServoWire


class LossyPort(EmuPort):
    """Loses the replies of servo ``lose`` to the first ``times`` requests that reach it."""

    def __init__(self, emu: EmulatedServoBus, clock: Clock, lose: int, times: int) -> None:
        super().__init__(emu, [True], clock)
        self.lose, self.times = lose, times

    def write(self, data: bytes, deadline: float) -> None:
        super().write(data, deadline)
        if self.times > 0 and self.lose in [p.servo_id for p in ft.Parser().feed(self.pending)]:
            self.times -= 1
            kept = [p for p in ft.Parser().feed(self.pending) if p.servo_id != self.lose]
            self.pending = b"".join(ft.packet(p.servo_id, p.code, p.params) for p in kept)


def _calibrator(lose: int, times: int) -> tuple[FeetechCalibrator, LossyPort]:
    emu = EmulatedServoBus(ServoEmulatorConfig("feetech", (1, 2, 3)))
    clock = Clock()
    port = LossyPort(emu, clock, lose, times)
    wire = ServoWire(port, dialect("feetech"), 1_000_000, clock)
    return FeetechCalibrator(wire, (1, 2, 3), ("a", "b", "c"), timeout_s=0.05), port


def test_positions_reads_a_servo_whose_reply_was_lost_again_instead_of_failing_the_calibration() -> None:
    """Before: one sync read, and one lost reply (a loaded host, a noisy bus) aborted a whole
    calibration with "no Present_Position"; now the missing servos are read again, as every
    write of the calibration is tried three times."""
    cb, port = _calibrator(lose=2, times=2)
    assert cb.positions() == [2048, 2048, 2048]
    reads = [data for _, data in port.writes if data[4] == ft.SYNC_READ]
    assert reads[1:] == [ft.sync_read(ft.PRESENT_POSITION, 2, [2])] * 2  # only the missing one again


def test_positions_names_the_servos_that_never_answer() -> None:
    cb, port = _calibrator(lose=3, times=99)
    with pytest.raises(LinkError, match=r"no Present_Position from servos \[3\]"):
        cb.positions()
    assert sum(1 for _, data in port.writes if data[4] == ft.SYNC_READ) == 3

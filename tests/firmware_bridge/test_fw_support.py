"""Clock sync, the periodic stream thread, the fault transport, configs, the CLI, import rules."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from fw_helpers import wait_for

from firmware_bridge.config import BridgeConfig, JointLimits, LinkConfig
from firmware_bridge.faults import FaultPlan, FaultyTransport
from firmware_bridge.messages import Heartbeat, encode
from firmware_bridge.streamer import PeriodicThread
from firmware_bridge.timesync import ClockSync, exchange, line_fit

PY = sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_exchange_formula() -> None:
    # controller 1000 us ahead, 100 us each way, 50 us inside the controller
    t1, t2, t3, t4 = 0, 1100, 1150, 250
    assert exchange(t1, t2, t3, t4) == (1000.0, 200.0)


def test_clock_sync_recovers_offset_and_drift_exactly_with_symmetric_delays() -> None:
    sync = ClockSync(window=32)
    offset0, drift = 5_000_000.0, 250e-6
    for i in range(40):
        t1 = 1_000_000 + i * 20_000
        ctrl = lambda h: h + offset0 + drift * h  # noqa: E731
        d = 300 if i % 3 else 5000  # every third exchange sat in a buffer one way: filtered out
        t2 = int(ctrl(t1 + 300))
        t4 = t1 + 300 + 50 + d
        t3 = int(ctrl(t1 + 300 + 50))
        sync.add(t1, t2, t3, t4)
    est = sync.estimate
    assert est is not None
    assert est.drift_ppm == pytest.approx(250.0, abs=2.0)
    assert est.offset_us == pytest.approx(offset0 + drift * est.at_us, abs=3.0)


def test_clock_sync_maps_wrapped_u32_timestamps() -> None:
    sync = ClockSync()
    for i in range(4):  # controller = host + 2**32 + 7 (its u32 counter wrapped once)
        t1 = i * 1000
        sync.add(t1, t1 + 2**32 + 7 + 10, t1 + 2**32 + 7 + 10, t1 + 20)
    host_now = 5000.0
    ctrl_u32 = (int(host_now) - 100 + 2**32 + 7) % 2**32  # sent 100 us ago
    assert sync.to_host_us(ctrl_u32, host_now) == pytest.approx(host_now - 100, abs=1)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_periodic_thread_keeps_absolute_deadlines_and_skips_overruns() -> None:
    clock = FakeClock()
    deadlines: list[float] = []
    holder: list[PeriodicThread] = []

    def tick(k: int, deadline: float) -> None:
        deadlines.append(deadline)
        clock.t += 0.0004  # the tick's own work does not shift the schedule
        if k == 5:
            clock.t += 0.0035  # one slow tick: 3.5 periods late
        if len(deadlines) == 12:
            holder[0]._stop.set()

    pt = PeriodicThread(1000.0, tick, clock=clock, sleep=clock.sleep)
    holder.append(pt)
    pt.run()
    d = [round(x * 1e3, 6) for x in deadlines]
    assert d[:6] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    # tick 5 ends at 8.9 ms: slots 6 and 7 are more than a period late and are skipped (no burst);
    # slot 8 is 0.9 ms late and runs at once
    assert d[6] == 8.0 and pt.overruns == 2
    assert d[7:] == [9.0, 10.0, 11.0, 12.0, 13.0]


def test_periodic_thread_rejects_bad_rate_and_joins() -> None:
    with pytest.raises(ValueError, match="rate_hz"):
        PeriodicThread(0.0, lambda k, t: None)
    n: list[int] = []
    spent = time.process_time()

    def tick(k: int, deadline: float) -> None:
        n.append(k)
        sum(range(20_000))  # some CPU in the tick, so its thread time is measurable

    # a real thread on a fake clock: on the wall clock a starved machine skips slots (overruns,
    # pinned above), and the ticks would not be 0, 1, 2, ... (seen at load 13: 0, 1, 7, 8, 11)
    clock = FakeClock()
    pt = PeriodicThread(200.0, tick, clock=clock, sleep=clock.sleep)
    pt.start()
    assert wait_for(lambda: len(n) >= 5), "ticks stopped"
    pt.stop()
    assert not pt._thread.is_alive()  # type: ignore[union-attr]
    assert n[:5] == [0, 1, 2, 3, 4]
    # the thread's own CPU time: some, and no more than the whole process spent meanwhile
    assert 0.0 < pt.cpu_s <= time.process_time() - spent


class Sink:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.frames.append(data)

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        return b""

    def cancel_read(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_fault_transport_frame_faults_are_counted_and_seeded() -> None:
    frames = [encode(Heartbeat(), i, 0) for i in range(2000)]

    def run(seed: int) -> tuple[list[bytes], FaultyTransport]:
        sink = Sink()
        ft = FaultyTransport(
            sink, FaultPlan(drop_frame_p=0.1, duplicate_frame_p=0.1, reorder_frame_p=0.1), seed
        )
        for f in frames:
            ft.write(f)
        return sink.frames, ft

    out, ft = run(5)
    c = ft.counts
    assert 150 < c.dropped_frames < 250 and 150 < c.duplicated_frames < 250 and 100 < c.reordered_frames < 250
    assert len(out) == 2000 - c.dropped_frames + c.duplicated_frames - (1 if ft._held else 0)
    assert run(5)[0] == out and run(6)[0] != out  # seeded: replays exactly


def test_fault_transport_corrupts_bytes_at_the_planned_rate() -> None:
    sink = Sink()
    ft = FaultyTransport(sink, FaultPlan(corrupt_byte_p=0.01), seed=1)
    data = bytes(range(1, 101))
    for _ in range(1000):
        ft.write(data)
    changed = sum(a != b for f in sink.frames for a, b in zip(f, data, strict=True))
    assert changed == ft.counts.corrupted_bytes and 800 < changed < 1200  # 1% of 100,000 bytes


def test_fault_plan_and_configs_name_bad_values() -> None:
    with pytest.raises(ValueError, match="corrupt_byte_p"):
        FaultPlan(corrupt_byte_p=1.5)
    with pytest.raises(ValueError, match="joint 1"):
        JointLimits((-1.0, 1.0), (1.0, 0.0), (1.0, 1.0), (0.1, 0.1))
    with pytest.raises(ValueError, match="watchdog_ms"):
        BridgeConfig(JointLimits.uniform(2), watchdog_ms=1)
    with pytest.raises(ValueError, match="stream period"):
        BridgeConfig(JointLimits.uniform(2), rate_hz=10, watchdog_ms=50)
    with pytest.raises(ValueError, match="retries"):
        LinkConfig("/dev/null", retries=0)


def test_cli_register_adds_leaf_commands_with_func() -> None:
    from firmware_bridge import cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["firmware", "emulate", "--joints", "4", "--rate-hz", "500"])
    assert args.func.__wrapped__ is cli.cmd_emulate and args.joints == 4 and args.rate_hz == 500.0
    args = parser.parse_args(["firmware", "ping", "--port", "/dev/ttyX"])
    assert args.func.__wrapped__ is cli.cmd_ping


def test_cli_emulate_prints_its_port_and_ping_talks_to_it() -> None:
    proc = subprocess.Popen(
        [PY, "-m", "firmware_bridge.cli", "firmware", "emulate", "--joints", "2", "--duration", "30"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/pts/"), port
        ping = subprocess.run(
            [PY, "-m", "firmware_bridge.cli", "firmware", "ping", "--port", port, "--count", "5",
             "--timeout", "5"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert ping.returncode == 0, ping.stderr
        assert "2 joints" in ping.stdout and "round trip" in ping.stdout
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_firmware_bridge_imports_without_torch_and_cli_import_is_light() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises
        "import firmware_bridge.cli\n"
        "assert 'numpy' not in sys.modules and 'serial' not in sys.modules, 'cli import is heavy'\n"
        "import firmware_bridge.bridge, firmware_bridge.emulator, firmware_bridge.interface\n"
        "print('ok')\n"
    )
    out = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_bridge_satisfies_the_motor_bus_protocol() -> None:
    from firmware_bridge.bridge import FirmwareBridge
    from firmware_bridge.interface import MotorBus

    for name in ("send_setpoint", "latest_telemetry", "health", "close"):
        assert callable(getattr(FirmwareBridge, name))
    assert issubclass(FirmwareBridge, MotorBus)


def test_the_clock_syncs_line_fit_is_numpys_least_squares_line() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        x = np.sort(rng.uniform(-16e6, 0.0, size=int(rng.integers(2, 64))))
        y = 5e6 + 250e-6 * x + rng.normal(0.0, 40.0, size=len(x))
        assert np.allclose(line_fit(x, y), np.polyfit(x, y, 1), rtol=1e-9, atol=1e-6)

"""Sustained setpoint streaming over a pseudo-terminal, against the emulated controller.

The controller runs in its own process (`python -m firmware_bridge.cli firmware emulate`), as a
real board would; the host is a FirmwareBridge talking to it through pyserial. The host streams
setpoints at --rate-hz, the controller sends telemetry at --telemetry-hz, for --duration seconds.

Reports: loss in both directions (must be zero), send -> telemetry-echo round trip p50/p99/max,
CPU of the stream thread and of the whole host process, and the wire time the same traffic would
need on a real UART at 1 Mbit/s (8N1: 10 bits per byte), so the numbers read against the
physical limit. Exit status 1 if anything was lost.

    .venv/bin/python bench/bench_serial_stream.py --duration 60
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import threading
import time

import numpy as np

from firmware_bridge.bridge import FirmwareBridge
from firmware_bridge.config import BridgeConfig, JointLimits, LinkConfig
from firmware_bridge.messages import Setpoint, TelemetryMsg, encode

BITS_PER_BYTE = 10  # 8N1 UART: start + 8 data + stop


def wire_bytes(msg) -> int:
    return len(encode(msg, 0, 0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of streaming (default 60)")
    ap.add_argument("--joints", type=int, default=6)
    ap.add_argument("--rate-hz", type=float, default=500.0, help="setpoint stream rate")
    ap.add_argument("--telemetry-hz", type=int, default=500)
    ap.add_argument("--tick-hz", type=float, default=1000.0, help="controller tick rate")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    n = args.joints

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    emu = subprocess.Popen(
        [sys.executable, "-m", "firmware_bridge.cli", "firmware", "emulate", "--joints", str(n),
         "--rate-hz", str(args.tick_hz), "--telemetry-hz", str(args.telemetry_hz)],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert emu.stdout is not None
    port = emu.stdout.readline().strip()
    cfg = BridgeConfig(
        JointLimits.uniform(n),
        rate_hz=args.rate_hz,
        telemetry_hz=args.telemetry_hz,
        watchdog_ms=100,
        timesync_period_s=0.1,
    )
    bridge = FirmwareBridge(cfg, LinkConfig(port))
    # request -> response latency of every time-sync exchange: the link's own round trip, without
    # the wait for the next telemetry slot that the setpoint echo includes
    sync_rtt_ms: list[float] = []
    add = bridge.clock_sync.add

    def add_and_record(t1: int, t2: int, t3: int, t4: int) -> None:
        sync_rtt_ms.append((t4 - t1) / 1e3)
        add(t1, t2, t3, t4)

    bridge.clock_sync.add = add_and_record  # type: ignore[method-assign]
    try:
        bridge.start(timeout_s=10.0)
        ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        cpu_stream0 = bridge.stream.cpu_s
        sent0, tx0, rx0 = bridge.setpoints_sent, bridge.link.tx.bytes, bridge.link.rx.bytes
        # the "edge loop": a new target every stream period on absolute deadlines
        period = 1.0 / args.rate_hz
        ev = threading.Event()
        phase = np.linspace(0, math.pi, n)
        k = 0
        while True:
            now = time.monotonic()
            if now - t0 >= args.duration:
                break
            bridge.send_setpoint((0.5 * np.sin(2 * math.pi * 0.5 * (now - t0) + phase)).astype(np.float32))
            k += 1
            ev.wait(max(0.0, t0 + k * period - time.monotonic()))
        elapsed = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu_stream = bridge.stream.cpu_s - cpu_stream0
        bridge.stream.stop()
        frames_sent = bridge.link.tx.frames
        # wait until the controller's telemetry accounts for every host frame (or 2 s)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            tel = bridge._last_tel
            if isinstance(tel, TelemetryMsg) and tel.rx_good + tel.rx_gap + tel.rx_bad >= frames_sent:
                break
            ev.wait(0.01)
        h = bridge.health()
        tel = bridge._last_tel
        rtt = np.fromiter(bridge.rtt.samples, float) * 1e3
        rx = bridge.link.rx
        setpoints = bridge.setpoints_sent - sent0
        zeros = (0.0,) * n
        sp_b = wire_bytes(Setpoint(zeros))
        tel_b = wire_bytes(TelemetryMsg(0, 0, 0, 0, 0, 0, 0, 0, zeros, zeros, zeros))
        tx_rate = (bridge.link.tx.bytes - tx0) / elapsed
        rx_rate = (bridge.link.rx.bytes - rx0) / elapsed
        res = {
            "duration_s": round(elapsed, 2),
            "joints": n,
            "rate_hz": args.rate_hz,
            "telemetry_hz": args.telemetry_hz,
            "setpoints_sent": setpoints,
            "host_frames_sent": frames_sent,
            "controller_rx_good": tel.rx_good if tel else None,
            "controller_rx_bad": tel.rx_bad if tel else None,
            "controller_rx_gap": tel.rx_gap if tel else None,
            "controller_rx_stale": tel.rx_stale if tel else None,
            "host_frames_received": rx.frames,
            "host_decode_errors": rx.decode_errors,
            "host_rx_seq_gaps": rx.seq_gaps,
            "stream_overruns": h.stream_overruns,
            "rtt_samples": int(rtt.size),
            "rtt_p50_ms": round(float(np.percentile(rtt, 50)), 3) if rtt.size else None,
            "rtt_p99_ms": round(float(np.percentile(rtt, 99)), 3) if rtt.size else None,
            "rtt_max_ms": round(float(rtt.max()), 3) if rtt.size else None,
            "timesync_rtt_samples": len(sync_rtt_ms),
            "timesync_rtt_p50_ms": round(float(np.percentile(sync_rtt_ms, 50)), 3) if sync_rtt_ms else None,
            "timesync_rtt_p99_ms": round(float(np.percentile(sync_rtt_ms, 99)), 3) if sync_rtt_ms else None,
            "stream_thread_cpu_pct": round(100 * cpu_stream / elapsed, 2),
            "host_process_cpu_pct": round(
                100 * ((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)) / elapsed, 1
            ),
            "clock_offset_us": round(h.clock_offset_us, 1) if h.clock_offset_us is not None else None,
            "clock_drift_ppm": round(h.clock_drift_ppm, 2) if h.clock_drift_ppm is not None else None,
            "setpoint_frame_wire_bytes": sp_b,
            "telemetry_frame_wire_bytes": tel_b,
            "host_to_ctrl_bytes_per_s": round(tx_rate),
            "ctrl_to_host_bytes_per_s": round(rx_rate),
            "wire_us_per_setpoint_at_1mbit": sp_b * BITS_PER_BYTE,
            "wire_us_per_telemetry_at_1mbit": tel_b * BITS_PER_BYTE,
            "link_use_host_to_ctrl_at_1mbit_pct": round(100 * tx_rate * BITS_PER_BYTE / 1e6, 1),
            "link_use_ctrl_to_host_at_1mbit_pct": round(100 * rx_rate * BITS_PER_BYTE / 1e6, 1),
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}",
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }
    finally:
        bridge.close()
        emu.terminate()
        _, err = emu.communicate(timeout=30)
    res["controller_report"] = err.strip().splitlines()[-1] if err.strip() else ""
    lost = (
        (res["controller_rx_gap"] or 0) + (res["controller_rx_bad"] or 0) + res["host_rx_seq_gaps"]
        + res["host_decode_errors"] + (res["controller_rx_stale"] or 0)
        + (res["host_frames_sent"] - (res["controller_rx_good"] or 0))
    )  # fmt: skip
    res["lost_frames_total"] = lost
    for k_, v in res.items():
        print(f"{k_:38s} {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

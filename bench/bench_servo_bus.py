"""One 6-servo sync write + sync read cycle on the emulated bus: our ServoBus against the vendor SDK
(and raw pyserial doing the same exchange), on the same emulator and the same pty, clean and with
one servo silent. Medians and p99, measured side by side in one run (interleaved blocks).

    .venv/bin/python bench/bench_servo_bus.py [--kind feetech|dynamixel|both] [--cycles 2000]

The emulated bus runs in its own process (as the servos would be another device); it takes
"silent ID" / "loud ID" on stdin. Needs the dev extra (dynamixel-sdk, feetech-servo-sdk).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from firmware_bridge import dynamixel as dx  # noqa: E402
from firmware_bridge import feetech as ft  # noqa: E402
from firmware_bridge.servo_bus import ServoBus, ServoBusConfig  # noqa: E402

IDS = (1, 2, 3, 4, 5, 6)
EMULATOR = """
import sys
from firmware_bridge.servo_emulator import EmulatedServoBus, ServoEmulatorConfig
emu = EmulatedServoBus(ServoEmulatorConfig(sys.argv[1], tuple(range(1, 7)))).start()
print(emu.port, flush=True)
for line in sys.stdin:
    cmd, sid = line.split()
    emu.set_silent(int(sid), cmd == "silent")
    print("ok", flush=True)
emu.close()
"""


class Emulator:
    def __init__(self, kind: str) -> None:
        self.p = subprocess.Popen([sys.executable, "-c", EMULATOR, kind], cwd=ROOT, text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
        self.port = self.p.stdout.readline().strip()  # type: ignore[union-attr]

    def silent(self, sid: int, on: bool) -> None:
        self.p.stdin.write(f"{'silent' if on else 'loud'} {sid}\n")  # type: ignore[union-attr]
        self.p.stdin.flush()  # type: ignore[union-attr]
        assert self.p.stdout.readline().strip() == "ok"  # type: ignore[union-attr]

    def close(self) -> None:
        self.p.communicate("", timeout=30)


def ours(kind: str, port: str, n: int, bus: ServoBus) -> tuple[list[float], list[int]]:
    target = np.full(6, 0.2, dtype=np.float32)
    times, read = [], []
    for _ in range(n):
        bus.send_setpoint(target)
        times.append(bus.cycle())
        t = bus.latest_telemetry()
        read.append(int((~t.stale).sum()))  # type: ignore[union-attr]
    return times, read


class Sdk:
    """The vendor SDK doing the same: sync write goal positions, sync read the state block."""

    def __init__(self, kind: str, port: str) -> None:
        if kind == "feetech":
            import scservo_sdk as sdk

            self.ph = sdk.PacketHandler(0)
            addr, n, goal, size = ft.PRESENT_POSITION, 8, ft.GOAL_POSITION, 2
        else:
            import dynamixel_sdk as sdk

            self.ph = sdk.PacketHandler(2.0)
            (addr, n), goal, size = dx.STATE_BLOCK, dx.GOAL_POSITION, 4
        self.sdk, self.addr = sdk, addr
        self.port = sdk.PortHandler(port)
        assert self.port.openPort() and self.port.setBaudRate(1_000_000)
        self.gsw = sdk.GroupSyncWrite(self.port, self.ph, goal, size)
        for i in IDS:
            self.gsw.addParam(i, list((2100).to_bytes(size, "little")))
        self.gsr = sdk.GroupSyncRead(self.port, self.ph, addr, n)
        for i in IDS:
            self.gsr.addParam(i)

    def run(self, n: int) -> tuple[list[float], list[int]]:
        times, read = [], []
        for _ in range(n):
            t0 = time.monotonic()
            self.gsw.txPacket()
            self.gsr.txRxPacket()
            times.append(time.monotonic() - t0)
            read.append(sum(len(self.gsr.data_dict[i]) > 0 for i in IDS))
            for i in IDS:
                self.gsr.data_dict[i] = []
        return times, read

    def close(self) -> None:
        self.port.closePort()


def raw(kind: str, port: str, n: int) -> list[float]:
    """pyserial alone: write both packets, read until every reply's bytes are in."""
    import serial

    mod = ft if kind == "feetech" else dx
    if kind == "feetech":
        w = ft.sync_write(ft.GOAL_POSITION, 2, [(i, ft.word(2100)) for i in IDS])
        r, expect = ft.sync_read(ft.PRESENT_POSITION, 8, IDS), 6 * ft.status_size(8)
    else:
        w = dx.sync_write(dx.GOAL_POSITION, 4, [(i, (2100).to_bytes(4, "little")) for i in IDS])
        r, expect = dx.sync_read(*dx.STATE_BLOCK, IDS), 6 * mod.status_size(dx.STATE_BLOCK[1])
    times = []
    with serial.Serial(port, 1_000_000, timeout=0.1) as s:
        for _ in range(n):
            t0 = time.monotonic()
            s.write(w + r)
            got = 0
            while got < expect:
                got += len(s.read(expect - got))
            times.append(time.monotonic() - t0)
    return times


def stats(name: str, times: list[float], read: list[int] | None = None) -> str:
    a = np.array(times) * 1e3
    extra = f"  servos read per cycle: min {min(read)} median {int(np.median(read))}" if read else ""
    med, p99 = np.median(a), np.percentile(a, 99)
    return f"  {name:<26} n={len(a):5d}  median {med:7.3f} ms  p99 {p99:7.3f} ms{extra}"


def bench(kind: str, cycles: int, blocks: int = 5) -> None:
    emu = Emulator(kind)
    try:
        cfg = ServoBusConfig(emu.port, IDS, period_s=0.02)
        res: dict[str, tuple[list[float], list[int]]] = {k: ([], []) for k in ("ours", "sdk")}
        raw_t: list[float] = []
        per = cycles // blocks
        for _ in range(blocks):  # interleaved: load on the machine hits all three alike
            bus = ServoBus(kind, cfg)
            bus.start(stream=False)
            t, r = ours(kind, emu.port, per, bus)
            bus.close()
            res["ours"][0].extend(t)
            res["ours"][1].extend(r)
            sdk = Sdk(kind, emu.port)
            t, r = sdk.run(per)
            sdk.close()
            res["sdk"][0].extend(t)
            res["sdk"][1].extend(r)
            raw_t += raw(kind, emu.port, per)
        print(f"{kind}: clean cycle, 6 servos (sync write goal + sync read state block)")
        print(stats("ours (ServoBus.cycle)", *res["ours"]))
        print(stats("vendor SDK", *res["sdk"]))
        print(stats("raw pyserial", raw_t))
        bus = ServoBus(kind, cfg)
        bus.start(stream=False)
        emu.silent(3, True)
        t_o, r_o = ours(kind, emu.port, 200, bus)
        bus.close()
        sdk = Sdk(kind, emu.port)
        t_s, r_s = sdk.run(30)
        sdk.close()
        emu.silent(3, False)
        print(f"{kind}: servo 3 silent (control period 20 ms; ours: reply_timeout 3 ms, 1 retry)")
        print(stats("ours (ServoBus.cycle)", t_o, r_o))
        print(stats("vendor SDK", t_s, r_s))
    finally:
        emu.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kind", choices=("feetech", "dynamixel", "both"), default="both")
    ap.add_argument("--cycles", type=int, default=2000)
    args = ap.parse_args()
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    print(f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}")
    for kind in ("feetech", "dynamixel") if args.kind == "both" else (args.kind,):
        bench(kind, args.cycles)


if __name__ == "__main__":
    main()

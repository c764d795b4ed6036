"""One 6-servo sync write + sync read cycle on the emulated bus: our ServoBus against the vendor SDK
(and raw pyserial doing the same exchange), on the same emulator and the same pty, clean and with
one servo silent. Medians and p99, measured side by side in one run (interleaved blocks), and the
ratio ours / SDK of the medians; ``--repeats`` runs the whole comparison several times (a shared
machine: the ratio of each run is the number to read, the spread says how much load moved it).

    .venv/bin/python bench/bench_servo_bus.py [--kind feetech|dynamixel|both] [--cycles 2000]
        [--repeats 3] [--breakdown]

``--breakdown`` also prints where our host CPU goes in one cycle (no pty: the replies of the
emulator replayed from memory), per stage, in microseconds: packing the goals, the request and
reply bookkeeping with the parser, decoding the state blocks, tick <-> radian conversion,
building the telemetry, and the setpoint check (BusBase.send_setpoint).

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
        time.sleep(0.05)
        s.reset_input_buffer()  # replies a previous client gave up on must not count as ours
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


def clean(kind: str, emu: Emulator, cycles: int, blocks: int = 5) -> dict[str, list[float]]:
    """Clean cycles of ours, the SDK and raw pyserial, interleaved in ``blocks``."""
    cfg = ServoBusConfig(emu.port, IDS, period_s=0.02)
    res: dict[str, list[float]] = {"ours": [], "sdk": [], "raw": []}
    reads: dict[str, list[int]] = {"ours": [], "sdk": []}
    per = cycles // blocks
    for _ in range(blocks):  # interleaved: load on the machine hits all three alike
        bus = ServoBus(kind, cfg)
        bus.start(stream=False)
        t, r = ours(kind, emu.port, per, bus)
        bus.close()
        res["ours"] += t
        reads["ours"] += r
        sdk = Sdk(kind, emu.port)
        t, r = sdk.run(per)
        sdk.close()
        res["sdk"] += t
        reads["sdk"] += r
        res["raw"] += raw(kind, emu.port, per)
    assert min(reads["ours"]) == 6 or np.median(reads["ours"]) == 6
    return res


def silent(kind: str, emu: Emulator) -> None:
    cfg = ServoBusConfig(emu.port, IDS, period_s=0.02)
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
    print(f"  ratio of medians ours / SDK {np.median(t_o) / np.median(t_s):.3f}")


def breakdown(kind: str, n: int = 3000) -> None:
    """Host CPU of one cycle by stage (us), the emulator's replies replayed without a pty."""
    from firmware_bridge.servo_emulator import EmulatedServoBus as Local
    from firmware_bridge.servo_emulator import ServoEmulatorConfig as LocalCfg

    emu = Local(LocalCfg(kind, IDS))
    replies: dict[bytes, bytes] = {}

    class Replay:
        def __init__(self) -> None:
            self.pending = b""
            self.parser = ft.Parser() if kind == "feetech" else dx.Parser()

        def write(self, data: bytes, deadline: float) -> None:
            key = data[-40:]
            if key not in replies:
                replies[key] = b"".join(r for p in self.parser.feed(data) for r in emu._handle(p, 0.0))
            self.pending += replies[key]

        def read(self, deadline: float) -> bytes:
            d, self.pending = self.pending, b""
            return d

        def discard_input(self) -> int:
            self.pending = b""
            return 0

        def close(self) -> None:
            pass

    bus = ServoBus(kind, ServoBusConfig("/dev/null", IDS, period_s=0.02), open_port=Replay)
    bus.start(stream=False)
    target = np.full(6, 0.2, dtype=np.float32)
    ticks = bus.cal.to_ticks(target)
    goals = bus.d.goals(IDS, ticks, None, None)

    def per_call(fn) -> float:
        fn()
        t0 = time.process_time()
        for _ in range(n):
            fn()
        return (time.process_time() - t0) / n * 1e6

    def exchange() -> None:
        bus._exchange(bus._read_all, IDS, bus.d.state_len, 0.003, time.monotonic() + 0.02, goals)

    stages = {
        "whole cycle (send_setpoint + cycle)": lambda: (bus.send_setpoint(target), bus.cycle()),
        "send_setpoint (check, clamp)": lambda: bus.send_setpoint(target),
        "goals: radians -> ticks": lambda: bus.cal.to_ticks(np.asarray(bus._target)),
        "goals: sync write packet": lambda: bus.d.goals(IDS, ticks, None, None),
        "write + read + parse replies": exchange,
        "decode state blocks": lambda: bus.d.decode_block(bus._raw),
        "ticks -> radians (pos, vel)": lambda: (bus.cal.to_radians(ticks), bus.cal.speed_to_radians(ticks)),
        "publish telemetry (all of it)": lambda: bus._publish(time.monotonic()),
    }
    print(f"{kind}: host CPU per cycle by stage (process time, {n} calls each, replies replayed)")
    for name, fn in stages.items():
        print(f"  {name:<38} {per_call(fn):7.1f} us")
    bus.close()
    emu.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kind", choices=("feetech", "dynamixel", "both"), default="both")
    ap.add_argument("--cycles", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=1, help="whole comparisons, each with its own ratio")
    ap.add_argument("--breakdown", action="store_true", help="also the host CPU per stage of one cycle")
    args = ap.parse_args()
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    load = os.getloadavg()
    print(f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at start")  # fmt: skip
    for kind in ("feetech", "dynamixel") if args.kind == "both" else (args.kind,):
        emu = Emulator(kind)
        try:
            ratios = []
            for rep in range(args.repeats):
                res = clean(kind, emu, args.cycles)
                print(f"{kind}: clean cycle, 6 servos (sync write goals + sync read states), run {rep + 1}")
                print(stats("ours (ServoBus.cycle)", res["ours"]))
                print(stats("vendor SDK", res["sdk"]))
                print(stats("raw pyserial", res["raw"]))
                ratios.append(float(np.median(res["ours"]) / np.median(res["sdk"])))
                print(f"  ratio of medians ours / SDK {ratios[-1]:.3f}")
            print(f"{kind}: ratio ours / SDK over {len(ratios)} runs: "
                  + ", ".join(f"{r:.3f}" for r in ratios) + f" (median {np.median(ratios):.3f})")  # fmt: skip
            silent(kind, emu)
        finally:
            emu.close()
        if args.breakdown:
            breakdown(kind)
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end")


if __name__ == "__main__":
    main()

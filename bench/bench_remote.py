"""Remote inference benchmarks (issue 16): server overhead, closed loop over an emulated network,
and a soak with four robots. Numbers go to docs/performance.md.

    python bench/bench_remote.py overhead [--chunks 400] [--repeats 1] [--replicas] [--fifo]
    python bench/bench_remote.py closed [--episodes 100] [--delay-ms 30 --jitter-ms 10 --loss 0.01]
    python bench/bench_remote.py soak [--seconds 600] [--robots 4]

- overhead: `legato serve` in its own process on 127.0.0.1, this process as the robot
  (RemoteDenoiser) and, interleaved chunk by chunk on the same observations, the same bundle's
  ChunkDenoiser in this process: per chunk, the remote wall time less the server's engine time
  (what the server and the link add), and the remote and local chunk times side by side
  (medians, p90). ``--repeats K``: K server starts, each run's p50 and the p50 pooled over all
  their chunks (the host's speed moves from minute to minute). ``--replicas`` adds the same
  through `legato serve --replicas 1` (Ray Serve's proxy).
- closed: held-out episodes (seed 1000) through `legato run --sim --remote` with the server in a
  network namespace behind the emulated link (tests/remote/netemu.py: tc netem, or its TUN
  forwarder where the kernel has no netem): Legato (models/legato-x86-cpu) and naive chunk
  switching (a plain bundle exported from models/plain), both over the same link, and the local
  runtime (`legato run --sim --bundle`) at the delay the remote Legato run measured (padded with
  --latency-ms). From each run's executed setpoints (recorded at the bus) and chunks: success,
  boundary jump (legato.metrics.boundary_discontinuity) and mode switches (legato.metrics +
  sim.scene.side_of_path, as legato/evaluate.py labels chunks).
- soak: ``--robots`` `legato run --sim --remote --seconds S` processes against one `legato serve`:
  resident memory of every process sampled every 10 s, growth from the first minute's end to the
  end, and every session kept (server stats, robot summaries).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "remote"))
BUNDLE = ROOT / "models" / "legato-x86-cpu"
LEGATO = [sys.executable, "-m", "legato.cli"]


def pct(x: list[float] | np.ndarray, q: float) -> float:
    return float(np.percentile(np.asarray(x, float), q)) if len(x) else math.nan


# ---- overhead -----------------------------------------------------------------------------------
def overhead(a: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    runs = [("legato serve", ("--quiet",), 0)]
    if a.replicas:
        runs.append(("legato serve --replicas 1 (Ray Serve)", ("--quiet", "--replicas", "1"), 18931))
    prefix: tuple[str, ...] = ()
    if a.fifo:  # both sides SCHED_FIFO: what the software adds, without the other jobs' CPU on top
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        prefix = ("chrt", "-f", "10")
    for name, args, port in runs:
        per_run, pooled = [], {"added": [], "remote": [], "loc": [], "engines": []}
        for rep in range(a.repeats):
            got = _overhead_run(a.chunks, args, port, prefix)
            for k, v in got.items():
                pooled[k] += v
            per_run.append(_overhead_stats(got))
            if a.repeats > 1:
                print(f"{name} run {rep + 1}: {json.dumps(per_run[-1])}", flush=True)
        out[name] = _overhead_stats(pooled)
        if a.repeats > 1:
            out[name]["runs"] = per_run
            out[name]["added_ms.p50.per_run"] = [r["added_ms.p50"] for r in per_run]
        print(f"{name}: {json.dumps({k: v for k, v in out[name].items() if k != 'runs'})}", flush=True)
    return out


def _overhead_run(chunks: int, args: tuple[str, ...], port: int, prefix: tuple[str, ...]) -> dict[str, list]:
    """One server start and ``chunks`` (+ 20 warm-up) chunks, remote and local interleaved: the
    per-chunk added, remote, local and server-engine times (ms)."""
    from remote_helpers import start_serve, stop

    from edge.assembly import load
    from edge.policy import ChunkRequest
    from edge.remote.client import RemoteDenoiser

    proc, port = start_serve(*args, port=port, timeout_s=240, prefix=prefix)
    try:
        den = RemoteDenoiser(f"ws://127.0.0.1:{port}")
        _, _, local = load(str(BUNDLE), "x86-cpu")
        rng = np.random.default_rng(0)
        h, w = den.spec.image_hw
        added, remote, loc, engines = [], [], [], []
        for i in range(chunks + 20):
            obs = (
                rng.integers(0, 255, (h, w, 3)).astype(np.uint8),
                rng.integers(0, 14, den.spec.max_tokens),
                rng.standard_normal(den.spec.state_dim).astype(np.float32),
            )
            eps = rng.standard_normal((1, 16, 3)).astype(np.float32)
            tail = rng.standard_normal((8, 3)).astype(np.float32) if i % 2 else None
            req = ChunkRequest(2, 8, 4) if tail is not None else ChunkRequest(0, 8, 0)
            den.set_observation(*obs)
            t0 = time.perf_counter()
            den.denoise(eps, tail, req)
            t1 = time.perf_counter()
            local.set_observation(*obs)
            local.denoise(eps, tail, req)
            t2 = time.perf_counter()
            if i >= 20:  # warm-up
                st = dict(zip(den.stage_names, den.stage_ns, strict=True))
                remote.append((t1 - t0) * 1e3)
                loc.append((t2 - t1) * 1e3)
                engines.append(st["engines"] * 1e-6)
                added.append((t1 - t0) * 1e3 - st["engines"] * 1e-6)
        den.close()
    finally:
        stop(proc)
    return {"added": added, "remote": remote, "loc": loc, "engines": engines}


def _overhead_stats(r: dict[str, list]) -> dict[str, Any]:
    return {
        "chunks": len(r["added"]),
        "added_ms.p50": pct(r["added"], 50),
        "added_ms.p90": pct(r["added"], 90),
        "remote_chunk_ms.p50": pct(r["remote"], 50),
        "server_engines_ms.p50": pct(r["engines"], 50),
        "local_chunk_ms.p50": pct(r["loc"], 50),
        "remote_minus_local_ms.p50": pct(r["remote"], 50) - pct(r["loc"], 50),
    }


# ---- closed loop --------------------------------------------------------------------------------
class Recorder:
    """Per episode: the setpoints the loop sent (with the chunk each came from) and every chunk
    (its plan and the joint state it was planned from), hooked on the bus and the denoiser."""

    def __init__(self, session: Any) -> None:
        from edge.clock import HOLD_STOP, TICK_COLS

        self.session, self.plant = session, session.plant
        self.setpoints: dict[int, list[tuple[int, np.ndarray]]] = {}
        self.chunks: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        den, records = session.den, session.records
        denoise, set_obs, drain = den.denoise, den.set_observation, records.drain
        self._state = np.zeros(den.spec.state_dim, np.float32)
        chunk_col, mode_col, a0 = TICK_COLS.index("chunk"), TICK_COLS.index("mode"), len(TICK_COLS)

        def on_drain(loop: Any) -> Any:
            # the setpoints the clock sent (the tick ring: the clock runs in its own process); a
            # drain runs inside an episode and once after it, so the plant's episode is theirs.
            # Those of an active chunk only, not the stop's hold (as the loop's own bookkeeping was)
            rows = drain(loop)
            keep = rows[(rows[:, chunk_col] >= 0) & (rows[:, mode_col] != HOLD_STOP)]
            eps = self.setpoints.setdefault(self.plant.result.index, [])
            eps.extend((int(r[chunk_col]), r[a0:].astype(np.float32)) for r in keep)
            return rows

        def on_obs(image: Any, tokens: Any, state: Any) -> None:
            self._state[...] = state
            set_obs(image, tokens, state)

        def on_denoise(eps: Any, tail: Any, req: Any) -> Any:
            chunk = denoise(eps, tail, req)
            a = len(chunk[0])
            self.chunks.setdefault(self.plant.result.index, []).append((chunk.copy(), self._state[:a].copy()))
            return chunk

        records.drain, den.denoise, den.set_observation = on_drain, on_denoise, on_obs

    def metrics(self) -> dict[str, float]:
        from legato import metrics as M  # noqa: N812
        from sim.arm import end_effector
        from sim.scene import side_of_path

        task, scenes = self.plant.task, self.plant.spec.scenes
        jumps, ratios, switches = [], [], []
        for ep, rows in self.setpoints.items():
            ids = np.array([r[0] for r in rows])
            cmd = np.array([r[1] for r in rows], np.float64)
            boundaries = np.nonzero(ids[1:] != ids[:-1])[0] + 1
            jump, ratio = M.boundary_discontinuity(cmd, boundaries)
            jumps.append(jump)
            ratios.append(ratio)
            sc = scenes.select(np.array([ep]))
            start = end_effector(task.arm, sc.q0)
            axis = sc.goal[0] - start[0]
            along = float(np.dot(sc.obstacle[0] - start[0], axis))
            labels = []
            for chunk, q in self.chunks.get(ep, []):
                ee = end_effector(task.arm, q[None].astype(np.float64))[0]
                if float(np.dot(ee - start[0], axis)) >= along:
                    break  # past the obstacle: later chunks choose no side
                plan = end_effector(task.arm, chunk.astype(np.float64))[None]
                labels.append(int(side_of_path(start, sc.goal, sc.obstacle, plan)[0]))
            switches.append(M.mode_switches(np.array(labels)))
        return {
            "boundary_jump": float(np.nanmean(jumps)),
            "boundary_ratio": float(np.nanmean(ratios)),
            "mode_switches": float(np.mean(switches)),
            "episodes_measured": len(switches),
        }


def run_recorded(argv: list[str], episodes: int) -> dict[str, Any]:
    """`legato run ARGV` assembled by the CLI's own code, recorded, summarised."""
    from edge.cli import _finish, _session
    from legato.cli import build_parser

    args = build_parser().parse_args(["run", *argv, "--quiet"])
    session = _session(args, episodes)
    rig = session.rig
    rec = Recorder(session)
    try:
        session.run_sim(episodes, None)
    finally:
        rig.close()
        close = getattr(session.den, "close", None)
        if close:
            close()
    s = _finish(session)
    s.update(rec.metrics())
    return s


def plain_bundle(tmp: Path) -> Path:
    out = tmp / "plain-fp32"
    subprocess.run(
        [
            *LEGATO,
            "export",
            "--checkpoint",
            str(ROOT / "models/plain"),
            "--out",
            str(out),
            "--episodes",
            "0",
            "--parity-samples",
            "2",
        ],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    return out


KEYS = (
    "episodes",
    "success_rate",
    "mode_switches",
    "boundary_jump",
    "boundary_ratio",
    "delay_mode",
    "delay_hist",
    "underruns",
    "chunks",
    "chunks_unavailable",
    "remote.timeouts",
    "remote.stale_replies",
    "remote.reconnects",
    "chunk.latency_ms.p50",
    "chunk.latency_ms.p99",
    "chunk.network_ms.p50",
    "chunk.network_ms.p99",
    "step_clamped",
    "episode_outcomes",
)


def closed(a: argparse.Namespace) -> dict[str, Any]:
    import netemu
    from remote_helpers import start_serve, stop

    out: dict[str, Any] = {"link": {"delay_ms": a.delay_ms, "jitter_ms": a.jitter_ms, "loss": a.loss}}
    if a.fifo:  # threads made from here on inherit it (the loop's clock raises itself to 50)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(5))
    ep = ["--sim", "--episodes", str(a.episodes), "--seed", "1000"]
    with tempfile.TemporaryDirectory() as tmp:
        plain = plain_bundle(Path(tmp))
        with netemu.EmulatedLink(a.delay_ms, a.jitter_ms, a.loss, seed=0) as link:
            out["link"]["kind"] = link.kind
            out["link"]["fifo"] = bool(a.fifo)
            for name, bundle in (("legato remote", BUNDLE), ("naive remote", plain)):
                # --fifo: the server as a machine of its own would run it, not behind the robot's and
                # everyone else's jobs on these two cores
                chrt = ("chrt", "-f", "10") if a.fifo else ()
                proc, port = start_serve(
                    "--quiet",
                    "--host",
                    link.there,
                    bundle=bundle,
                    prefix=("ip", "netns", "exec", link.ns, *chrt),
                )
                try:
                    t0 = time.monotonic()
                    s = run_recorded(["--remote", f"ws://{link.there}:{port}", *ep], a.episodes)
                finally:
                    stop(proc)
                out[name] = {k: s.get(k) for k in KEYS} | {"wall_s": round(time.monotonic() - t0, 1)}
                print(f"{name}: {json.dumps(out[name])}", flush=True)
        d = int(out["legato remote"]["delay_mode"])
        pad = 20.0 * (d - 1) + 10.0  # 50 Hz: a latency of pad ms gives d = ceil(pad / 20)
        s = run_recorded(["--bundle", str(BUNDLE), "--latency-ms", str(pad), *ep], a.episodes)
        out[f"legato local (--latency-ms {pad:g}, d = {d})"] = {
            k: s.get(k) for k in KEYS if not k.startswith("remote")
        }
        print(f"legato local: {json.dumps(out[f'legato local (--latency-ms {pad:g}, d = {d})'])}", flush=True)
    return out


# ---- soak ---------------------------------------------------------------------------------------
def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def soak(a: argparse.Namespace) -> dict[str, Any]:
    from remote_helpers import start_serve, stop

    proc, port = start_serve("--quiet")
    out: dict[str, Any] = {"seconds": a.seconds, "robots": a.robots}
    with tempfile.TemporaryDirectory() as tmp:
        robots = []
        for i in range(a.robots):
            js = Path(tmp) / f"robot{i}.json"
            cmd = [
                *LEGATO,
                "run",
                "--remote",
                f"ws://127.0.0.1:{port}",
                "--sim",
                "--seconds",
                str(a.seconds),
                "--seed",
                str(1000 + i),
                "--quiet",
                "--summary-json",
                str(js),
            ]
            robots.append((subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True), js))
        pids = {"server": proc.pid, **{f"robot{i}": p.pid for i, (p, _) in enumerate(robots)}}
        samples: dict[str, list[tuple[float, float]]] = {k: [] for k in pids}
        t0 = time.monotonic()
        while any(p.poll() is None for p, _ in robots):
            t = time.monotonic() - t0
            for k, pid in pids.items():
                samples[k].append((t, rss_mb(pid)))
            time.sleep(10)
        summaries = []
        for p, js in robots:
            _, err = p.communicate()
            summaries.append(json.loads(js.read_text()) if js.exists() else {"error": err[-500:]})
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
        stats = json.loads(r.read())
    stop(proc)
    for k, rows in samples.items():
        x = np.array([(t, m) for t, m in rows if not math.isnan(m)])
        after = x[x[:, 0] >= 60] if len(x) else x
        out[k] = {
            "rss_mb.at_60s": float(after[0, 1]) if len(after) else math.nan,
            "rss_mb.end": float(x[-1, 1]) if len(x) else math.nan,
            "growth_mb": float(after[-1, 1] - after[0, 1]) if len(after) else math.nan,
        }
    out["sessions"] = {
        "server_sessions_total": stats["sessions_total"],
        "server_failed": stats["failed"],
        "server_refused": stats["refused"],
    }
    out["robot_summaries"] = [
        {
            k: s.get(k)
            for k in (
                "ticks",
                "chunks",
                "underruns",
                "missed_ticks",
                "chunks_unavailable",
                "remote.reconnects",
                "remote.errors",
                "errors",
                "shutdown",
            )
        }
        for s in summaries
    ]
    print(json.dumps(out, indent=1), flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    o = sub.add_parser("overhead")
    o.add_argument("--chunks", type=int, default=400)
    o.add_argument("--replicas", action="store_true")
    o.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="server starts of --chunks each: per-run p50s, pooled p50",
    )
    o.add_argument("--fifo", action="store_true", help="server and client SCHED_FIFO (a loaded machine)")
    c = sub.add_parser("closed")
    c.add_argument("--episodes", type=int, default=100)
    c.add_argument("--delay-ms", type=float, default=30.0)
    c.add_argument("--jitter-ms", type=float, default=10.0)
    c.add_argument("--loss", type=float, default=0.01)
    c.add_argument(
        "--fifo",
        action="store_true",
        help="robot SCHED_FIFO 5, server 10 (each as its own machine would run it, on a loaded box)",
    )
    s = sub.add_parser("soak")
    s.add_argument("--seconds", type=float, default=600.0)
    s.add_argument("--robots", type=int, default=4)
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    a = p.parse_args()
    t0 = time.monotonic()
    res = {"overhead": overhead, "closed": closed, "soak": soak}[a.what](a)
    res["bench_wall_s"] = round(time.monotonic() - t0, 1)
    res["machine"] = f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} at the end"
    if a.json:
        from edge.outputs import atomic_file

        atomic_file(a.json, (json.dumps(res, indent=1) + "\n").encode(), replace=True)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    threading.current_thread().name = "bench"
    sys.exit(main())

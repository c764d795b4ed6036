"""Where an idle machine's late control ticks come from (issue 19): the host, or the software.

    python bench/bench_late_ticks.py [--trees . OTHER_CHECKOUT[:PROFILE] ...] [--pairs 3]
                                     [--seconds 20] [--no-probes] [--json OUT]
    python bench/bench_late_ticks.py --rejudge RUNS.json ...   # saved runs, this rule, pooled

Each round runs `legato profile --bundle models/legato-x86-cpu --sim --seconds S` (what issue 19
measured "today's" numbers with) in each tree in turn, with one stall probe pinned to each CPU
beside it: a small C program (compiled here with the system's cc: a Python probe's own wake-ups
disturb the clock more) at SCHED_FIFO 99, memory locked, waking every 1 ms on absolute deadlines
and noting each wake more than 0.3 ms late. Nothing in the guest outranks it, so a late probe
means its CPU did not run: the hypervisor ran something else on it (steal), or the kernel held
it with interrupts off.
A tick later than 1 ms is "a stalled CPU's" when one CPU was stalled for at least half of its
lateness (a stall taken from the probe's last punctual wake to its late one); the same test
with the late ticks moved to random times in the run gives the number expected by chance. The
ticks not so explained are the software's (or an unexplained cause), and they are what a
before/after comparison should look at.

A tree may name a device profile after a colon (TREE:PROFILE, a name or a .toml path; default
x86-cpu), e.g. the same tree with `[power] cpu_wake_latency_us = 0` beside it.

The tick times come from the profile's own tick rows (the run's edge.profiler.write_report is
wrapped to save them), so any checkout whose `legato profile` has that function can be a tree.
The probes disturb what they watch a little (their wake-ups keep the CPUs out of deep idle and
take a few microseconds each): the clock's p99 with them was 0.13-0.26 ms against 0.06-0.10 ms
without, in two pairs of runs; so the runs with probes explain late ticks, and the runs without
(`legato profile` alone) remain the numbers to quote.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

STALL_PROBE_C = r"""
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <signal.h>
#include <sys/mman.h>
static volatile sig_atomic_t stop = 0;
static void on_term(int s) { (void)s; stop = 1; }
static double ts(struct timespec t) { return t.tv_sec + t.tv_nsec * 1e-9; }
int main(int argc, char **argv) {
    int cpu = atoi(argv[1]); double secs = atof(argv[2]);
    cpu_set_t set; CPU_ZERO(&set); CPU_SET(cpu, &set); sched_setaffinity(0, sizeof set, &set);
    struct sched_param p = { .sched_priority = 99 }; sched_setscheduler(0, SCHED_FIFO, &p);
    mlockall(MCL_CURRENT | MCL_FUTURE);
    signal(SIGTERM, on_term);
    static double st[200000][2]; long n = 0, wakes = 0;
    struct timespec d, now; clock_gettime(CLOCK_MONOTONIC, &d);
    double end = ts(d) + secs;
    while (!stop && ts(d) < end) {
        d.tv_nsec += 1000000; if (d.tv_nsec >= 1000000000) { d.tv_nsec -= 1000000000; d.tv_sec++; }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &d, NULL);
        clock_gettime(CLOCK_MONOTONIC, &now); wakes++;
        double late = ts(now) - ts(d);
        if (late > 0.0003 && n < 200000) { st[n][0] = ts(d); st[n][1] = late; n++;
            if (late > 0.001) d = now; }
    }
    printf("{\"cpu\": %d, \"wakes\": %ld, \"stalls\": [", cpu, wakes);
    for (long i = 0; i < n; i++) printf("%s[%.9f, %.9f]", i ? ", " : "", st[i][0], st[i][1]);
    printf("]}\n");
    return 0;
}
"""

# `legato profile` with its tick rows saved: edge.profiler.write_report wrapped before the CLI runs
PROFILE = """
import sys
import numpy as np
import edge.profiler as p
orig = p.write_report
def write_report(out, summary, ticks, *rest):
    np.save(sys.argv[1], ticks)
    return orig(out, summary, ticks, *rest)
p.write_report = write_report
from legato.cli import main
sys.exit(main(sys.argv[2:]))
"""


def merged(iv: np.ndarray) -> np.ndarray:
    """(m, 2) intervals -> the disjoint union, sorted (m', 2)."""
    if not len(iv):
        return iv
    iv = iv[np.argsort(iv[:, 0])]
    out = [iv[0].copy()]
    for a, b in iv[1:]:
        if a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append(np.array([a, b]))
    return np.asarray(out)


def coverage(late: np.ndarray, stalls: list[np.ndarray], period: float = 1e-3) -> np.ndarray:
    """(n, cpus): how much of each late tick's [deadline, start] one CPU was stalled for, as a
    fraction of its lateness. late: (n, 2) s, CLOCK_MONOTONIC; stalls: per CPU (m, 2) probe
    deadline and lateness (s). A probe only notices a stall at its next deadline, so the CPU
    stopped somewhere after its previous wake: each stall is taken as [deadline - period, wake]
    (the chance estimate in :func:`attribute` uses the same rule)."""
    out = np.zeros((len(late), len(stalls)))
    t0, t1 = late[:, 0], late[:, 1]
    for c, s in enumerate(stalls):
        if len(s) and len(late):
            u = merged(np.column_stack([s[:, 0] - period, s[:, 0] + s[:, 1]]))
            overlap = np.minimum(t1[:, None], u[None, :, 1]) - np.maximum(t0[:, None], u[None, :, 0])
            out[:, c] = np.clip(overlap, 0.0, None).sum(axis=1) / (t1 - t0)
    return out


def attribute(
    late: np.ndarray, stalls: list[np.ndarray], span: tuple[float, float], rng: np.random.Generator,
    draws: int = 200,
) -> tuple[np.ndarray, float]:  # fmt: skip
    """Which late ticks a CPU stall explains (one CPU stalled for >= half of the lateness), and the
    mean number explained when the same intervals are put at uniformly random times in ``span``
    (the run's first and last deadline, s) over ``draws`` draws."""
    if not len(late):
        return np.zeros(0, bool), 0.0
    dur = late[:, 1] - late[:, 0]
    chance = []
    for _ in range(draws):
        t0 = rng.uniform(span[0], span[1] - dur)
        chance.append((coverage(np.column_stack([t0, t0 + dur]), stalls).max(axis=1) >= 0.5).sum())
    return coverage(late, stalls).max(axis=1) >= 0.5, float(np.mean(chance))


def build_probe(folder: Path) -> Path:
    """The stall probe, compiled with the system's C compiler (one line if there is none)."""
    src, exe = folder / "probe.c", folder / "probe"
    src.write_text(STALL_PROBE_C)
    try:
        subprocess.run(["cc", "-O2", "-o", str(exe), str(src)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"bench_late_ticks: cannot compile the stall probe with cc ({e})") from None
    return exe


def one_run(tree: Path, profile: str, seconds: float, probe: Path | None, rng: np.random.Generator) -> dict:
    """One `legato profile --sim` run of ``tree`` beside the probes (none: ``probe`` None)."""
    cpus = sorted(os.sched_getaffinity(0)) if probe is not None else []
    with tempfile.TemporaryDirectory() as tmp:
        probes = [
            subprocess.Popen([str(probe), str(c), str(seconds + 15)], stdout=subprocess.PIPE, text=True)
            for c in cpus
        ]
        time.sleep(0.5 if probes else 0.0)
        ticks_file = Path(tmp) / "ticks.npy"
        cmd = [sys.executable, "-c", PROFILE, str(ticks_file), "profile", "--bundle",
               str(tree / "models" / "legato-x86-cpu"), "--sim", "--seconds", str(seconds),
               "--profile", profile, "--out", str(Path(tmp) / "profile")]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(tree)}
        subprocess.run(cmd, cwd=tree, env=env, check=True, capture_output=True, timeout=seconds + 240)
        for p in probes:  # the probes outlast the profile by design: stop them now
            p.terminate()
        docs = []
        for p in probes:
            out, _ = p.communicate(timeout=30)
            docs.append(json.loads(out) if out.strip() else None)
        t = np.load(ticks_file)
    if any(d is None for d in docs):
        raise SystemExit("bench_late_ticks: a stall probe ended before it reported")
    err = t[:, 2] - t[:, 1]
    is_late = err > 1e-3
    stalls = [np.asarray(d["stalls"], float).reshape(-1, 2) for d in docs]
    base = {
        "ticks": int(len(t)),
        "period_error_ms": {
            "p50": round(float(np.median(err)) * 1e3, 4),
            "p99": round(float(np.percentile(err, 99)) * 1e3, 4),
            "max": round(float(err.max()) * 1e3, 3),
        },
        "late_over_1ms": int(is_late.sum()),
        "late_ms": [round(float(x) * 1e3, 2) for x in err[is_late]],
        "load_1min": round(os.getloadavg()[0], 2),
    }
    if not stalls:  # --no-probes: the clock's own numbers, nothing to attribute
        return base
    explained, chance = attribute(t[is_late][:, 1:3], stalls, (float(t[0, 1]), float(t[-1, 1])), rng)
    rest = err[is_late][~explained]
    return {
        **base,
        "late_cover_per_cpu": [
            [round(float(c), 2) for c in row] for row in coverage(t[is_late][:, 1:3], stalls)
        ],
        "explained_by_a_cpu_stall": int(explained.sum()),
        "expected_by_chance": round(chance, 3),
        "max_unexplained_ms": round(float(rest.max()) * 1e3, 3) if len(rest) else None,
        "max_on_time_ms": round(float(err[~is_late].max()) * 1e3, 3) if (~is_late).any() else None,
        "cpu_stalls_over_1ms": [int((s[:, 1] > 1e-3).sum()) for s in stalls],
        "cpu_stall_max_ms": [round(float(s[:, 1].max()) * 1e3, 2) if len(s) else 0.0 for s in stalls],
        "probe_wakes": [d["wakes"] for d in docs],
        # raw, to judge by another rule later: late ticks' (deadline, start), each CPU's stalls
        "late_intervals_s": t[is_late][:, 1:3].round(6).tolist(),
        "stalls_s": [st.round(6).tolist() for st in stalls],
    }


def rejudge(files: list[str]) -> dict:
    """Saved runs (--json of runs with probes) judged again by this file's rule, pooled per tree."""
    rng = np.random.default_rng(0)
    agg: dict = {}
    for f in files:
        for tree, rows in json.loads(Path(f).read_text())["runs"].items():
            for r in rows:
                stalls = [np.asarray(s, float).reshape(-1, 2) for s in r["stalls_s"]]
                late = np.asarray(r["late_intervals_s"], float).reshape(-1, 2)
                starts = [s[:, 0] for s in stalls if len(s)]
                span = (min(x.min() for x in starts), max(x.max() for x in starts))
                explained, chance = attribute(late, stalls, span, rng)
                ms = (late[:, 1] - late[:, 0]) * 1e3
                a = agg.setdefault(tree, {"runs": 0, "late_over_1ms": 0, "explained_by_a_cpu_stall": 0,
                                          "expected_by_chance": 0.0, "unexplained_ms": [], "p99_ms": [],
                                          "stalls_over_1ms": []})  # fmt: skip
                a["runs"] += 1
                a["late_over_1ms"] += len(late)
                a["explained_by_a_cpu_stall"] += int(explained.sum())
                a["expected_by_chance"] += chance
                a["unexplained_ms"] += sorted(round(float(x), 2) for x in ms[~explained])
                a["p99_ms"].append(r["period_error_ms"]["p99"])
                a["stalls_over_1ms"].append(sum(r["cpu_stalls_over_1ms"]))
    for tree, a in agg.items():
        a["expected_by_chance"] = round(a["expected_by_chance"], 1)
        a["p99_ms.median"] = float(np.median(a["p99_ms"]))
        print(json.dumps({"tree": tree, **a}), flush=True)
    return agg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", nargs="+", default=["."], help="checkouts to run, in turn each round")
    ap.add_argument("--pairs", type=int, default=3, help="rounds (each runs every tree once)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-probes", action="store_true", help="the clock's numbers alone (undisturbed)")
    ap.add_argument("--rejudge", nargs="+", default=None, help="saved --json files: judge again, pooled")
    a = ap.parse_args()
    if a.rejudge:
        rejudge(a.rejudge)
        return 0
    runs = [(Path(t.partition(":")[0]).resolve(), t.partition(":")[2] or "x86-cpu") for t in a.trees]
    names = [f"{tree}:{prof}" for tree, prof in runs]
    rng = np.random.default_rng(0)
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, python {sys.version.split()[0]}")
    res: dict = {n: [] for n in names}
    t0 = time.time()
    folder = Path(tempfile.mkdtemp(prefix="stall-probe-"))
    probe = None if a.no_probes else build_probe(folder)
    for r in range(a.pairs):
        for (tree, prof), name in zip(runs, names, strict=True):
            row = one_run(tree, prof, a.seconds, probe, rng)
            res[name].append(row)
            print(json.dumps({"round": r + 1, "tree": name, **row}), flush=True)
    total = {}
    for tree, rows in res.items():
        p99, mx = [r["period_error_ms"]["p99"] for r in rows], [r["period_error_ms"]["max"] for r in rows]
        total[tree] = {
            "runs": len(rows),
            "late_over_1ms": sum(r["late_over_1ms"] for r in rows),
            "p99_ms": p99,
            "max_ms": mx,
            "p99_ms.median": float(np.median(p99)),
            "max_ms.median": float(np.median(mx)),
        }
        if not a.no_probes:
            total[tree].update(
                explained_by_a_cpu_stall=sum(r["explained_by_a_cpu_stall"] for r in rows),
                expected_by_chance=round(sum(r["expected_by_chance"] for r in rows), 2),
                max_unexplained_ms=[r["max_unexplained_ms"] for r in rows],
            )
        print(json.dumps({"total": tree, **total[tree]}), flush=True)
    if a.json:
        doc = {"runs": res, "total": total, "wall_s": round(time.time() - t0, 1), "seconds": a.seconds}
        Path(a.json).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

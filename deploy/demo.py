"""`make demo`: the whole robot stack on a machine with no robot, then a summary a reader can check.

What runs, all of it the code a robot runs (``legato run --sim``'s session, in this process so the
executed joint path can be recorded for the smoothness numbers):
- the committed reference bundle (models/legato-x86-cpu: ONNX graphs, verified by sha256 on load),
  on onnxruntime with the x86-cpu profile;
- the emulated motor controller on a pseudo-terminal, driving the simulated arm, reached through
  the firmware bridge (COBS + CRC frames, watchdog, telemetry) exactly like a serial port;
- the simulator's camera rendering the arm where it is, as the observation;
- the real-time loop: control clock at the profile's rate, the inference worker with Legato
  continuation, the delay estimate from measured latency.

Then it prints success with its 95 % Wilson interval, completion time, smoothness (NSPARC and log
dimensionless jerk of the executed joints, the evaluation's definitions), the delay estimate,
underruns and the per-stage latency table, and checks that the evaluation's Legato success at
the measured delay (reports/main/results.json) lies inside the interval. The report folder
(default reports/demo) holds summary.json, trace.json (open it in https://ui.perfetto.dev),
profile.png and trajectories.png.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import LegatoError

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "models" / "legato-x86-cpu"
RESULTS = REPO / "reports" / "main" / "results.json"


def wilson(successes: int, n: int) -> tuple[float, float]:
    from legato.metrics import wilson_interval  # pure numpy/math; the formula and its test live there

    return wilson_interval(successes, n)


def eval_rate(results: Path, d: int, s: int) -> dict[str, Any] | None:
    """The evaluation's Legato cell at delay d and execution horizon s, or None."""
    try:
        cells = json.loads(results.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return None
    for c in cells:
        if c.get("method") == "legato" and c.get("d") == d and c.get("s") == s:
            return c
    return None


class PathRecorder:
    """The arm's joint positions once per control period of plant time, per episode.

    It wraps the plant motor's callback (``on_step``, once per control period; ``on_physics`` in
    older plants), which the emulator's thread calls under the plant's lock after the plant's own
    bookkeeping, and records whenever the episode's step count has moved."""

    def __init__(self, plant: Any) -> None:
        self.plant = plant
        self.paths: dict[int, list[np.ndarray]] = {}
        self._hook = "on_step" if hasattr(plant.motor, "on_step") else "on_physics"
        self._inner = getattr(plant.motor, self._hook)
        self._last = (-1, -1)
        setattr(plant.motor, self._hook, self)

    def __call__(self, *args: Any) -> None:
        self._inner(*args)
        r = self.plant.result
        if (r.index, r.steps) != self._last and r.steps > 0:
            self._last = (r.index, r.steps)
            self.paths.setdefault(r.index, []).append(self.plant.motor.q.copy())


def smoothness(paths: dict[int, list[np.ndarray]], dt: float) -> dict[str, float]:
    from legato import metrics as M  # noqa: N812 (the evaluation's own definitions)

    ns, ldj = [], []
    for q in paths.values():
        x = np.asarray(q, np.float64)
        if len(x) >= 8:
            ns.append(M.nsparc(M.speed_profile(x, dt), fs=1 / dt))
            ldj.append(M.log_dimensionless_jerk(x, dt))
    return {
        "nsparc_exec": float(np.nanmean(ns)) if ns else math.nan,
        "ldj_exec": float(np.nanmean(ldj)) if ldj else math.nan,
    }


def run_session(
    bundle: Path, profile: str, episodes: int, latency_ms: float, seed: int
) -> tuple[Any, Any, Any]:
    """`legato run --sim --episodes K`'s session (edge.launch), with the path recorder attached."""
    from edge.launch import launch

    shown = [""]

    def status(line: str) -> None:  # one line per episode, not one per second
        head = line.split(" rate ")[0]
        if head != shown[0]:
            shown[0] = head
            print(f"  {line}", file=sys.stderr, flush=True)

    session = launch(str(bundle), profile, sim=True, episodes=episodes, latency_ms=latency_ms, seed=seed,
                     status=status, reconnect_s=5.0)  # fmt: skip
    rig = session.rig
    rec = PathRecorder(rig.plant)
    restore = session.install_signals()
    try:
        session.run_sim(episodes, None)
    finally:
        rig.close()
        restore()
    return session, rec, rig


def plot_paths(path: Path, paths: dict[int, list[np.ndarray]], dt: float, results: list[dict]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ok = {e["episode"]: e["success"] for e in results}
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), sharex=True)
    for k, q in sorted(paths.items())[:12]:
        x = np.asarray(q)
        t = np.arange(len(x)) * dt
        for j, ax in enumerate(axes):
            ax.plot(t, x[:, j], lw=1, color="tab:blue" if ok.get(k) else "tab:red", alpha=0.7)
    for j, ax in enumerate(axes):
        ax.set_title(f"joint {j} (executed)")
        ax.set_xlabel("s")
    axes[0].set_ylabel("rad (blue: success, red: failure)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def add_arguments(p: argparse.ArgumentParser) -> None:
    from edge.cliargs import float_in, int_in

    p.add_argument("--bundle", default=str(BUNDLE), help="bundle folder")
    p.add_argument("--profile", default="x86-cpu", help="device profile")
    p.add_argument("--episodes", type=int_in(1, 1000), default=40, help="held-out simulator episodes")
    p.add_argument(
        "--latency-ms",
        type=float_in(0.0, 1000.0),
        default=0.0,
        help="pad each inference to at least this long (a slower device)",
    )
    p.add_argument("--seed", type=int_in(0, 2**31 - 1), default=1000, help="held-out episode set")
    p.add_argument(
        "--out", default=str(REPO / "reports" / "demo"), help="report folder (replaced if it holds a demo)"
    )
    p.add_argument("--results", default=str(RESULTS), help="the evaluation's results.json to compare with")


def run(a: argparse.Namespace) -> int:
    """`legato demo` (and `make demo`)."""
    return _demo(a)


def main(argv: list[str] | None = None) -> int:
    """`python -m deploy.demo`: the same as `legato demo`, through the one CLI entry point."""
    from legato.cli import main as legato_main

    return legato_main(["demo", *(argv if argv is not None else sys.argv[1:])])


def _demo(a: argparse.Namespace) -> int:
    from edge.errors import BundleError
    from edge.outputs import check_target

    t0 = time.monotonic()
    bundle = Path(a.bundle)
    check_target(a.out, "demo", replace=True)  # refuse a foreign folder before running
    with tempfile.TemporaryDirectory(prefix="legato-demo-") as scratch:
        if not (bundle / "manifest.json").is_file():
            if bundle != BUNDLE:
                raise BundleError(
                    f"{bundle}: no bundle there (legato export --checkpoint models/legato --profile "
                    f"x86-cpu --out {bundle})"
                )
            bundle = _export_reference(Path(scratch) / "legato-x86-cpu")
        return _run(a, bundle, t0)


def _export_reference(out: Path) -> Path:
    """The committed reference bundle is missing: export the same one from models/legato (~10 s)."""
    print(f"legato demo: {BUNDLE} is missing; exporting it from models/legato into a temporary folder")
    cmd = [
        sys.executable,
        "-m",
        "legato.cli",
        "export",
        "--checkpoint",
        str(REPO / "models/legato"),
        "--profile",
        "x86-cpu",
        "--out",
        str(out),
        "--episodes",
        "0",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise LegatoError(
            f"export of the reference bundle failed: {(done.stderr or done.stdout).strip()[-300:]}"
        )
    return out


def _run(a: argparse.Namespace, bundle: Path, t0: float) -> int:
    from edge.bundle import verify
    from edge.outputs import atomic_folder
    from edge.profiler import print_table, write_report

    man = verify(bundle)
    print(
        f"legato demo: bundle {man.name} ({man.precision}, H={man.spec.horizon}, N={man.spec.num_steps}, "
        f"every sha256 verified), profile {a.profile}, {a.episodes} held-out episodes"
    )
    print(
        "  emulated motor controller on a pseudo-terminal -> firmware bridge; simulator camera -> "
        "onnxruntime -> Legato sampler -> real-time loop"
    )
    session, rec, rig = run_session(bundle, a.profile, a.episodes, a.latency_ms, a.seed)
    summary = session.summary()
    dt = session.cfg.period
    summary.update(smoothness(rec.paths, dt))
    n = int(summary.get("episodes", 0))
    k = int(round(summary.get("success_rate", 0.0) * n))
    lo, hi = wilson(k, n) if n else (math.nan, math.nan)
    d, s = int(summary["delay_mode"]), int(session.cfg.execution_horizon)
    ref = eval_rate(Path(a.results), d, s)
    summary.update(
        {
            "success_ci95": [lo, hi],
            "successes": k,
            "bundle": str(bundle),
            "profile": a.profile,
            "latency_ms": a.latency_ms,
            "evaluation": ref,
        }
    )

    print()
    print(f"success      {k}/{n} = {k / max(n, 1):.1%}  (95 % Wilson interval {lo:.1%} - {hi:.1%})")
    comp = summary.get("completion_s")
    print(f"completion   {comp:.2f} s mean over successes" if comp is not None else "completion   -")
    print(
        f"smoothness   NSPARC {summary['nsparc_exec']:.3f}, log dimensionless jerk {summary['ldj_exec']:.2f} "
        "(executed joints; lower is smoother)"
    )
    hist = ", ".join(f"d={k_}: {v}" for k_, v in summary["delay_hist"].items())
    print(f"delay        d = {d} control steps ({d * dt * 1e3:.0f} ms at {1 / dt:.0f} Hz), estimates {hist}")
    print(f"underruns    {summary['underruns']}  (faults {summary['faults']}, missed ticks ", end="")
    print(f"{summary['missed_ticks']})")
    print()
    print_table(summary)
    inside = None
    if ref is None:
        print(f"\nevaluation: no Legato cell at d={d}, s={s} in {a.results}")
    else:
        rate = float(ref["success_rate"])
        inside = lo <= rate <= hi
        print(
            f"\nevaluation (legato eval, {int(ref['episodes'])} episodes, torch): Legato at d={d}, s={s} "
            f"succeeds {rate:.1%}: {'inside' if inside else 'OUTSIDE'} this run's interval"
        )
    summary["evaluation_inside_ci"] = inside
    faults = rig.bus.health().faults  # the fault bits the controller reported last (bus contract)
    if faults:
        summary["controller_fault"] = {"latched": faults}
        print(
            f"\nthe emulated controller latched fault 0x{faults:04x} (0x0001 is its watchdog: the host was "
            "silent longer than the profile's watchdog_ms, e.g. on an overloaded machine); it holds the arm "
            "until the fault is cleared, so later episodes fail"
        )
    names = session.records.stage_names
    with atomic_folder(a.out, "demo", replace=True) as tmp:
        write_report(
            tmp,
            summary,
            session.records.tick_array(),
            session.records.chunk_array(),
            names,
            {"source": "demo", "episodes": n},
        )
        plotted = plot_paths(tmp / "trajectories.png", rec.paths, dt, session.episodes)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True, default=str) + "\n")
    paths = "trajectories.png" if plotted else "no trajectories.png: pip install matplotlib"
    print(f"\nreport: {a.out}/ (summary.json, trace.json for ui.perfetto.dev, profile.png, {paths})")
    print(f"demo finished in {time.monotonic() - t0:.0f} s")
    if summary["errors"]:
        print("legato demo: errors: " + "; ".join(summary["errors"]), file=sys.stderr)
        return 1
    return 0 if inside is not False else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""The evaluation harness: every chunking method, across delays and execution horizons.

Protocol (legato.rollout): RTC's simulated delay. Each cell (method, d, s) runs the same
held-out episodes (seed >= 1000) in one batch; per-episode metrics (legato.metrics) are
averaged over episodes. Cells run in worker processes, one torch thread each.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import MethodError, UsageError
from edge.policy import default_ramp
from legato import metrics as M
from sim.arm import end_effector
from sim.scene import side_of_path

METRICS: dict[str, str] = {
    "success_rate": "success rate",
    "completion_s": "completion time (s, successes)",
    "throughput_per_min": "successes per minute",
    "boundary_jump": "boundary discontinuity (rad)",
    "boundary_ratio": "boundary jump / within-chunk step",
    "overlap_rmse": "overlap inconsistency (RMSE, rad)",
    "nsparc_cmd": "NSPARC, commanded (lower smoother)",
    "nsparc_exec": "NSPARC, executed",
    "ldj_cmd": "log dimensionless jerk, commanded",
    "ldj_exec": "log dimensionless jerk, executed",
    "msj_cmd": "mean squared jerk, commanded (rad^2/s^6)",
    "mode_switches": "mode switches per episode",
    "stall_fraction": "stall fraction",
}


@dataclass(frozen=True)
class EvalConfig:
    checkpoints: tuple[str, ...]  # one per training method needed by `methods`
    methods: tuple[str, ...] = ("naive", "sync", "rtc", "rtc-train", "legato")
    delays: tuple[int, ...] = (0, 1, 2, 3, 4)
    horizons: tuple[int, ...] = (4, 8)  # execution horizons s
    episodes: int = 200
    seed: int = 1000  # held-out episode set
    ramp: int | None = None  # Legato r; None = H - s - d capped at r_max
    final_blend: bool = True  # Legato's final blend (ablation switch)
    workers: int = 2
    threads: int = 0  # torch intra-op threads per worker; 0 = the machine's cores / workers
    example: tuple[int, int] = (3, 8)  # (d, s) of the per-method example-episode figure
    compute_repeats: int = 30  # timed single-chunk inferences per method

    def __post_init__(self) -> None:
        from edge.policy import INFERENCE_METHODS

        if self.episodes < 1:
            raise UsageError(f"--episodes must be >= 1, got {self.episodes}")
        if self.seed < 1000:
            raise UsageError(f"--seed {self.seed} may overlap training sets (seeds 0..999); use a held-out "
                             "seed >= 1000")  # fmt: skip
        for name in ("methods", "delays", "horizons", "checkpoints"):
            if not getattr(self, name):
                raise UsageError(f"--{name} is empty")
        bad = [m for m in self.methods if m not in INFERENCE_METHODS]
        if bad:
            raise UsageError(
                f"--methods: unknown {', '.join(bad)}; choose from {', '.join(INFERENCE_METHODS)}"
            )


@dataclass
class CellResult:
    method: str
    d: int
    s: int
    r: int
    values: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {"method": self.method, "d": self.d, "s": self.s, "r": self.r, **self.values}


def episode_metrics(res, i: int, task, horizon: int) -> dict[str, float]:
    """Per-episode metrics of episode i of a RolloutResult."""
    dt = 1.0 / task.arm.control_hz
    cmd = res.commanded[i]
    n = int(np.sum(~np.isnan(cmd[:, 0])))
    cmd = cmd[:n]
    joints, ee = res.joints[i, : n + 1], res.ee[i, : n + 1]
    alive = [c for c in res.chunks if c.alive[i] and c.start < n]
    jump, ratio = M.boundary_discontinuity(cmd, np.array([c.start for c in alive[1:]], dtype=int))
    overlaps = [
        M.overlap_inconsistency(a.chunk[i], a.origin, b.chunk[i], b.origin, b.start)
        for a, b in zip(alive, alive[1:], strict=False)
    ]
    sc = res.scenes.select(np.array([i]))
    start = end_effector(task.arm, sc.q0)
    axis = sc.goal[0] - start[0]
    obstacle_along = float(np.dot(sc.obstacle[0] - start[0], axis))
    labels = []
    for c in alive:
        if float(np.dot(c.ee_start[i] - start[0], axis)) >= obstacle_along:
            break  # the arm has passed the obstacle: later chunks choose no side
        plan = end_effector(task.arm, c.chunk[i].astype(np.float64))[None]
        labels.append(int(side_of_path(start, sc.goal, sc.obstacle, plan)[0]))
    success = bool(res.success[i])
    until = int(res.steps_to_success[i]) if success else n
    return {
        "success": float(success),
        "completion_s": until * dt if success else math.nan,
        "steps": float(n),
        "boundary_jump": jump,
        "boundary_ratio": ratio,
        "overlap_rmse": float(np.nanmean(overlaps)) if overlaps else math.nan,
        "nsparc_cmd": M.nsparc(M.speed_profile(cmd, dt), fs=1 / dt),
        "nsparc_exec": M.nsparc(M.speed_profile(joints, dt), fs=1 / dt),
        "ldj_cmd": M.log_dimensionless_jerk(cmd, dt),
        "ldj_exec": M.log_dimensionless_jerk(joints, dt),
        "msj_cmd": M.mean_squared_jerk(cmd, dt),
        "msj_exec": M.mean_squared_jerk(joints, dt),
        "mode_switches": float(M.mode_switches(np.array(labels))),
        "stall_fraction": M.stall_fraction(ee, dt, until=until),
    }


def aggregate(per_episode: list[dict[str, float]], dt: float) -> dict[str, float]:
    keys = per_episode[0].keys()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (e.g. no successes)
        out = {k: float(np.nanmean([e[k] for e in per_episode])) for k in keys}
    wins = int(sum(e["success"] for e in per_episode))
    lo, hi = M.wilson_interval(wins, len(per_episode))
    out.update(
        success_rate=wins / len(per_episode),
        success_ci_low=lo,
        success_ci_high=hi,
        episodes=float(len(per_episode)),
        throughput_per_min=M.throughput(wins, int(sum(e["steps"] for e in per_episode)), dt),
    )
    del out["success"]
    return out


# --- worker side ----------------------------------------------------------------------------
_STATE: dict[str, Any] = {}


def _init_worker(checkpoints: tuple[str, ...], threads: int) -> None:
    import torch

    from legato import checkpoint
    from legato.runner import TorchPolicyRunner

    torch.set_num_threads(threads)
    _STATE["runners"] = {}
    for path in checkpoints:
        ck = checkpoint.load(path)
        _STATE["runners"][ck.method] = TorchPolicyRunner(ck)


def _runner_for(method: str):
    from edge.policy import INFERENCE_METHODS

    need = INFERENCE_METHODS[method]
    if need not in _STATE["runners"]:
        raise MethodError(f"method {method!r} needs a {need!r} checkpoint; none among --checkpoints")
    return _STATE["runners"][need]


def run_cell(cfg: EvalConfig, method: str, d: int, s: int, keep: bool) -> tuple[CellResult, Any]:
    from edge.policy import ChunkRequest, check_request
    from legato.rollout import rollout
    from sim.episodes import sample_episodes

    runner = _runner_for(method)
    ck = runner.ck
    r = default_ramp(ck.spec, d, s) if cfg.ramp is None else cfg.ramp  # plan_cells checked it fits
    req = ChunkRequest(d=d, s=s, r=r, final_blend=cfg.final_blend)
    check_request(method, ck.spec, req, source=str(ck.path))
    spec = sample_episodes(ck.task, cfg.seed, cfg.episodes)
    res = rollout(runner, method, ck.task, spec.scenes, spec.template, req, seed=cfg.seed + 7 * d + 1000 * s)
    per_ep = [episode_metrics(res, i, ck.task, ck.policy_cfg.horizon) for i in range(cfg.episodes)]
    cell = CellResult(method, d, s, r, aggregate(per_ep, 1.0 / ck.task.arm.control_hz))
    return cell, (res if keep else None)


def chunk_compute_ms(cfg: EvalConfig, method: str) -> dict[str, float]:
    """Median wall time of one chunk (b = 1: prefix encoder + N steps, + VJPs for RTC)."""
    from edge.policy import ChunkRequest
    from sim.env import ReachEnv
    from sim.episodes import sample_episodes

    runner = _runner_for(method)
    ck = runner.ck
    spec = sample_episodes(ck.task, cfg.seed, 1)
    obs = ReachEnv(ck.task, spec.scenes, spec.template).observe()
    h, a = ck.policy_cfg.horizon, ck.policy_cfg.action_dim
    rng = np.random.default_rng(0)
    req = ChunkRequest(d=2, s=8, r=6)
    prev = runner.chunk(method, obs, None, req, rng.standard_normal((1, h, a)).astype(np.float32))
    times = []
    for k in range(cfg.compute_repeats + 3):
        eps = rng.standard_normal((1, h, a)).astype(np.float32)
        tic = time.perf_counter()
        runner.chunk(method, obs, prev, req, eps)
        if k >= 3:  # warm-up
            times.append(time.perf_counter() - tic)
    return {"median_ms": 1000 * float(np.median(times)), "p90_ms": 1000 * float(np.percentile(times, 90))}


def _task(args):
    kind = args[0]
    if kind == "cell":
        return kind, run_cell(*args[1:])
    return kind, (args[2], chunk_compute_ms(args[1], args[2]))


# --- driver ---------------------------------------------------------------------------------
def plan_cells(cfg: EvalConfig) -> list[tuple[str, int, int]]:
    """Every (method, d, s) cell, each checked against its checkpoint before any work: a cell
    that cannot run (a delay beyond the horizon or d_max, a method with no checkpoint, the
    training seed) is refused up front with the flags that name it, never skipped."""
    from edge.policy import INFERENCE_METHODS, ChunkRequest, ModelSpec, check_held_out, check_request
    from legato.checkpoint import read_config

    specs: dict[str, tuple[str, ModelSpec, int | None]] = {}
    for path in cfg.checkpoints:
        conf = read_config(Path(path))
        spec = ModelSpec.from_config(conf, source=str(path))
        train_seed = conf.get("data", {}).get("seed") if isinstance(conf.get("data"), dict) else None
        check_held_out(train_seed, cfg.seed, str(path))
        specs[spec.method] = (str(path), spec, train_seed)
    cells, bad = [], []
    for s in cfg.horizons:
        for d in cfg.delays:
            for m in cfg.methods:
                need = INFERENCE_METHODS[m]
                if need not in specs:
                    raise MethodError(f"--methods {m} needs a checkpoint trained with {need!r}; none among "
                                      f"--checkpoints ({', '.join(cfg.checkpoints)})")  # fmt: skip
                path, spec, _ = specs[need]
                r = default_ramp(spec, d, s) if cfg.ramp is None else cfg.ramp
                try:
                    check_request(m, spec, ChunkRequest(d=d, s=s, r=r), source=path)
                except MethodError as e:
                    bad.append(f"{m} d={d} s={s}: {e}")
                    continue
                cells.append((m, d, s))
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise MethodError(f"--delays/--horizons/--ramp ask for cells that cannot run: {bad[0]}{more}")
    return cells


def _fingerprint(cfg: EvalConfig) -> str:
    """What a finished cell depends on: a resumed run reuses only cells of the same setup."""
    import hashlib

    from legato.checkpoint import CONFIG, WEIGHTS

    h = hashlib.sha256()
    h.update(json.dumps([cfg.episodes, cfg.seed, cfg.ramp, cfg.final_blend]).encode())
    for path in sorted(cfg.checkpoints):
        for name in (CONFIG, WEIGHTS):
            h.update((Path(path) / name).read_bytes())
    return h.hexdigest()


def partial_path(out: Path) -> Path:
    """Where finished cells are kept until the report is complete (for --resume)."""
    return out.with_name(f".{out.name}.partial.jsonl")


def evaluate(cfg: EvalConfig, out: str | Path, progress: bool = True, replace: bool = False,
             resume: bool = False) -> dict[str, Any]:  # fmt: skip
    """Run every cell and write the report folder `out` in one atomic swap.

    Finished cells are appended to a hidden partial file beside `out`, so an interrupted run
    continues with resume=True; the previous report stays whole until the new one is complete.
    """
    from tqdm import tqdm

    from edge.outputs import atomic_folder, check_target

    out = Path(out)
    check_target(out, "report", replace=replace or resume, flag="--force (or --resume)")
    cells = plan_cells(cfg)
    key = _fingerprint(cfg)
    part = partial_path(out)
    done: dict[tuple[str, int, int], CellResult] = {}
    if resume and part.exists():
        for line in part.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut by the interruption
            if rec.get("key") == key:
                c = CellResult(rec["method"], rec["d"], rec["s"], rec["r"], rec["values"])
                done[(c.method, c.d, c.s)] = c
    elif part.exists():
        part.unlink()
    example = tuple(cfg.example)
    todo = [c for c in cells if c not in done or c[1:] == example]  # example cells re-run for their plots
    jobs: list[tuple] = [("cell", cfg, m, d, s, (d, s) == example) for m, d, s in todo]
    jobs += [("compute", cfg, m) for m in cfg.methods]
    t0 = time.time()
    results: list[CellResult] = [c for k, c in done.items() if k not in todo]
    examples: dict[str, Any] = {}
    compute: dict[str, dict[str, float]] = {}
    workers = max(1, min(cfg.workers, os.cpu_count() or 1))
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // workers)
    bar = tqdm(total=len(cells) * cfg.episodes, initial=len(results) * cfg.episodes, desc="eval episodes",
               unit="ep", disable=not progress)  # fmt: skip
    if workers == 1:
        _init_worker(cfg.checkpoints, threads)
        outputs = (_task(j) for j in jobs)
    else:
        import multiprocessing as mp

        pool = ProcessPoolExecutor(workers, mp.get_context("spawn"), _init_worker, (cfg.checkpoints, threads))
        outputs = (f.result() for f in as_completed([pool.submit(_task, j) for j in jobs]))
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(part, "a") as log:
            for kind, payload in outputs:
                if kind == "cell":
                    cell, res = payload
                    results.append(cell)
                    log.write(json.dumps({"key": key, **asdict(cell)}, default=float) + "\n")
                    log.flush()
                    if res is not None:
                        examples[cell.method] = res
                    bar.update(cfg.episodes)
                else:
                    compute[payload[0]] = payload[1]
    finally:
        bar.close()
        if workers > 1:
            pool.shutdown(cancel_futures=True)
    wall = time.time() - t0
    rows = sorted((c.row() for c in results), key=lambda r: (r["s"], r["d"], cfg.methods.index(r["method"])))
    for r in rows:
        r["chunk_ms"] = compute.get(r["method"], {}).get("median_ms", math.nan)
    report = {
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
        "wall_s": wall,
        "resumed_cells": len(cells) - len(todo),
        "machine": machine_description(),
        "chunk_compute": compute,
        "cells": rows,
    }
    with atomic_folder(out, "report", replace=True) as tmp:
        (tmp / "results.json").write_text(json.dumps(report, indent=1, default=float))
        (tmp / "results.md").write_text(markdown_table(report))
        write_plots(report, examples, tmp)
    part.unlink(missing_ok=True)
    return report


def machine_description() -> str:
    import platform

    return f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"


COLUMNS = [
    ("success_rate", "success", "{:.3f}"),
    ("completion_s", "compl. s", "{:.2f}"),
    ("throughput_per_min", "succ/min", "{:.1f}"),
    ("boundary_jump", "jump", "{:.4f}"),
    ("boundary_ratio", "jump ratio", "{:.2f}"),
    ("overlap_rmse", "overlap", "{:.4f}"),
    ("nsparc_cmd", "NSPARC cmd", "{:.3f}"),
    ("nsparc_exec", "NSPARC exec", "{:.3f}"),
    ("ldj_cmd", "LDJ cmd", "{:.2f}"),
    ("mode_switches", "switches", "{:.3f}"),
    ("stall_fraction", "stall", "{:.3f}"),
    ("chunk_ms", "chunk ms", "{:.1f}"),
]


def markdown_table(report: dict[str, Any]) -> str:
    lines = []
    cfg = report["config"]
    lines.append(
        f"Episodes per cell: {cfg['episodes']} (seed {cfg['seed']}), "
        f"wall time {report['wall_s']:.0f} s on {report['machine']}.\n"
    )
    for s in cfg["horizons"]:
        lines.append(f"\n### Execution horizon s = {s}\n")
        lines.append("| method | d | " + " | ".join(c[1] for c in COLUMNS) + " |")
        lines.append("|---|---|" + "---|" * len(COLUMNS))
        for r in report["cells"]:
            if r["s"] != s:
                continue
            vals = []
            for key, _, fmt in COLUMNS:
                v = r.get(key, math.nan)
                cell = "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)
                if key == "success_rate":
                    cell += f" [{r['success_ci_low']:.2f}, {r['success_ci_high']:.2f}]"
                vals.append(cell)
            lines.append(f"| {r['method']} | {r['d']} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def write_plots(report: dict[str, Any], examples: dict[str, Any], out: Path) -> None:
    from legato import plots

    horizons = report["config"]["horizons"]
    for key, label in METRICS.items():
        plots.plot_metric_vs_delay(report["cells"], key, label, horizons, out / f"{key}.png")
    if examples:
        from legato import checkpoint

        task = checkpoint.load(report["config"]["checkpoints"][0]).task
        ordered = {m: examples[m] for m in report["config"]["methods"] if m in examples}
        plots.plot_examples(ordered, task, 0, out / "example_episode.png")

"""The evaluation harness: every chunking method, across delays and execution horizons.

Protocol (legato.rollout): RTC's simulated delay. Each cell (method, d, s) runs the same
held-out episodes (seed >= 1000) in one batch with the same sampling-noise seed for every
method, so methods compare paired, episode by episode (legato.paired). Per-episode metrics
(legato.episode_metrics) are kept (episodes.npz) and averaged per cell. Cells run in worker
processes, one torch thread each; every job loads the checkpoint it needs (no worker state).
"expert" runs the task's scripted expert (noise-free) on the same episodes: the reference for
hesitation and completion time. Tables and plots: legato.report.
"""

from __future__ import annotations

import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import LegatoError, MethodError, UsageError
from edge.policy import default_ramp
from legato.episode_metrics import EPISODE_KEYS, aggregate, episode_table
from legato.report import METRICS, machine_description, markdown_table, write_plots
from sim.seeds import HELD_OUT_SEED

__all__ = ["METRICS", "EvalConfig", "EvalInterrupted", "evaluate", "plan_cells"]

EXPERT = "expert"  # the scripted expert: no checkpoint, no chunks


class EvalInterrupted(LegatoError):
    """Ctrl-C during an evaluation: finished cells are kept for --resume."""


@dataclass(frozen=True)
class EvalConfig:
    checkpoints: tuple[str, ...]  # one per training method needed by `methods`
    methods: tuple[str, ...] = ("naive", "sync", "rtc", "rtc-train", "legato")
    delays: tuple[int, ...] = (0, 1, 2, 3, 4)
    horizons: tuple[int, ...] = (4, 8)  # execution horizons s
    episodes: int = 200
    seed: int = HELD_OUT_SEED  # held-out episode set
    ramp: int | None = None  # Legato r; None = H - s - d capped at r_max
    final_blend: bool = True  # Legato's final blend (ablation switch)
    workers: int = 2
    threads: int = 0  # torch intra-op threads per worker; 0 = the machine's cores / workers
    example: tuple[int, int] = (3, 8)  # (d, s) of the per-method example-episode figure
    compute_repeats: int = 30  # timed single-chunk inferences per method
    compare: tuple[tuple[str, str], ...] = ()  # paired comparisons (A, B); `legato eval`: legato:rtc
    resamples: int = 4000  # paired bootstrap resamples

    def __post_init__(self) -> None:
        from edge.policy import INFERENCE_METHODS

        if self.episodes < 1:
            raise UsageError(f"--episodes must be >= 1, got {self.episodes}")
        if self.seed < HELD_OUT_SEED:
            raise UsageError(f"--seed {self.seed} may overlap training sets (seeds 0..{HELD_OUT_SEED - 1}); "
                             f"use a held-out seed >= {HELD_OUT_SEED}")  # fmt: skip
        for name in ("methods", "delays", "horizons", "checkpoints"):
            if not getattr(self, name):
                raise UsageError(f"--{name} is empty")
        bad = [m for m in self.methods if m not in INFERENCE_METHODS and m != EXPERT]
        if bad:
            raise UsageError(
                f"--methods: unknown {', '.join(bad)}; choose from {', '.join([*INFERENCE_METHODS, EXPERT])}"
            )
        for a, b in self.compare:
            if a not in self.methods or b not in self.methods:
                raise UsageError(f"--compare {a}:{b}: both methods must be among --methods")


@dataclass
class CellResult:
    method: str
    d: int
    s: int
    r: int
    values: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {"method": self.method, "d": self.d, "s": self.s, "r": self.r, **self.values}


# --- worker side (each job loads what it needs: no process-global state) -------------------------
def _runner(cfg: EvalConfig, method: str):
    """The checkpoint runner for an inference method, from the checkpoint trained for it."""
    from edge.policy import INFERENCE_METHODS
    from legato import checkpoint
    from legato.checkpoint import read_config
    from legato.runner import TorchPolicyRunner

    need = INFERENCE_METHODS[method]
    for path in cfg.checkpoints:
        if read_config(Path(path)).get("method") == need:
            return TorchPolicyRunner(checkpoint.load(path))
    raise MethodError(f"method {method!r} needs a {need!r} checkpoint; none among --checkpoints")


def _task_of(cfg: EvalConfig):
    from legato.checkpoint import read_config
    from sim.tasks import task_from_dict

    return task_from_dict(read_config(Path(cfg.checkpoints[0]))["task"])


def run_cell(cfg: EvalConfig, method: str, d: int, s: int, keep: bool) -> tuple[CellResult, np.ndarray, Any]:
    """One cell: (aggregates, the per-episode table, the rollout if keep)."""
    from edge.policy import ChunkRequest, check_request
    from legato.rollout import expert_rollout, rollout
    from sim.episodes import sample_episodes

    if method == EXPERT:
        task = _task_of(cfg)
        spec = sample_episodes(task, cfg.seed, cfg.episodes)
        res, r = expert_rollout(task, spec), 0
    else:
        runner = _runner(cfg, method)
        ck = runner.ck
        task = ck.task
        r = default_ramp(ck.spec, d, s) if cfg.ramp is None else cfg.ramp  # plan_cells checked it fits
        req = ChunkRequest(d=d, s=s, r=r, final_blend=cfg.final_blend)
        check_request(method, ck.spec, req, source=str(ck.path))
        spec = sample_episodes(task, cfg.seed, cfg.episodes)
        res = rollout(runner, method, task, spec.scenes, spec.template, req, seed=cfg.seed + 7 * d + 1000 * s)
    hz = task.arm.control_hz
    table = episode_table(res, hz)
    cell = CellResult(method, d, s, r, aggregate(table, 1.0 / hz))
    return cell, table, (res if keep else None)


def chunk_compute_ms(cfg: EvalConfig, method: str) -> dict[str, float]:
    """Median wall time of one chunk (b = 1: prefix encoder + N steps, + VJPs for RTC)."""
    from edge.policy import ChunkRequest
    from sim.episodes import sample_episodes
    from sim.tasks import make_env

    runner = _runner(cfg, method)
    ck = runner.ck
    spec = sample_episodes(ck.task, cfg.seed, 1)
    obs = make_env(ck.task, spec.scenes, spec.template).observe()
    h, a = ck.policy_cfg.horizon, ck.policy_cfg.action_dim
    rng = np.random.default_rng(0)
    s = min(cfg.horizons)
    d = min(2, s, h - s)
    req = ChunkRequest(d=d, s=s, r=default_ramp(ck.spec, d, s))
    prev = runner.chunk(method, obs, None, req, rng.standard_normal((1, h, a)).astype(np.float32))
    times = []
    for k in range(cfg.compute_repeats + 3):
        eps = rng.standard_normal((1, h, a)).astype(np.float32)
        tic = time.perf_counter()
        runner.chunk(method, obs, prev, req, eps)
        if k >= 3:  # warm-up
            times.append(time.perf_counter() - tic)
    return {"median_ms": 1000 * float(np.median(times)), "p90_ms": 1000 * float(np.percentile(times, 90))}


# --- driver ---------------------------------------------------------------------------------
def plan_cells(cfg: EvalConfig) -> list[tuple[str, int, int]]:
    """Every (method, d, s) cell, each checked against its checkpoint before any work: a cell
    that cannot run (a delay beyond the horizon or d_max, a method with no checkpoint, the
    training seed) is refused up front with the flags that name it, never skipped. The expert
    has one cell per s (d = 0): it neither waits for nor continues chunks."""
    from edge.policy import INFERENCE_METHODS, ChunkRequest, ModelSpec, check_held_out, check_request
    from legato.checkpoint import read_config
    from sim.tasks import canonical_task

    specs: dict[str, tuple[str, ModelSpec, int | None]] = {}
    tasks = set()
    for path in cfg.checkpoints:
        conf = read_config(Path(path))
        spec = ModelSpec.from_config(conf, source=str(path))
        train_seed = conf.get("data", {}).get("seed") if isinstance(conf.get("data"), dict) else None
        check_held_out(train_seed, cfg.seed, str(path))
        specs[spec.method] = (str(path), spec, train_seed)
        tasks.add(canonical_task(conf["task"]))
    if len(tasks) > 1:
        raise UsageError("--checkpoints were trained on different tasks; evaluate one task at a time")
    cells, bad = [], []
    for s in cfg.horizons:
        for d in cfg.delays:
            for m in cfg.methods:
                if m == EXPERT:
                    if d == cfg.delays[0]:
                        cells.append((m, 0, s))
                    continue
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


Cell = tuple[str, int, int]


def _read_partial(part: Path, key: str) -> dict[Cell, tuple[CellResult, np.ndarray]]:
    done: dict[Cell, tuple[CellResult, np.ndarray]] = {}
    for line in part.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut by the interruption
        if rec.get("key") == key and "episodes" in rec:
            table = np.array(rec["episodes"], dtype=np.float64)
            if table.ndim != 2 or table.shape[1] != len(EPISODE_KEYS):
                continue  # written by a version with other per-episode metrics: run it again
            c = CellResult(rec["method"], rec["d"], rec["s"], rec["r"], rec["values"])
            done[(c.method, c.d, c.s)] = (c, table)
    return done


def paired_comparisons(cfg: EvalConfig, tables: dict[Cell, np.ndarray]) -> list[dict[str, Any]]:
    """Every --compare pair at every (d, s) where both cells ran, on the same episodes (the
    expert's one cell per s pairs with every d)."""
    from legato.paired import compare

    out = []
    for s in cfg.horizons:
        for d in cfg.delays:
            for a, b in cfg.compare:
                ka = (a, 0, s) if a == EXPERT else (a, d, s)
                kb = (b, 0, s) if b == EXPERT else (b, d, s)
                if ka in tables and kb in tables:
                    res = compare(tables[ka], tables[kb], cfg.resamples, seed=cfg.seed + d + 1000 * s)
                    out.append({"a": a, "b": b, "d": d, "s": s, **res})
    return out


def evaluate(cfg: EvalConfig, out: str | Path, progress: bool = True, replace: bool = False,
             resume: bool = False) -> dict[str, Any]:  # fmt: skip
    """Run every cell and write the report folder `out` in one atomic swap: results.json,
    results.md, episodes.npz (per-episode metrics of every cell), plots.

    Finished cells are appended to a hidden partial file beside `out`, so an interrupted run
    continues with resume=True; the previous report stays whole until the new one is complete.
    Ctrl-C raises EvalInterrupted, which says so.
    """
    from tqdm import tqdm

    from edge.outputs import atomic_folder, check_target
    from legato.checkpoint import read_config

    out = Path(out)
    check_target(out, "report", replace=replace or resume, flag="--force (or --resume)")
    cells = plan_cells(cfg)
    key = _fingerprint(cfg)
    part = partial_path(out)
    done = _read_partial(part, key) if resume and part.exists() else {}
    if not resume:
        part.unlink(missing_ok=True)
    example = tuple(cfg.example)
    todo = [c for c in cells if c not in done or c[1:] == example]  # example cells re-run for their plots
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // max(1, cfg.workers))
    jobs: list[tuple] = [("cell", cfg, m, d, s, (d, s) == example, threads) for m, d, s in todo]
    jobs += [("compute", cfg, m, threads) for m in cfg.methods if m != EXPERT]
    t0 = time.time()
    kept = {k: v for k, v in done.items() if k not in todo}
    results: list[CellResult] = [c for c, _ in kept.values()]
    tables: dict[Cell, np.ndarray] = {k: t for k, (_, t) in kept.items()}
    examples: dict[str, Any] = {}
    compute: dict[str, dict[str, float]] = {}
    workers = max(1, min(cfg.workers, os.cpu_count() or 1))
    bar = tqdm(total=len(cells) * cfg.episodes, initial=len(results) * cfg.episodes, desc="eval episodes",
               unit="ep", disable=not progress)  # fmt: skip
    pool = None
    if workers == 1:
        outputs = (_job(j) for j in jobs)
    else:
        import multiprocessing as mp

        pool = ProcessPoolExecutor(workers, mp.get_context("spawn"))
        outputs = (f.result() for f in as_completed([pool.submit(_job, j) for j in jobs]))
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(part, "a") as log:
            for kind, payload in outputs:
                if kind == "cell":
                    cell, table, res = payload
                    results.append(cell)
                    tables[(cell.method, cell.d, cell.s)] = table
                    rec = {"key": key, **asdict(cell), "episodes": table.tolist()}
                    log.write(json.dumps(rec, default=float) + "\n")
                    log.flush()
                    if res is not None:
                        examples[cell.method] = res
                    bar.update(cfg.episodes)
                else:
                    compute[payload[0]] = payload[1]
    except KeyboardInterrupt:
        raise EvalInterrupted(
            f"interrupted: {len(results)} of {len(cells)} cells are kept in {part}; "
            "rerun the same command with --resume to finish the rest"
        ) from None
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    wall = time.time() - t0
    order = {m: i for i, m in enumerate(cfg.methods)}
    rows = sorted((c.row() for c in results), key=lambda r: (r["s"], r["d"], order[r["method"]]))
    for r in rows:
        r["chunk_ms"] = compute.get(r["method"], {}).get("median_ms", math.nan)
    report = {
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
        "task": read_config(Path(cfg.checkpoints[0]))["task"],  # `legato compare` pairs reports of one task
        "wall_s": wall,
        "resumed_cells": len(cells) - len(todo),
        "machine": machine_description(),
        "chunk_compute": compute,
        "cells": rows,
        "paired": paired_comparisons(cfg, tables),
    }
    arrays = {f"{m}_d{d}_s{s}": t for (m, d, s), t in tables.items()}
    with atomic_folder(out, "report", replace=True) as tmp:
        (tmp / "results.json").write_text(json.dumps(report, indent=1, default=float))
        (tmp / "results.md").write_text(markdown_table(report))
        np.savez_compressed(tmp / "episodes.npz", columns=np.array(EPISODE_KEYS), **arrays)
        write_plots(report, examples, tmp, _task_of(cfg))
    part.unlink(missing_ok=True)
    return report


def _job(args):
    """One worker job: ("cell", cfg, method, d, s, keep, threads) or ("compute", cfg, method, threads)."""
    import torch

    torch.set_num_threads(args[-1])
    kind = args[0]
    if kind == "cell":
        return kind, run_cell(*args[1:-1])
    return kind, (args[2], chunk_compute_ms(args[1], args[2]))

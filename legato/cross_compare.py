"""Paired comparisons across two evaluation reports that ran the same episodes (`legato compare`).

Every report of one held-out set (same task, --seed and --episodes) runs episode k with the same
scene and, at each (d, s), the same sampling-noise seed, whatever its checkpoints or --ramp. So
a new checkpoint's cells pair episode by episode with another report's cells without rerunning
the other methods (RTC, the expensive one, runs once). Reports of several held-out sets pool
(`REPORT1:METHOD+REPORT2:METHOD`): the i-th report of one side pairs with the i-th of the
other, and their episodes are concatenated, one larger sample of the same scene distribution;
the bootstrap resamples within each set (legato.paired's strata), so each keeps its size.
The statistics are legato.paired's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UsageError
from legato.episode_metrics import EPISODE_KEYS, LATER_KEYS, aggregate

EXPERT = "expert"  # one cell per s (d = 0): pairs with every d


@dataclass(frozen=True)
class ReportCells:
    """One report's per-episode tables: {(method, d, s): (episodes, len(EPISODE_KEYS))}."""

    path: Path
    seed: int
    episodes: int
    task: str | None  # the task as canonical JSON (None when neither report nor checkpoint says)
    tables: dict[tuple[str, int, int], np.ndarray]
    parts: tuple[int, ...] = ()  # episodes per held-out set of a pooled report (() for one set)

    def strata(self) -> np.ndarray | None:
        """(episodes,) the held-out set of each episode of a pooled report; None for one set."""
        return np.repeat(np.arange(len(self.parts)), self.parts) if len(self.parts) > 1 else None


def _task_of(report: dict[str, Any]) -> str | None:
    from sim.tasks import canonical_task

    task = report.get("task")
    if task is None:  # reports written before the task was recorded: ask the checkpoints
        for ck in report.get("config", {}).get("checkpoints", ()):
            try:
                task = json.loads((Path(ck) / "config.json").read_text())["task"]
                break
            except (OSError, ValueError, KeyError, TypeError):
                continue
    if task is None:
        return None
    try:
        return canonical_task(task)
    except (ValueError, KeyError, TypeError):
        return json.dumps(task, sort_keys=True)  # a task this version does not know: compare as written


def load_report(path: str | Path) -> ReportCells:
    """A report folder of `legato eval` (results.json + episodes.npz). Raises UsageError."""
    path = Path(path)
    try:
        report = json.loads((path / "results.json").read_text())
        with np.load(path / "episodes.npz") as z:
            columns = [str(c) for c in z["columns"]]
            arrays = {k: z[k] for k in z.files if k != "columns"}
    except FileNotFoundError as e:
        raise UsageError(
            f"{path} is not a finished `legato eval` report ({Path(e.filename).name} missing)"
        ) from None
    except (OSError, ValueError, KeyError) as e:
        raise UsageError(f"{path}: unreadable report ({e})") from None
    known = [k for k in EPISODE_KEYS if k not in LATER_KEYS]
    if not set(known) <= set(columns) <= set(EPISODE_KEYS):
        raise UsageError(
            f"{path}: episodes.npz has columns {columns}, this version reads {list(EPISODE_KEYS)}"
        )
    tables = {}
    for cell in report["cells"]:
        key = (cell["method"], int(cell["d"]), int(cell["s"]))
        tables[key] = _in_key_order(arrays[f"{key[0]}_d{key[1]}_s{key[2]}"], columns)
    cfg = report["config"]
    return ReportCells(path, int(cfg["seed"]), int(cfg["episodes"]), _task_of(report), tables)


def _in_key_order(table: np.ndarray, columns: list[str]) -> np.ndarray:
    """(episodes, len(EPISODE_KEYS)): a report's table in this version's column order, NaN in the
    columns its version did not write (legato.episode_metrics.LATER_KEYS)."""
    out = np.full((len(table), len(EPISODE_KEYS)), np.nan)
    for j, k in enumerate(columns):
        out[:, EPISODE_KEYS.index(k)] = table[:, j]
    return out


def check_same_episodes(a: ReportCells, b: ReportCells) -> None:
    """Refuse two reports whose episode k is not the same scene and noise."""
    if (a.seed, a.episodes) != (b.seed, b.episodes):
        raise UsageError(f"{a.path} ran --seed {a.seed} --episodes {a.episodes}, {b.path} --seed {b.seed} "
                         f"--episodes {b.episodes}: not the same episodes")  # fmt: skip
    if a.parts != b.parts:
        raise UsageError(f"{a.path} pools held-out sets of {list(a.parts or (a.episodes,))} episodes, "
                         f"{b.path} of {list(b.parts or (b.episodes,))}: not the same episodes")  # fmt: skip
    if a.task is None or b.task is None:
        missing = a.path if a.task is None else b.path
        raise UsageError(
            f"{missing}: cannot tell its task (results.json has none and its checkpoints are gone)"
        )
    if a.task != b.task:
        raise UsageError(f"{a.path} and {b.path} evaluated different tasks")


def check_paired_sets(parts_a: list[ReportCells], parts_b: list[ReportCells]) -> None:
    """Refuse two sides of held-out sets unless part i of a ran the same episodes as part i of b."""
    if len(parts_a) != len(parts_b):
        raise UsageError(f"pooling pairs report i of one side with report i of the other: "
                         f"{len(parts_a)} against {len(parts_b)} reports")  # fmt: skip
    for a, b in zip(parts_a, parts_b, strict=True):  # lengths checked above
        check_same_episodes(a, b)


def pooled_report(parts: list[ReportCells]) -> ReportCells:
    """Held-out sets of one side as one report: each (method, d, s) cell that every part ran is
    the concatenation of its parts' episodes, in order, and `parts` their sizes (the bootstrap's
    strata); seed and task are the first part's. One part is returned as it is. Pair two sides
    only after check_paired_sets."""
    if len(parts) == 1:
        return parts[0]
    keys = set.intersection(*(set(p.tables) for p in parts))
    tables = {k: np.concatenate([p.tables[k] for p in parts]) for k in sorted(keys)}
    path = Path("+".join(str(p.path) for p in parts))
    sizes = tuple(n for p in parts for n in (p.parts or (p.episodes,)))
    return ReportCells(path, parts[0].seed, sum(sizes), parts[0].task, tables, sizes)


def _cell(r: ReportCells, method: str, d: int, s: int) -> np.ndarray | None:
    return r.tables.get((method, 0, s) if method == EXPERT else (method, d, s))


def cross_compare(a: ReportCells, method_a: str, b: ReportCells, method_b: str, resamples: int = 4000,
                  label_a: str = "", label_b: str = "") -> list[dict[str, Any]]:  # fmt: skip
    """Paired comparisons of method_a (report a) against method_b (report b) at every (d, s) both
    ran, in legato.evaluate.paired_comparisons' row format (same bootstrap seed per (d, s))."""
    from legato.paired import compare

    check_same_episodes(a, b)
    grid = sorted({(s, d) for (m, d, s) in [*a.tables, *b.tables] if m in (method_a, method_b)})
    strata = a.strata()  # b's are the same (check_same_episodes)
    rows = []
    for s, d in grid:
        if method_a == EXPERT and method_b == EXPERT and d != 0:
            continue
        ta, tb = _cell(a, method_a, d, s), _cell(b, method_b, d, s)
        if ta is None or tb is None:
            continue
        res = compare(ta, tb, resamples, seed=a.seed + d + 1000 * s, strata=strata)
        rows.append({"a": label_a or method_a, "b": label_b or method_b, "d": d, "s": s, **res})
    if not rows:
        raise UsageError(f"no (d, s) cell has both {method_a} in {a.path} and {method_b} in {b.path}")
    return rows


def trade_off(r: ReportCells, method: str) -> list[dict[str, float]]:
    """The success / consistency trade-off of one method in one report, the two axes
    `legato compare --plot` draws: per (s, d) cell, sorted, {"s", "d", "success" (rate),
    "overlap_rmse" (mean over the episodes that had an overlap, action units)}."""
    rows = []
    for (m, d, s), t in sorted(r.tables.items(), key=lambda kv: (kv[0][2], kv[0][1])):
        if m != method:
            continue
        cell = aggregate(t, dt=1.0)  # results.md's own means; dt scales only the throughput, not drawn
        rows.append({"s": s, "d": d, "success": cell["success_rate"], "overlap_rmse": cell["overlap_rmse"]})
    if not rows:
        raise UsageError(f"{r.path} has no {method} cells")
    return rows


def parse_side(text: str) -> tuple[list[Path], str]:
    """ "reports/x:legato" -> ([Path("reports/x")], "legato"); "reports/x:legato+reports/y:legato"
    -> ([Path("reports/x"), Path("reports/y")], "legato") (held-out sets to pool, one method)."""
    paths, methods = [], set()
    for part in text.split("+"):
        path, sep, method = part.rpartition(":")
        if not sep or not path or not method:
            raise UsageError(f"expected REPORT:METHOD (e.g. reports/round3:legato), got {part!r}")
        paths.append(Path(path))
        methods.add(method)
    if len(methods) > 1:
        raise UsageError(f"{text!r}: pooled reports name one method, got {sorted(methods)}")
    return paths, methods.pop()

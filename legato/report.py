"""The evaluation report: its markdown tables and its plots (legato.evaluate runs the cells)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

METRICS: dict[str, str] = {
    "success_rate": "success rate",
    "completion_s": "completion time (s, successes)",
    "throughput_per_min": "successes per minute",
    "boundary_jump": "boundary discontinuity (action units)",
    "boundary_ratio": "boundary jump / within-chunk step",
    "overlap_rmse": "overlap inconsistency (RMSE)",
    "nsparc_cmd": "NSPARC, commanded (lower smoother)",
    "nsparc_exec": "NSPARC, executed",
    "ldj_cmd": "log dimensionless jerk, commanded",
    "ldj_exec": "log dimensionless jerk, executed",
    "msj_cmd": "mean squared jerk, commanded",
    "mode_switches": "mode switches per episode",
    "stall_fraction": "stall fraction",
    "collision_rate": "collision rate (planar: ends the episode; push-wall: wall contact)",
    "left_route": "share of episodes that went left (push-wall: the short route)",
}

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
    ("collision_rate", "collided", "{:.3f}"),
    ("left_route", "left", "{:.2f}"),
    ("chunk_ms", "chunk ms", "{:.1f}"),
]


def machine_description() -> str:
    import platform

    return f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"


def _fmt(v: Any, fmt: str) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


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
                cell = _fmt(r.get(key, math.nan), fmt)
                if key == "success_rate":
                    cell += f" [{r['success_ci_low']:.2f}, {r['success_ci_high']:.2f}]"
                vals.append(cell)
            d = "-" if r["method"] == "expert" else r["d"]
            lines.append(f"| {r['method']} | {d} | " + " | ".join(vals) + " |")
    if report.get("paired"):
        lines.append(paired_table(report["paired"]))
    return "\n".join(lines) + "\n"


def paired_table(paired: list[dict[str, Any]]) -> str:
    """The paired comparisons: estimate [95 % paired bootstrap interval] per metric."""
    lines = ["\n### Paired comparisons (same episodes and noise; 95 % paired bootstrap intervals)\n",
             "| A vs B | s | d | success A - B | completion A / B | same route | switches A - B "
             "| jump A - B | stall A - B |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip

    def ci(v: list[float] | None, fmt: str) -> str:
        if v is None:  # a report written before this metric was compared
            return "n/a"
        return f"{_fmt(v[0], fmt)} [{_fmt(v[1], fmt)}, {_fmt(v[2], fmt)}]"

    for p in paired:
        lines.append(
            f"| {p['a']} vs {p['b']} | {p['s']} | {p['d']} | {ci(p['success'], '{:+.3f}')} | "
            f"{ci(p['completion_s'], '{:.3f}')} | {ci(p.get('completion_same_route'), '{:.3f}')} | "
            f"{ci(p['mode_switches'], '{:+.3f}')} | "
            f"{ci(p['boundary_jump'], '{:+.4f}')} | {ci(p.get('stall_fraction'), '{:+.3f}')} |"
        )
    return "\n".join(lines)


def write_plots(report: dict[str, Any], examples: dict[str, Any], out: Path, task: Any) -> None:
    from legato import plots

    horizons = report["config"]["horizons"]
    cells = [c for c in report["cells"] if c["method"] != "expert"]
    for key, label in METRICS.items():
        plots.plot_metric_vs_delay(cells, key, label, horizons, out / f"{key}.png")
    if examples:
        ordered = {m: examples[m] for m in report["config"]["methods"] if m in examples}
        plots.plot_examples(ordered, task, 0, out / "example_episode.png")

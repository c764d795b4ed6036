"""Pictures a person would rather look at than read: an episode's path and its chunks."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from legato.rollout import RolloutResult  # noqa: E402
from sim.arm import end_effector  # noqa: E402
from sim.scene import COLOR_RGB, COLORS  # noqa: E402
from sim.task import TaskConfig  # noqa: E402


def plot_episode(res: RolloutResult, task: TaskConfig, i: int, path: str | Path, title: str = "") -> Path:
    """Left: the scene from above with the end-effector path. Right: commanded joint targets
    over time, chunk switches marked, each chunk's full plan drawn faintly (the parts that
    were never executed show how consecutive chunks disagree)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [1, 1.6]})
    if getattr(task, "name", "planar-reach") == "metaworld-push-wall":
        _push_wall_scene(ax0, res, i)
        draw_chunks(ax1, res, i, 1.0 / task.arm.control_hz)
        ax1.set_title(title or f"{res.method}, d={res.d}, s={res.s}")
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return path
    ee = res.ee[i]
    ax0.set_aspect("equal")
    ax0.set_xlim(*task.camera.x_range)
    ax0.set_ylim(*task.camera.y_range)
    scenes = getattr(res, "scenes", None)
    if scenes is not None:
        sc = scenes.select(np.array([i]))
        ax0.add_patch(plt.Circle(sc.obstacle[0], sc.obstacle_r[0], color="0.55"))
        for k in range(sc.targets.shape[1]):
            rgb = np.array(COLOR_RGB[COLORS[k]]) / 255
            lw = 2.5 if k == sc.instructed[0] else 0
            ax0.add_patch(plt.Circle(sc.targets[0, k], task.scene.target_radius, color=rgb, ec="k", lw=lw))
    for c in res.chunks:  # each chunk's plan, as the end-effector path it would draw
        if c.alive[i]:
            plan = end_effector(task.arm, c.chunk[i].astype(np.float64))
            ax0.plot(plan[:, 0], plan[:, 1], "-", color="tab:orange", alpha=0.35, lw=0.8)
    ax0.plot(ee[:, 0], ee[:, 1], "k-", lw=1.5)
    ax0.plot(ee[0, 0], ee[0, 1], "ko")
    outcome = "success" if res.success[i] else ("collision" if res.collided[i] else "timeout")
    ax0.set_title(f"episode {i}: {outcome}")
    draw_chunks(ax1, res, i, 1.0 / task.arm.control_hz)
    ax1.set_title(title or f"{res.method}, d={res.d}, s={res.s}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _push_wall_scene(ax, res: RolloutResult, i: int) -> None:
    """Push-wall from above: the wall, the hand's path, every chunk's planned hand path."""
    from sim.pushwall import WALL_X, WALL_Y

    ax.set_aspect("equal")
    ax.add_patch(plt.Rectangle((WALL_X[0], WALL_Y - 0.01), WALL_X[1] - WALL_X[0], 0.02, color="0.55"))
    for c in res.chunks:
        if c.alive[i]:
            ax.plot(c.chunk[i, :, 0], c.chunk[i, :, 1], "-", color="tab:orange", alpha=0.35, lw=0.8)
    ee = res.ee[i]
    ax.plot(ee[:, 0], ee[:, 1], "k-", lw=1.5)
    ax.plot(ee[0, 0], ee[0, 1], "ko")
    ax.set_xlim(-0.25, 0.45)
    ax.set_ylim(0.5, 0.95)
    ax.set_title(f"episode {i}: {'success' if res.success[i] else 'timeout'} (hand path, x-y)")


def draw_chunks(ax, res: RolloutResult, i: int, dt: float) -> None:
    """Commanded joint targets of episode i (bold), every chunk's whole plan (faint) and the
    times at which chunks took over (grey lines)."""
    cmd = res.commanded[i]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for c in res.chunks:
        if not c.alive[i]:
            continue
        tt = (c.origin + np.arange(c.chunk.shape[1])) * dt
        for j in range(cmd.shape[1]):
            ax.plot(tt, c.chunk[i, :, j], color=colors[j], alpha=0.2, lw=1)
        ax.axvline(c.start * dt, color="0.8", lw=0.8, zorder=0)
    for j in range(cmd.shape[1]):
        ax.plot(np.arange(len(cmd)) * dt, cmd[:, j], color=colors[j], lw=1.8, label=f"target {j}")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("commanded target (rad; push-wall: m)")
    ax.legend(loc="best", fontsize=7)


def plot_examples(results: dict[str, RolloutResult], task: TaskConfig, i: int, path: str | Path) -> Path:
    """One row per method: the same held-out episode under each chunking method."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(results)
    fig, axes = plt.subplots(n, 1, figsize=(10, 2.4 * n), sharex=True, squeeze=False)
    dt = 1.0 / task.arm.control_hz
    for ax, (method, res) in zip(axes[:, 0], results.items(), strict=True):
        draw_chunks(ax, res, i, dt)
        outcome = "success" if res.success[i] else ("collision" if res.collided[i] else "timeout")
        ax.set_title(f"{method} (d={res.d}, s={res.s}): {outcome}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_metric_vs_delay(
    cells: list[dict], metric: str, label: str, horizons: list[int], path: str | Path
) -> Path:
    """The metric against delay, one line per method, one panel per execution horizon."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(horizons), figsize=(5 * len(horizons), 3.6), squeeze=False)
    methods = list(dict.fromkeys(c["method"] for c in cells))
    for ax, s in zip(axes[0], horizons, strict=True):
        for m in methods:
            pts = sorted((c["d"], c[metric]) for c in cells if c["method"] == m and c["s"] == s)
            if pts:
                ax.plot(*zip(*pts, strict=True), "o-", label=m)
        ax.set_title(f"s = {s}")
        ax.set_xlabel("inference delay d (steps)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_trade_off(lines: dict[str, list[dict[str, float]]]) -> bytes:
    """PNG: success rate against overlap inconsistency, one line per method (legend label ->
    legato.cross_compare.trade_off rows) through its delays, one panel per execution horizon.
    Up and to the left is better; each point is labelled with its delay d."""
    horizons = sorted({int(r["s"]) for rows in lines.values() for r in rows})
    fig, axes = plt.subplots(1, len(horizons), figsize=(6 * len(horizons) + 3, 4.2), squeeze=False)
    for ax, s in zip(axes[0], horizons, strict=True):
        for label, rows in lines.items():
            pts = [(r["overlap_rmse"], r["success"], int(r["d"])) for r in rows if int(r["s"]) == s]
            if not pts:
                continue
            x, y, _ = zip(*pts, strict=True)
            (line,) = ax.plot(x, y, "o-", label=label, ms=4)
            for xi, yi, d in pts:
                ax.annotate(str(d), (xi, yi), textcoords="offset points", xytext=(3, 3), fontsize=7,
                            color=line.get_color())  # fmt: skip
        ax.set_title(f"s = {s} (labels: delay d)")
        ax.set_xlabel("overlap inconsistency (RMSE, lower is more consistent)")
        ax.set_ylabel("success rate")
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()

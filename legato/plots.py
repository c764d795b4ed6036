"""Pictures a person would rather look at than read: an episode's path and its chunks."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from legato.rollout import RolloutResult  # noqa: E402
from sim.scene import COLOR_RGB, COLORS  # noqa: E402
from sim.task import TaskConfig  # noqa: E402


def plot_episode(res: RolloutResult, task: TaskConfig, i: int, path: str | Path, title: str = "") -> Path:
    """Left: the scene from above with the end-effector path. Right: commanded joint targets
    over time, chunk switches marked, each chunk's full plan drawn faintly (the parts that
    were never executed show how consecutive chunks disagree)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [1, 1.6]})
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
    ax0.plot(ee[:, 0], ee[:, 1], "k-", lw=1.5)
    ax0.plot(ee[0, 0], ee[0, 1], "ko")
    outcome = "success" if res.success[i] else ("collision" if res.collided[i] else "timeout")
    ax0.set_title(f"episode {i}: {outcome}")
    dt = 1.0 / task.arm.control_hz
    cmd = res.commanded[i]
    steps = np.arange(len(cmd)) * dt
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for c in res.chunks:
        if not c.alive[i]:
            continue
        tt = (c.origin + np.arange(c.chunk.shape[1])) * dt
        for j in range(cmd.shape[1]):
            ax1.plot(tt, c.chunk[i, :, j], color=colors[j], alpha=0.18, lw=1)
        ax1.axvline(c.start * dt, color="0.8", lw=0.8, zorder=0)
    for j in range(cmd.shape[1]):
        ax1.plot(steps, cmd[:, j], color=colors[j], lw=1.8, label=f"joint {j}")
    ax1.set_xlabel("time (s)")
    ax1.set_ylabel("commanded joint target (rad)")
    ax1.set_title(title or f"{res.method}, d={res.d}, s={res.s}")
    ax1.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

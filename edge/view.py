"""`legato view FILE --out DIR`: a recording as a picture a person reads at a glance.

view.png (matplotlib, the ``view`` extra):
- a strip of camera frames along the run (the frames the policy consumed, with their chunk), one
  row per camera for a policy with several;
- per joint: the executed joint (telemetry), the commanded setpoints, and every chunk's plan drawn
  from where it took over, with the chunk boundaries (swaps) as thin lines;
- latency per chunk and the delay d it was sampled with, against the control period;
- underruns shaded and faults marked on every panel, events listed in the title.
view.html: the picture, every frame, the run's metadata and summary, and the events, in one file.
view.rrd (``--rerun``, the ``rerun`` extra: rerun-sdk): the same streams as a Rerun recording on
the robot's monotonic timeline (open with ``rerun view.rrd``).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UsageError
from edge.loop import TICK_COLS, UNDERRUN

_T = {c: i for i, c in enumerate(TICK_COLS)}
VIEW_MISSING = "legato view needs matplotlib: pip install 'legato-edge[view]'"
RERUN_MISSING = "--rerun needs the Rerun SDK: pip install 'legato-edge[rerun]' (rerun-sdk)"


def _t0(rec: Any) -> float:
    starts = [c.capture_time for c in rec.chunks[:1]]
    if len(rec.ticks):
        starts.append(float(rec.ticks[0, _T["start"]]))
    return min(starts) if starts else 0.0


def _period(rec: Any) -> float:
    return 1.0 / float(rec.meta.get("loop", {}).get("rate_hz", 50.0))


def plan_times(c: Any, t0: float, period: float) -> np.ndarray:
    """When each action of a chunk's plan was (or would have been) executed, s after t0: action
    ``start_index`` at the swap, the tick after the chunk was ready."""
    start = int(c.msg.get("start_index", c.d))
    return c.ready_time - t0 + (np.arange(len(c.plan)) - start + 0.5) * period


def underrun_spans(rec: Any, t0: float) -> list[tuple[float, float]]:
    """(start, end) s of each run of underrun ticks."""
    if not len(rec.ticks):
        return []
    u = rec.ticks[:, _T["mode"]] == UNDERRUN
    t = rec.ticks[:, _T["start"]] - t0
    spans, i = [], 0
    while i < len(u):
        if u[i]:
            j = i
            while j + 1 < len(u) and u[j + 1]:
                j += 1
            end = t[j + 1] if j + 1 < len(t) else t[j] + _period(rec)  # up to the next tick that ran
            spans.append((float(t[i]), float(end)))
            i = j + 1
        else:
            i += 1
    return spans


def write_view(out: Path, rec: Any, frames: int = 8, rerun: bool = False) -> list[str]:
    """view.png and view.html (and view.rrd) into folder `out`; the names written."""
    if not rec.chunks and not len(rec.ticks):
        raise UsageError(f"{rec.path} holds no chunk and no tick: nothing to show")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: F401
    except ImportError:
        raise UsageError(VIEW_MISSING) from None
    if rerun:
        try:
            import rerun  # noqa: F401
        except ImportError:
            raise UsageError(RERUN_MISSING) from None
    shown = _figure(out / "view.png", rec, frames)
    (out / "view.html").write_text(_html(rec, (out / "view.png").read_bytes(), shown))
    names = ["view.png", "view.html"]
    if rerun:
        write_rerun(out / "view.rrd", rec)
        names.append("view.rrd")
    return names


def _figure(path: Path, rec: Any, frames: int) -> list[int]:
    import matplotlib.pyplot as plt

    chunks, ticks = rec.chunks, rec.ticks
    t0, period = _t0(rec), _period(rec)
    a = chunks[0].plan.shape[1] if chunks else ticks.shape[1] - len(TICK_COLS)
    k = min(frames, len(chunks))
    pick = sorted({int(round(x)) for x in np.linspace(0, len(chunks) - 1, k)}) if k else []
    cams = list(chunks[0].images) if chunks else []  # the strip: one row per camera
    nc = len(cams)
    fig = plt.figure(figsize=(15, 2.2 * max(nc, 1) + 2.0 * a + 2.4))
    rows = nc + a + 1
    gs = fig.add_gridspec(rows, max(len(pick), 1), height_ratios=[1.3] * nc + [1.0] * a + [1.1])
    for col, i in enumerate(pick):
        shown = chunks[i].frames()
        for r, name in enumerate(cams):
            ax = fig.add_subplot(gs[r, col])
            ax.imshow(shown[name])
            if r == 0:
                ax.set_title(f"chunk #{chunks[i].seq} at {chunks[i].capture_time - t0:.2f} s", fontsize=8)
            if col == 0 and nc > 1:
                ax.set_ylabel(name, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    spans = underrun_spans(rec, t0)
    faults = ticks[ticks[:, _T["fault"]] > 0, _T["start"]] - t0 if len(ticks) else np.zeros(0)
    swaps = np.array([c.ready_time - t0 for c in chunks])
    axes = []
    for j in range(a):
        ax = fig.add_subplot(gs[nc + j, :], sharex=axes[0] if axes else None)
        axes.append(ax)
        for c in chunks:
            ax.plot(plan_times(c, t0, period), c.plan[:, j], lw=0.7, alpha=0.55, color="tab:orange")
        if len(ticks):
            ax.step(
                ticks[:, _T["start"]] - t0,
                ticks[:, len(TICK_COLS) + j],
                where="post",
                lw=1.0,
                color="tab:blue",
            )
        tel = rec.telemetry
        if len(tel["received_at"]):
            ax.plot(tel["received_at"] - t0, tel["positions"][:, j], ".", ms=2.5, color="k")
        for x in swaps:
            ax.axvline(x, color="0.75", lw=0.4, zorder=0)
        ax.set_ylabel(f"joint {j} (rad)", fontsize=8)
    if axes:
        axes[0].plot([], [], color="tab:orange", label="chunk plans (from their swap)")
        axes[0].plot([], [], color="tab:blue", label="setpoint sent")
        axes[0].plot([], [], ".", color="k", label="executed (telemetry)")
        axes[0].plot([], [], color="0.75", lw=0.6, label="chunk boundary")
        axes[0].legend(fontsize=7, loc="upper right", ncol=4)
    ax = fig.add_subplot(gs[rows - 1, :], sharex=axes[0] if axes else None)
    axes.append(ax)
    if chunks:
        lat = np.array([c.latency_ms for c in chunks])
        ax.plot(swaps, lat, ".-", ms=3, lw=0.6, color="tab:purple", label="latency (ms)")
        ax.axhline(period * 1e3, color="tab:purple", lw=0.6, ls=":", label=f"period {period * 1e3:g} ms")
        ax.set_ylabel("latency (ms)", fontsize=8)
        ax2 = ax.twinx()
        ax2.step(swaps, [c.d for c in chunks], where="post", color="tab:green", lw=1.0)
        ax2.set_ylabel("delay d (ticks)", fontsize=8, color="tab:green")
        ax.legend(fontsize=7, loc="upper left")
    ax.set_xlabel("s since the first record (robot monotonic clock)", fontsize=8)
    for x in axes:
        for s0, s1 in spans:
            x.axvspan(s0, s1, color="tab:red", alpha=0.25, lw=0)
        for f in faults:
            x.axvline(f, color="tab:red", lw=1.0)
    fig.suptitle(headline(rec), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=75)
    plt.close(fig)
    return [chunks[i].seq for i in pick]


def headline(rec: Any) -> str:
    """The sentence over the picture (and the page): counts, underruns, faults, latency."""
    ticks, chunks = rec.ticks, rec.chunks
    n_under = int((ticks[:, _T["mode"]] == UNDERRUN).sum()) if len(ticks) else 0
    n_fault = int((ticks[:, _T["fault"]] > 0).sum()) if len(ticks) else 0
    cut = "" if rec.complete else "; CUT OFF (no clean close): whole chunks only"
    return (
        f"{rec.path.name}: {len(chunks)} chunks, {len(ticks)} ticks, {n_under} underrun ticks (red), "
        f"{n_fault} fault ticks; latency p50 {_p(chunks, 50)} / p99 {_p(chunks, 99)} ms{cut}"
    )


def _p(chunks: list[Any], q: float) -> str:
    return f"{np.percentile([c.latency_ms for c in chunks], q):.1f}" if chunks else "-"


def _html(rec: Any, png: bytes, shown: list[int]) -> str:
    def b64(data: bytes, fmt: str) -> str:
        return f"data:image/{fmt};base64,{base64.b64encode(data).decode()}"

    t0 = _t0(rec)
    several = len(rec.chunks[0].images) > 1 if rec.chunks else False

    def imgs(c: Any) -> str:
        return "".join(
            f'<img src="{b64(data, c.image_format)}" width="128" title="{html.escape(n)}">'
            for n, data in c.images.items()
        )

    frames = "\n".join(
        f"<figure>{imgs(c)}<figcaption>#{c.seq} "
        f"{c.capture_time - t0:.2f} s, d {c.d}, {c.latency_ms:.1f} ms</figcaption></figure>"
        for c in rec.chunks
    )
    cams = f" (each chunk: {html.escape(', '.join(rec.chunks[0].images))})" if several else ""
    meta = {k: v for k, v in rec.meta.items() if k != "profile"}
    meta["profile"] = {"name": rec.meta.get("profile", {}).get("name")}
    events = "".join(f"<li>{html.escape(e.get('message', ''))}</li>" for e in rec.events) or "<li>none</li>"
    summary = rec.summary or {"note": "no summary: the recording was cut off"}
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(rec.path.name)}</title>
<style>body{{font-family:sans-serif;margin:1em}} figure{{display:inline-block;margin:2px;font-size:11px}}
pre{{background:#f4f4f4;padding:.5em;max-height:24em;overflow:auto}}</style></head><body>
<h1>{html.escape(rec.path.name)}</h1>
<p>{html.escape(headline(rec))}; frames shown in the picture: {", ".join(f"#{s}" for s in shown)}</p>
<img src="{b64(png, "png")}" style="max-width:100%">
<h2>Events</h2><ul>{events}</ul>
<h2>Every frame the policy consumed{cams}</h2>
{frames}
<h2>Run</h2><pre>{html.escape(json.dumps(meta, indent=1, default=str))}</pre>
<h2>Summary</h2><pre>{html.escape(json.dumps(summary, indent=1, default=str))}</pre>
</body></html>
"""


def write_rerun(path: Path, rec: Any) -> None:
    """The recording as a Rerun .rrd: frames, setpoints, telemetry, plans, latency, delay, events,
    on one timeline "robot_time" (the robot's monotonic seconds)."""
    import rerun as rr

    stream = rr.RecordingStream("legato")
    stream.save(str(path))
    tl = "robot_time"

    def at(t: float) -> None:
        stream.set_time(tl, duration=float(t))

    for c in rec.chunks:
        at(c.capture_time)
        for name, data in c.images.items():  # camera for one, camera/<name> for several
            where = f"camera/{name}" if len(c.images) > 1 else "camera"
            stream.log(where, rr.EncodedImage(contents=data, media_type=f"image/{c.image_format}"))
        at(c.ready_time)
        stream.log("chunk/latency_ms", rr.Scalars(c.latency_ms))
        stream.log("chunk/d", rr.Scalars(float(c.d)))
        period = _period(rec)
        t = plan_times(c, 0.0, period)
        for j in range(c.plan.shape[1]):
            strip = np.stack([t, c.plan[:, j]], axis=1)  # x: robot time (s), y: the planned joint (rad)
            stream.log(f"plan/joint{j}", rr.LineStrips2D([strip]))
    a = rec.ticks.shape[1] - len(TICK_COLS)
    for r in rec.ticks:
        at(r[_T["start"]])
        for j in range(a):
            stream.log(f"setpoint/joint{j}", rr.Scalars(float(r[len(TICK_COLS) + j])))
        if r[_T["mode"]] == UNDERRUN:
            stream.log("events", rr.TextLog("underrun", level="WARN"))
    tel = rec.telemetry
    for i, t in enumerate(tel["received_at"]):
        at(t)
        for j in range(tel["positions"].shape[1]):
            stream.log(f"executed/joint{j}", rr.Scalars(float(tel["positions"][i, j])))
    for e in rec.events:
        ts = e.get("timestamp", {})
        at(ts.get("sec", 0) + ts.get("nsec", 0) * 1e-9)
        stream.log(
            "events", rr.TextLog(e.get("message", ""), level="WARN" if e.get("level", 2) >= 3 else "INFO")
        )
    stream.flush()

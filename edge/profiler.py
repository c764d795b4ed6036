"""`legato profile`: where each millisecond goes, as numbers, a trace and a picture.

From the loop's record rings (edge/loop.py) it derives, per stage, p50 / p90 / p99 / max:
- control: period error (tick start - its deadline), tick duration, setpoint write time;
- chunk: camera-to-chunk latency (capture -> ready), preprocess, prefix, each flow step,
  blend (final blend + un-normalise), the whole chunk (compute), the swap index;
- counts: underruns, missed ticks, faults; telemetry round trip from the bus.

Outputs (written into one folder through edge.outputs.atomic_folder, kind "profile"):
- a table on the terminal; ``summary.json`` with flat dotted keys
  (``control.period_error_ms.p99``, ``chunk.flow_step0_ms.p50``, ``underruns``, ...);
- ``trace.json``: Chrome trace-event format (Perfetto opens it): the clock thread's ticks and
  the worker's chunks with their stages, on two named threads;
- ``profile.png``: latency histograms and a timeline (matplotlib when installed; otherwise a
  small numpy rasteriser, so the robot's core install still writes it).
``--synthetic`` times the engines alone (the denoiser on random observations, back to back),
like trtexec for the whole chunk.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.loop import CHUNK_BASE_COLS, HOLD_START, TICK_COLS, UNDERRUN

PCTS = (50, 90, 99)


def stats_ms(x_s: np.ndarray) -> dict[str, float | None]:
    """p50 / p90 / p99 / max / mean of seconds, in ms (None where there is no sample)."""
    x = np.asarray(x_s, float) * 1e3
    if len(x) == 0:
        return {"p50": None, "p90": None, "p99": None, "max": None, "mean": None, "n": 0}
    p = np.percentile(x, PCTS)
    return {"p50": float(p[0]), "p90": float(p[1]), "p99": float(p[2]), "max": float(x.max()),
            "mean": float(x.mean()), "n": int(len(x))}  # fmt: skip


def _flat(prefix: str, d: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}.{k}": v for k, v in d.items()}


def steady_chunks(chunks: np.ndarray) -> np.ndarray:
    """The chunk rows every statistic and plot uses: all but the first, which carries the engines'
    warm-up (its latency is reported on its own as ``chunk.warmup_latency_ms``); all of them when
    there is only one."""
    return chunks[1:] if len(chunks) > 1 else chunks


def latency_summary(ticks: np.ndarray, chunks: np.ndarray, stage_names: tuple[str, ...],
                    period: float) -> dict[str, Any]:  # fmt: skip
    """Dotted-key statistics of a session's tick and chunk records."""
    T = {c: i for i, c in enumerate(TICK_COLS)}  # noqa: N806
    C = {c: i for i, c in enumerate(CHUNK_BASE_COLS)}  # noqa: N806
    out: dict[str, Any] = {}
    if len(ticks):
        out.update(_flat("control.period_error_ms", stats_ms(ticks[:, T["start"]] - ticks[:, T["deadline"]])))
        out.update(_flat("control.tick_ms", stats_ms(ticks[:, T["end"]] - ticks[:, T["start"]])))
        out.update(_flat("control.setpoint_write_ms", stats_ms(ticks[:, T["write_s"]])))
        modes = ticks[:, T["mode"]].astype(int)
        out["control.underrun_ticks"] = int((modes == UNDERRUN).sum())
        out["control.start_hold_ticks"] = int((modes == HOLD_START).sum())
        out["control.fault_ticks"] = int(ticks[:, T["fault"]].sum())
        out["control.period_ms"] = period * 1e3
    if len(chunks):
        base = len(CHUNK_BASE_COLS)
        rest = steady_chunks(chunks)
        if len(chunks) > 1:
            out["chunk.warmup_latency_ms"] = float(chunks[0, C["latency_s"]] * 1e3)
        out.update(_flat("chunk.latency_ms", stats_ms(rest[:, C["latency_s"]])))
        out.update(_flat("chunk.preprocess_ms", stats_ms(rest[:, C["preprocess_s"]])))
        if "engines" in stage_names:  # the loop overhead: a chunk's wall time / its engine calls
            j = base + stage_names.index("engines")
            ratio = rest[:, base + len(stage_names) - 1] / np.maximum(rest[:, j], 1e-9)
            p = np.percentile(ratio, PCTS)
            out.update({"chunk.overhead_ratio.p50": float(p[0]), "chunk.overhead_ratio.p90": float(p[1]),
                        "chunk.overhead_ratio.p99": float(p[2]),
                        "chunk.overhead_ratio.max": float(ratio.max()),
                        "chunk.overhead_ratio.n": int(len(ratio)),
                        "chunk.overhead_ratio.total": float(rest[:, base + len(stage_names) - 1].sum()
                                                            / max(rest[:, j].sum(), 1e-9))})  # fmt: skip
        for j, name in enumerate(stage_names):
            key = "compute" if name == "chunk" else ("flow_" + name if name.startswith("step") else name)
            out.update(_flat(f"chunk.{key}_ms", stats_ms(rest[:, base + j])))
        r2c = rest[:, C["capture"]] - rest[:, C["request"]]
        out.update(_flat("chunk.request_to_capture_ms", stats_ms(r2c)))
        si = rest[:, C["start_index"]]
        out["chunk.swap_index.mean"] = float(si.mean())
        out["chunk.swap_index.max"] = int(si.max())
    return out


def print_table(summary: dict[str, Any], file: Any = None) -> None:
    """The p50/p90/p99/max table: one row per stage with samples (a stage with none is left out;
    "-" where a statistic is not known, as the bus's round trip has no p90), then the ratios and
    the counts."""
    import sys

    f = file or sys.stdout
    rows = sorted({k.rsplit(".", 1)[0] for k in summary if k.endswith(".p50")},
                  key=lambda r: (not r.startswith("control"), r))  # fmt: skip
    ms_rows = [r for r in rows if r.endswith("_ms")]
    print(f"{'stage (ms)':<34}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}{'n':>8}", file=f)
    for r in ms_rows:
        vals = [summary.get(f"{r}.{p}") for p in ("p50", "p90", "p99", "max")]
        n = summary.get(f"{r}.n")
        if n == 0 or all(v is None for v in vals):
            continue
        cells = "".join(f"{v:9.3f}" if v is not None else f"{'-':>9}" for v in vals)
        print(f"{r.removesuffix('_ms'):<34}{cells}{n if n is not None else '-':>8}", file=f)
    if "chunk.warmup_latency_ms" in summary:
        warm = summary["chunk.warmup_latency_ms"]
        print(f"(first chunk, engine warm-up: latency {warm:.1f} ms, not in the rows above)", file=f)
    for r in (r for r in rows if not r.endswith("_ms")):
        vals = [summary.get(f"{r}.{p}") for p in ("p50", "p90", "p99", "max")]
        if summary.get(f"{r}.n") == 0 or all(v is None for v in vals):
            continue
        cells = "".join(f"{v:9.3f}" if v is not None else f"{'-':>9}" for v in vals)
        label = "chunk / engine calls (x)" if r == "chunk.overhead_ratio" else r
        print(f"{label:<34}{cells}{summary.get(f'{r}.n', '-'):>8}", file=f)
    for k in ("underruns", "missed_ticks", "faults", "delay_estimate"):
        if k in summary:
            print(f"{k:<34}{summary[k]:>9}", file=f)


def chrome_trace(ticks: np.ndarray, chunks: np.ndarray, stage_names: tuple[str, ...],
                 t0: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Trace-event JSON: pid 1, tid 1 the clock (one X event per tick), tid 2 the worker (one per
    chunk with its stages nested inside), counters for the delay estimate and period error."""
    T = {c: i for i, c in enumerate(TICK_COLS)}  # noqa: N806
    C = {c: i for i, c in enumerate(CHUNK_BASE_COLS)}  # noqa: N806
    starts = [ticks[:, T["start"]].min()] if len(ticks) else []
    if len(chunks):
        starts.append(chunks[:, C["capture"]].min())
    base_t = t0 if t0 is not None else (min(starts) if starts else 0.0)

    def us(t: float) -> float:
        return round((t - base_t) * 1e6, 3)

    ev: list[dict[str, Any]] = [
        {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "legato run"}},
        {"ph": "M", "pid": 1, "tid": 1, "name": "thread_name", "args": {"name": "control clock"}},
        {"ph": "M", "pid": 1, "tid": 2, "name": "thread_name", "args": {"name": "inference worker"}},
    ]
    mode_names = {0: "tick", 1: "hold (start-up)", 2: "UNDERRUN hold", 3: "hold (stop)"}
    for r in ticks:
        ev.append({"ph": "X", "pid": 1, "tid": 1, "name": mode_names.get(int(r[T["mode"]]), "tick"),
                   "ts": us(r[T["start"]]), "dur": max(0.001, round((r[T["end"]] - r[T["start"]]) * 1e6, 3)),
                   "args": {"tick": int(r[T["tick"]]), "chunk": int(r[T["chunk"]]),
                            "index": int(r[T["index"]]),
                            "late_ms": round((r[T["start"]] - r[T["deadline"]]) * 1e3, 4),
                            "fault": int(r[T["fault"]])}})  # fmt: skip
        ev.append({"ph": "C", "pid": 1, "tid": 1, "name": "period error", "ts": us(r[T["start"]]),
                   "args": {"ms": round((r[T["start"]] - r[T["deadline"]]) * 1e3, 4)}})  # fmt: skip
    base = len(CHUNK_BASE_COLS)
    for r in chunks:
        compute = r[base + len(stage_names) - 1]
        ready = r[C["ready"]]
        cap = r[C["capture"]]
        ev.append({"ph": "X", "pid": 1, "tid": 2, "name": f"chunk {int(r[C['chunk']])}", "ts": us(cap),
                   "dur": round((ready - cap) * 1e6, 3),
                   "args": {"d": int(r[C["d"]]), "s": int(r[C["s"]]), "r": int(r[C["r"]]),
                            "latency_ms": round(r[C["latency_s"]] * 1e3, 3),
                            "swap_index": int(r[C["start_index"]])}})  # fmt: skip
        t = cap + max(0.0, r[C["preprocess_s"]])
        ev.append({"ph": "X", "pid": 1, "tid": 2, "name": "preprocess", "ts": us(cap),
                   "dur": round(max(0.0, r[C["preprocess_s"]]) * 1e6, 3)})  # fmt: skip
        for j, name in enumerate(stage_names[:-1]):
            if name == "engines":
                continue
            dur = r[base + j]
            ev.append({"ph": "X", "pid": 1, "tid": 2, "name": name, "ts": us(t), "dur": round(dur * 1e6, 3)})
            t += dur
        del compute
        ev.append({"ph": "C", "pid": 1, "tid": 2, "name": "delay estimate", "ts": us(ready),
                   "args": {"d": int(r[C["d_est"]])}})  # fmt: skip
    return {"traceEvents": ev, "displayTimeUnit": "ms"}


# ---- profile.png -------------------------------------------------------------------------------
def hides_tail(counts: np.ndarray, visible: float = 0.01) -> bool:
    """True when a histogram needs a log count axis: some non-empty bin is under ``visible`` of
    the tallest bar (a bar under 1 % of the panel height is a sample nobody sees)."""
    c = np.asarray(counts)
    nz = c[c > 0]
    return bool(len(nz) and nz.min() < visible * c.max())


def stat_title(what: str, x_ms: np.ndarray) -> str:
    """'what: p50 0.052 · p99 0.210 · max 1.30 ms (n 1000)': the numbers a person looks for."""
    if len(x_ms) == 0:
        return f"{what}: no samples"
    p50, p99 = np.percentile(x_ms, (50, 99))
    return f"{what}: p50 {p50:.3g} · p99 {p99:.3g} · max {x_ms.max():.3g} ms (n {len(x_ms)})"


def picture_series(ticks: np.ndarray, chunks: np.ndarray, stage_names: tuple[str, ...]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """What profile.png plots, in ms: period error per tick, and latency and compute per chunk of
    the table's set (``steady_chunks``), with those chunk rows."""
    T = {c: i for i, c in enumerate(TICK_COLS)}  # noqa: N806
    C = {c: i for i, c in enumerate(CHUNK_BASE_COLS)}  # noqa: N806
    steady = steady_chunks(chunks)
    err = (ticks[:, T["start"]] - ticks[:, T["deadline"]]) * 1e3 if len(ticks) else np.zeros(0)
    lat = steady[:, C["latency_s"]] * 1e3 if len(steady) else np.zeros(0)
    comp = steady[:, len(CHUNK_BASE_COLS) + len(stage_names) - 1] * 1e3 if len(steady) else np.zeros(0)
    return err, lat, comp, steady


def write_png(path: Path, ticks: np.ndarray, chunks: np.ndarray, stage_names: tuple[str, ...]
              ) -> list[tuple[str, bool, str]]:  # fmt: skip
    """Histograms of period error, chunk latency and chunk compute (p50 / p99 in the titles, a log
    count axis where one bar would hide the tail), and timelines of the period error, the
    underruns and the chunks. Chunks: the table's set (``steady_chunks``: the warm-up chunk is
    left out, and said so). A panel with nothing to show says what it would have shown.
    Returns each panel's (title, log count axis, text shown in it), row by row (fallback: [])."""
    T = {c: i for i, c in enumerate(TICK_COLS)}  # noqa: N806
    C = {c: i for i, c in enumerate(CHUNK_BASE_COLS)}  # noqa: N806
    err, lat, comp, steady = picture_series(ticks, chunks, stage_names)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _png_fallback(path, [err, lat, comp])
        return []
    fig, ax = plt.subplots(2, 3, figsize=(15, 7.5))
    names = ("control period error", "camera-to-chunk latency", "chunk compute")
    for a, x, name in zip(ax[0], (err, lat, comp), names, strict=True):
        a.set_title(stat_title(name, x), fontsize=9)
        if not len(x):
            _say(a, "no control ticks (--synthetic times the engines alone)" if x is err else "no chunks")
            continue
        counts, _, _ = a.hist(x, bins=50, color="tab:blue")
        for p, style in zip(np.percentile(x, (50, 99)), ("--", "-"), strict=True):
            a.axvline(p, color="k", ls=style, lw=0.8)
        if hides_tail(counts):
            a.set_yscale("log")
            a.set_ylabel("count (log)", fontsize=8)
        else:
            a.set_ylabel("count", fontsize=8)
        a.set_xlabel("ms (dashed p50, solid p99)", fontsize=8)
    starts = [ticks[0, T["start"]]] if len(ticks) else []
    if len(chunks):
        starts.append(chunks[0, C["capture"]])
    t0 = min(starts) if starts else 0.0
    a = ax[1, 0]
    if len(ticks):
        a.plot(ticks[:, T["start"]] - t0, err, lw=0.5)
        a.set_title(f"period error over time: max {err.max():.3g} ms", fontsize=9)
        a.set_xlabel("s", fontsize=8)
        a.set_ylabel("ms", fontsize=8)
    else:
        a.set_title("period error over time", fontsize=9)
        _say(a, "no control ticks")
    a = ax[1, 1]
    under = ticks[:, T["mode"]] == UNDERRUN if len(ticks) else np.zeros(0, bool)
    if under.any():
        t = ticks[:, T["start"]] - t0
        a.plot(t, under, lw=0.7, color="tab:red", drawstyle="steps-post")
        a.set_yticks([0, 1], ["ran", "underrun"])
        a.set_title(f"underruns: {int(under.sum())} of {len(under)} ticks", fontsize=9)
        a.set_xlabel("s", fontsize=8)
    else:
        a.set_title("underruns", fontsize=9)
        _say(a, f"no underruns in {len(under)} ticks" if len(under) else "no control ticks")
    a = ax[1, 2]
    if len(steady):
        t = steady[:, C["ready"]] - t0
        a.plot(t, lat, ".", ms=3, label="latency")
        a.plot(t, comp, ".", ms=3, label="compute")
        a.legend(fontsize=8)
        a.set_xlabel("s", fontsize=8)
        a.set_ylabel("ms", fontsize=8)
        warm = (f"; warm-up chunk ({chunks[0, C['latency_s']] * 1e3:.1f} ms) left out"
                if len(chunks) > 1 else "")  # fmt: skip
        a.set_title(f"chunks over time: {len(steady)}{warm}", fontsize=9)
    else:
        a.set_title("chunks over time", fontsize=9)
        _say(a, "no chunks")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    panels = [(a.get_title(), a.get_yscale() == "log", " ".join(t.get_text() for t in a.texts))
              for a in ax.ravel()]  # fmt: skip
    plt.close(fig)
    return panels


def _say(ax: Any, text: str) -> None:
    """An empty panel that says why it is empty."""
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, color="0.3", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _png_fallback(path: Path, series: list[np.ndarray], w: int = 240, h: int = 120) -> None:
    """Histogram panels side by side, drawn into an RGB array and written as PNG (zlib only); a
    panel whose tail would vanish gets log counts, as in the matplotlib picture."""
    from edge.images import encode_png

    img = np.full((h, w * len(series), 3), 255, np.uint8)
    for k, x in enumerate(series):
        if len(x) == 0:
            continue
        counts, _ = np.histogram(x, bins=w // 4)
        heights = np.log1p(counts) if hides_tail(counts) else counts.astype(float)
        top = max(float(heights.max()), 1e-9)
        for b, c in enumerate(heights):
            bar = int(round((h - 10) * c / top))
            img[h - bar : h, k * w + 4 * b : k * w + 4 * b + 3] = (40, 90, 200)
        img[:, k * w] = 0
    path.write_bytes(encode_png(img))


def write_report(out: Path, summary: dict[str, Any], ticks: np.ndarray, chunks: np.ndarray,
                 stage_names: tuple[str, ...], extra: dict[str, Any] | None = None) -> None:  # fmt: skip
    """summary.json, trace.json and profile.png into folder `out` (already created)."""
    doc = dict(summary)
    if extra:
        doc.update(extra)
    (out / "summary.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    (out / "trace.json").write_text(json.dumps(chrome_trace(ticks, chunks, stage_names)))
    write_png(out / "profile.png", ticks, chunks, stage_names)


def _token_vocab(man: Any, den: Any) -> int | None:
    """How many token ids the policy takes (None: it takes none as ids)."""
    if getattr(man, "remote", False):
        from edge.remote.protocol import TOKENS, TensorSpec

        t = den.schema.get(TOKENS)
        return (t.range[1] + 1 if t.range else 10) if isinstance(t, TensorSpec) else None
    lang = man.adapter.observation.language
    return None if lang is None else int(lang.vocab_size)


def synthetic(den: Any, man: Any, seconds: float, latency_pad_s: float = 0.0, seed: int = 0,
              observations: dict[str, np.ndarray] | None = None
              ) -> tuple[np.ndarray, tuple[str, ...]]:  # fmt: skip
    """Time the denoiser alone, back to back, on random (or given) observations: chunk rows in
    the loop's chunk-record layout (so the same summary, trace and picture apply). ``man``: the
    bundle's Manifest, or a policy server's model (`--remote`: the server's cameras and ids)."""
    from edge.launch import policy_cameras
    from edge.policy import ChunkRequest, default_ramp

    spec = den.spec
    rng = np.random.default_rng(seed)
    h, a = spec.horizon, spec.action_dim
    cams = policy_cameras(man)  # each camera at its own size (the adapter's)
    vocab = _token_vocab(man, den)  # None: no ids (no language, or a server that takes the prompt)
    rows = []
    s = h // 2
    d = min(1, spec.d_max)
    req = ChunkRequest(d=d, s=s, r=default_ramp(spec, d, s))
    tail = np.zeros((h - s, a), np.float32)
    eps = np.zeros(den.noise_shape, np.float32)
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end or i < 3:
        if observations is not None:
            j = i % len(observations["image"])
            img, tok, st = observations["image"][j], observations["tokens"][j], observations["state"][j]
        else:
            imgs = {c.name: rng.integers(0, 255, (c.height, c.width, 3), dtype=np.uint8) for c in cams}
            img = imgs if len(imgs) != 1 else next(iter(imgs.values()))
            tok = None if vocab is None else rng.integers(0, min(10, vocab), spec.max_tokens)
            st = rng.normal(size=spec.state_dim).astype(np.float32)
        t_cap = time.monotonic()
        den.set_observation(img, tok, st)
        t_pre = time.monotonic() - t_cap
        rng.standard_normal(out=eps, dtype=np.float32)
        first = i == 0
        den.denoise(eps, None if first else tail + st[:a], req)
        if latency_pad_s > 0:
            wait = t_cap + latency_pad_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        ready = time.monotonic()
        d_used = 0 if first else req.d
        base = [i, t_cap, t_cap, t_pre, ready, ready - t_cap, d_used, req.s, req.r, req.d, 0.0, 0]
        rows.append(np.concatenate([np.asarray(base, float), den.stage_ns * 1e-9]))
        i += 1
    return np.asarray(rows), den.stage_names

"""`legato replay FILE --bundle B`: the recorded chunks recomputed through another bundle or backend
(fp16 TensorRT on the device against fp32 onnxruntime on a workstation, int8 against fp32, a new
export against an old one), and where they part. Robot side, no torch.

Each recorded chunk is recomputed from exactly what the robot's sampler was given: every
camera's frame (by name, for a policy with several), tokens and state (``set_observation``), the
noise, the reference it continued and the request (d, s, r) (``denoise``), through
:class:`edge.denoiser.ChunkDenoiser`, the sampler the robot runs. The same bundle on the same
backend reproduces every chunk bit for bit (PNG frames).

Divergence per chunk, recorded (A) against replayed (B):
- ``max_abs_rad``: max |A - B| over the plan, in the robot's units (rad);
- ``max_abs`` and ``cosine``: in normalised action units (the chunk relative to the state,
  standardised by the bundle's statistics), the units and definitions of `legato export`'s
  parity gate (export/parity.py: max abs error, per-chunk cosine), so the two compare directly;
- the first divergence: the first chunk, action index and joint where |A - B| > tolerance.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UsageError
from edge.policy import ChunkRequest

_SPEC_KEYS = ("horizon", "action_dim", "state_dim", "image_hw", "max_tokens")


def load_for_replay(
    rec: Any, bundle: str, profile: str | None, mode: str | None, graph: str | None
) -> tuple[Any, Any, Any]:
    """The denoiser to replay through: the bundle, on the profile (default: the recording's),
    in the recording's sampler mode and graph (fused or stepwise) unless told otherwise."""
    from edge.assembly import load
    from edge.profiles import list_profiles
    from edge.recorder import camera_records

    d = rec.meta.get("denoiser", {})
    prof = profile or rec.meta.get("profile", {}).get("name")
    if prof is None or (profile is None and prof not in list_profiles()):
        raise UsageError(
            f"the recording's profile {prof!r} is not on this machine; pass --profile "
            f"(one of {', '.join(list_profiles())})"
        )
    fused = d.get("fused") if graph is None else graph == "fused"  # None (a remote run): the profile's
    man, prof_obj, den = load(bundle, prof, mode or d.get("mode"), fused)
    mine, theirs = camera_records(man), rec.meta.get("cameras")
    if None not in (mine, theirs) and mine != theirs:  # older and remote recordings: the spec's check
        raise UsageError(
            f"bundle {bundle} has cameras {_said(mine)}, the recording {rec.path} has {_said(theirs)}: "
            "it cannot replay these chunks"
        )
    rs = rec.meta.get("spec", {})
    for k in _SPEC_KEYS:
        mine = list(getattr(man.spec, k)) if k == "image_hw" else getattr(man.spec, k)
        if k in rs and rs[k] != mine:
            raise UsageError(
                f"bundle {bundle} has {k} = {mine}, the recording {rec.path} was made with "
                f"{rs[k]}: it cannot replay these chunks"
            )
    return den, man, prof_obj


def _said(cams: list[dict[str, Any]] | None) -> str:
    return ", ".join(f"{c['name']} {c['height']}x{c['width']}" for c in cams or ()) or "none"


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-30))


def replay(
    rec: Any, den: Any, tolerance: float = 0.0, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Recompute every whole chunk of `rec` through `den`; the report (see the module doc)."""
    norm = den.norm
    rows, plans = [], []
    first: dict[str, Any] | None = None
    n = len(rec.chunks)
    for i, c in enumerate(rec.chunks):
        den.set_observation(c.frame(), c.tokens if len(c.tokens) else None, c.state)
        out = den.denoise(c.noise[None], c.reference, ChunkRequest(d=c.d, s=c.s, r=c.r)).copy()
        plans.append(out)
        diff = np.abs(out.astype(np.float64) - c.plan)
        na = norm.action(c.plan[None], c.state[None]).ravel().astype(np.float64)
        nb = norm.action(out[None], c.state[None]).ravel().astype(np.float64)
        row = {
            "seq": c.seq,
            "chunk": c.chunk,
            "d": c.d,
            "s": c.s,
            "r": c.r,
            "continued": c.reference is not None,
            "max_abs_rad": float(diff.max()),
            "max_abs": float(np.abs(na - nb).max()),
            "cosine": _cos(na, nb),
            "rms": float(np.sqrt(np.mean((na - nb) ** 2))),
        }
        rows.append(row)
        if first is None and diff.max() > tolerance:
            idx, joint = np.unravel_index(int(np.argmax(diff > tolerance)), diff.shape)
            first = {
                "seq": c.seq,
                "chunk": c.chunk,
                "index": int(idx),
                "joint": int(joint),
                "recorded": float(c.plan[idx, joint]),
                "replayed": float(out[idx, joint]),
                "abs_rad": float(diff[idx, joint]),
            }
        if progress is not None:
            progress(i + 1, n)
    if not rows:
        raise UsageError(f"{rec.path} holds no whole chunk to replay")
    mr = np.array([r["max_abs_rad"] for r in rows])
    ma = np.array([r["max_abs"] for r in rows])
    cs = np.array([r["cosine"] for r in rows])
    worst = int(np.argmax(mr))
    return {
        "recording": str(rec.path),
        "chunks": len(rows),
        "complete_recording": rec.complete,
        "tolerance_rad": tolerance,
        "identical": bool(mr.max() == 0.0),
        "chunks_over_tolerance": int((mr > tolerance).sum()),
        "max_abs_rad": float(mr.max()),
        "max_abs_rad_p50": float(np.median(mr)),
        "max_abs": float(ma.max()),
        "cosine_min": float(cs.min()),
        "cosine_p50": float(np.median(cs)),
        "rms_mean": float(np.mean([r["rms"] for r in rows])),
        "worst_seq": rows[worst]["seq"],
        "first_divergence": first,
        "recorded_bundle": rec.meta.get("bundle", {}),
        "per_chunk": rows,
        "_plans": plans,
    }


def print_report(rep: dict[str, Any], file: Any = None) -> None:
    import sys

    f = file or sys.stdout
    print(f"replayed {rep['chunks']} chunks of {rep['recording']} through {rep.get('bundle', '?')}", file=f)
    if rep["identical"]:
        print("identical: every replayed chunk equals the recorded one, bit for bit", file=f)
    print(
        f"max abs divergence {rep['max_abs_rad']:.3g} rad (median chunk {rep['max_abs_rad_p50']:.3g}); "
        f"normalised: max abs {rep['max_abs']:.3g}, min cosine {rep['cosine_min']:.4f} "
        f"(median {rep['cosine_p50']:.4f})",
        file=f,
    )
    fd = rep["first_divergence"]
    if fd is not None:
        print(
            f"first divergence over {rep['tolerance_rad']:g} rad: chunk #{fd['seq']} "
            f"(loop chunk {fd['chunk']}), "
            f"action {fd['index']}, joint {fd['joint']} ({fd['recorded']:.5f} recorded, {fd['replayed']:.5f} "
            f"replayed); {rep['chunks_over_tolerance']} chunks over; worst chunk #{rep['worst_seq']}",
            file=f,
        )


def write_report(out: Path, rep: dict[str, Any], rec: Any) -> None:
    """replay.json (everything but the plans) and replay.png (recorded against replayed)."""
    doc = {k: v for k, v in rep.items() if not k.startswith("_")}
    (out / "replay.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    plot(out / "replay.png", rep, rec)


def plot(path: Path, rep: dict[str, Any], rec: Any) -> None:
    """Per joint: the recorded plans (solid) and the replayed ones (dashed) at their execution
    time, and below, each chunk's max divergence (rad) and cosine; the first divergence marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("replay.png needs matplotlib: pip install 'legato-edge[view]'") from None
    chunks, plans = rec.chunks, rep["_plans"]
    a = chunks[0].plan.shape[1]
    period = 1.0 / float(rec.meta.get("loop", {}).get("rate_hz", 50.0))
    t0 = chunks[0].ready_time
    fig, ax = plt.subplots(a + 1, 1, figsize=(13, 2.2 * (a + 1)), sharex=True)
    for j in range(a):
        for c, p in zip(chunks, plans, strict=True):
            t = c.ready_time - t0 + np.arange(len(c.plan)) * period
            ax[j].plot(t, c.plan[:, j], color="tab:blue", lw=0.9)
            ax[j].plot(t, p[:, j], color="tab:orange", lw=0.9, ls="--")
        ax[j].set_ylabel(f"joint {j} (rad)", fontsize=8)
    ax[0].plot([], [], color="tab:blue", label="recorded")
    ax[0].plot(
        [], [], color="tab:orange", ls="--", label=f"replayed ({Path(str(rep.get('bundle', ''))).name})"
    )
    ax[0].legend(fontsize=8, loc="upper right")
    fd = rep["first_divergence"]
    tc = np.array([c.ready_time - t0 for c in chunks])
    mr = np.array([r["max_abs_rad"] for r in rep["per_chunk"]])
    ax[a].semilogy(tc, np.maximum(mr, 1e-12), ".-", ms=3, lw=0.6, color="tab:red")
    ax[a].set_ylabel("max |diff| (rad)", fontsize=8)
    ax[a].set_xlabel("s since the first chunk", fontsize=8)
    title = (
        f"recorded vs replayed: identical ({rep['chunks']} chunks)"
        if rep["identical"]
        else f"recorded vs replayed: max abs {rep['max_abs_rad']:.3g} rad, "
        f"min cosine {rep['cosine_min']:.4f} "
        f"(normalised), {rep['chunks']} chunks"
    )
    if fd is not None:
        k = next(i for i, c in enumerate(chunks) if c.seq == fd["seq"])
        tf = chunks[k].ready_time - t0 + fd["index"] * period
        for x in ax:
            x.axvline(tf, color="k", lw=0.7, ls=":")
        title += f"; first divergence: chunk #{fd['seq']}, action {fd['index']}, joint {fd['joint']}"
    ax[0].set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)

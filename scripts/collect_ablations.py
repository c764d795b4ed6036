"""Collect reports/ablations/*/results.json into one markdown table (mean over the delays
evaluated, and the d >= 2 columns the paper's claims are about)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

KEYS = [("success_rate", "{:.3f}"), ("completion_s", "{:.3f}"), ("boundary_jump", "{:.4f}"),
        ("overlap_rmse", "{:.4f}"), ("nsparc_cmd", "{:.3f}"), ("mode_switches", "{:.3f}"),
        ("stall_fraction", "{:.3f}")]  # fmt: skip


def main(root: str) -> None:
    rows = []
    for path in sorted(Path(root).glob("*/results.json")):
        cells = json.loads(path.read_text())["cells"]
        late = [c for c in cells if c["d"] >= 2]
        rows.append((path.parent.name, cells, late))
    print(
        "| variant | success d=0 | "
        + " | ".join(f"{k} (all d)" if i == 0 else k for i, (k, _) in enumerate(KEYS))
        + " |"
    )
    print("|---|---|" + "---|" * len(KEYS))
    for name, cells, late in rows:
        zero = [c["success_rate"] for c in cells if c["d"] == 0]
        vals = [f"{zero[0]:.3f}" if zero else "-"]
        vals += [fmt.format(float(np.nanmean([c[k] for c in cells]))) for k, fmt in KEYS[:1]]
        vals += [fmt.format(float(np.nanmean([c[k] for c in late]))) for k, fmt in KEYS[1:]]
        print(f"| {name} | " + " | ".join(vals) + " |")
    print("\nSuccess (all d) is averaged over the delays evaluated; the other columns over d >= 2 (s = 8).")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "reports/ablations")

"""Does a bundle fit a device's memory beside the OS and the camera pipeline? No torch.

`legato flash` (before any target is touched) and `legato doctor` (on the device) refuse, in one
line, a bundle whose graphs need more memory than the profile's device can give them.

What a bundle needs (docs/bundle.md, "memory"): per graph that runs, the weight bytes and the peak
activation estimate the export recorded in ``graphs.<g>.memory`` (``weight_bytes``,
``peak_activation_bytes``, for the graph's own precision). Each graph's engine keeps its own
activation memory (one execution context each), so the need is the sum over the graphs that run:
prefix + flow_head (stepwise), or fused. A manifest without these fields (bundles exported before
they existed) is estimated from its graph files' sizes (the weights live in the ONNX) plus its
graph I/O tensors; the line says it is an estimate.

What a device gives (Jetson memory is unified: CPU and GPU share it): ``memory_gb`` of the
profile (or MemTotal when doctor reads a smaller one) less a reserve for everything else that
runs there: 3 GB + 5 % of the memory, unless the profile sets ``[device] memory_reserve_gb``.
- 3 GB fixed: the developer kit's Ubuntu with its desktop session at idle, plus the CUDA /
  TensorRT context and its kernel images. The tegrastats lines of quiet boards in
  shared/docs/jetson-tensorrt.md show 3.45 GB in use on an Orin Nano (CPU at 1-2 %) and 4.3 GB on
  an AGX Orin 64 GB (CPU at 0 %); a headless robot uses less, so this errs on the safe side.
- 5 % proportional: the camera pipeline (V4L2 / Argus / GStreamer buffers come from the CMA pool,
  768 MB of an Orin Nano 8 GB's MemTotal), page cache for the bundle and the logs, fragmentation.
That leaves an Orin Nano 8 GB 4.6 GB, an Orin NX 16 GB 12.2 GB, an AGX Orin 64 GB 57.8 GB and a
Thor 128 GB 118.6 GB for the bundle.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import BundleError

RESERVE_FIXED_BYTES = 3_000_000_000
RESERVE_SHARE = 0.05
_ITEMSIZE = {"float32": 4, "float16": 2, "int64": 8, "int32": 4, "uint8": 1, "int8": 1, "bool": 1}


@dataclass(frozen=True)
class GraphMemory:
    graph: str
    weight_bytes: int
    activation_bytes: int
    recorded: bool  # False: estimated from the file size and the I/O tensors

    @property
    def total(self) -> int:
        return self.weight_bytes + self.activation_bytes


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n < 10e9 else f"{n / 1e9:.1f} GB"


def _io_bytes(entry: Mapping[str, Any]) -> int:
    total = 0
    for t in list(entry.get("inputs") or []) + list(entry.get("outputs") or []):
        n = _ITEMSIZE.get(str(t.get("dtype")), 4)
        for d in t.get("shape") or []:
            n *= max(int(d), 1)
        total += n
    return total


def graph_memory(name: str, entry: Any, bundle: Path | None, where: str) -> GraphMemory:
    """One graph's need from its manifest entry (or an estimate from its file and I/O)."""
    if not isinstance(entry, Mapping):
        raise BundleError(f"{where}: graphs.{name} must be an object")
    mem = entry.get("memory")
    if mem is not None:
        if not isinstance(mem, Mapping):
            raise BundleError(f"{where}: graphs.{name}.memory must be an object")
        vals = []
        for key in ("weight_bytes", "peak_activation_bytes"):
            v = mem.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise BundleError(
                    f"{where}: graphs.{name}.memory.{key} must be a whole number of bytes >= 0, got {v!r}"
                )
            vals.append(v)
        return GraphMemory(name, vals[0], vals[1], True)
    size = 0
    if bundle is not None and entry.get("file"):
        base = bundle / str(entry["file"])
        for p in (base, *sorted(base.parent.glob(base.name + ".data*"))):  # external data too
            with contextlib.suppress(OSError):
                size += os.stat(p).st_size
    return GraphMemory(name, size, _io_bytes(entry), False)


def running_graphs(graphs: Mapping[str, Any], control_graph: str | None) -> tuple[str, ...]:
    """The graphs the runtime loads: fused alone when the profile runs it, else prefix + flow_head."""
    if control_graph == "fused" and "fused" in graphs:
        return ("fused",)
    return tuple(g for g in ("prefix", "flow_head") if g in graphs)


def bundle_need(
    data: Mapping[str, Any],
    bundle: Path | None = None,
    control_graph: str | None = None,
    where: str = "bundle",
) -> list[GraphMemory]:
    """Per running graph, what it needs (manifest.json already parsed into `data`)."""
    graphs = data.get("graphs")
    if not isinstance(graphs, Mapping):
        raise BundleError(f"{where}: manifest 'graphs' must be an object")
    return [graph_memory(g, graphs[g], bundle, where) for g in running_graphs(graphs, control_graph)]


def reserve_bytes(total: int, override_gb: float | None = None) -> int:
    if override_gb is not None:
        return int(override_gb * 1e9)
    return int(RESERVE_FIXED_BYTES + RESERVE_SHARE * total)


def fit_problem(need: Sequence[GraphMemory], total: int, reserve: int, device: str) -> str | None:
    """One line when the bundle does not fit (None when it does)."""
    want = sum(g.total for g in need)
    free = total - reserve
    if want <= free:
        return None
    parts = ", ".join(
        f"{g.graph} {_gb(g.weight_bytes)} weights + {_gb(g.activation_bytes)} activations" for g in need
    )
    est = (
        ""
        if all(g.recorded for g in need)
        else " (estimated from the graph files: the manifest records no memory)"
    )
    return (
        f"the bundle needs {_gb(want)} ({parts}){est}, but {device} has {_gb(total)} of which "
        f"{_gb(reserve)} stay reserved for the OS, CUDA and the camera pipeline, leaving {_gb(max(free, 0))} "
        "(choose a smaller model or precision, or a device with more memory)"
    )


def summary(need: Sequence[GraphMemory], total: int, reserve: int) -> str:
    want = sum(g.total for g in need)
    est = "" if all(g.recorded for g in need) else ", estimated from the graph files"
    return f"bundle needs {_gb(want)} of {_gb(total - reserve)} free ({_gb(reserve)} reserved{est})"

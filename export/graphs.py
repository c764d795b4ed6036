"""torch -> ONNX for any adapter's graphs (legato.adapters: each adapter says what its graphs
are, as :class:`legato.adapters.ExportGraph`: module, example inputs, tensor names).

The TorchScript exporter by default (static shapes, deterministic, standard ops: what the
reference model needs); ``dynamo=True`` for architectures that export better with torch's dynamo
exporter (LeRobot's SmolVLA at opset 20). The graph's own opset is what the manifest records.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from export.onnx_files import save_graph
from legato.adapters import ExportGraph


def export_graph(g: ExportGraph, path: str | Path) -> None:
    """Write ``g`` to ``path`` (ONNX) with its input and output names."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            g.module,
            g.args,
            str(path),
            input_names=list(g.inputs),
            output_names=list(g.outputs),
            opset_version=g.opset,
            dynamo=g.dynamo,
            do_constant_folding=True,
            custom_opsets=dict(g.custom_opsets) if g.custom_opsets else None,
        )
        _static_output_shapes(g, path)


def _static_output_shapes(g: ExportGraph, path: str | Path) -> None:
    """Write the traced outputs' shapes into the graph where ONNX shape inference leaves a dim
    symbolic (a transformers vision tower's reshapes do): the bundle's manifest records static
    shapes. (lerobot engineer's hook.)"""
    import onnx

    model = onnx.load(str(path))
    outs = g.module(*g.args)
    outs = outs if isinstance(outs, tuple) else (outs,)
    changed = False
    for o, t in zip(model.graph.output, outs, strict=True):
        dims = o.type.tensor_type.shape.dim
        if len(dims) == t.dim() and all(d.dim_value == s for d, s in zip(dims, t.shape, strict=True)):
            continue
        o.type.tensor_type.shape.Clear()
        for s in t.shape:
            o.type.tensor_type.shape.dim.add().dim_value = int(s)
        changed = True
    if changed:
        save_graph(model, Path(path))  # with external data past 2 GB, as every writer of a graph

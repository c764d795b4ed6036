"""What a graph needs in memory, as the manifest records it (docs/bundle.md, "memory").

- ``weight_bytes``: the bytes of the graph's initializers (its weights, external data included),
  at the graph's own precision (an fp16 graph's float weights are 2 bytes, a QDQ int8 graph keeps
  its quantized weights as int8 and its scales as float).
- ``peak_activation_bytes``: an estimate of the largest set of intermediate tensors alive at
  once when the nodes run in the file's order (a tensor lives from the node that makes it to
  the last node that reads it; the graph's inputs and outputs count; shapes from ONNX shape
  inference, dtypes as the graph has them). An engine's own workspace and fusions are not in
  it: TensorRT usually needs less for activations and adds a workspace (the profile's
  workspace_mb), so treat the sum as an estimate of the order, not a bound.
- ``by_precision`` (from the fp32 graph, for the tables of docs/jetson.md): the same two numbers
  had the graph been exported at fp16 (float tensors and weights at 2 bytes) or int8 (the
  weights of MatMul / Gemm at 1 byte, activations at 1 byte: TensorRT's int8 layers chain in
  int8), each an estimate.

edge/memory_budget.py (`legato flash`, `legato doctor`) reads ``weight_bytes`` and
``peak_activation_bytes``. No torch: onnx only, weights never loaded (sizes from the dims).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

_FLOAT = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.BFLOAT16,
}


def _itemsize(elem_type: int) -> int:
    try:
        return int(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).itemsize)
    except (KeyError, TypeError, ValueError):
        return 4


def _numel(dims: Any) -> int:
    n = 1
    for d in dims:
        v = d.dim_value if hasattr(d, "dim_value") else int(d)
        n *= max(int(v), 1)
    return n


def _tensor_sizes(model: onnx.ModelProto) -> dict[str, tuple[int, int]]:
    """name -> (elements, elem_type) for every typed value (inputs, outputs, intermediates)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    out = {}
    g = inferred.graph
    for v in (*g.input, *g.value_info, *g.output):
        tt = v.type.tensor_type
        if tt.HasField("shape"):
            out[v.name] = (_numel(tt.shape.dim), tt.elem_type)
    return out


def _peak(model: onnx.ModelProto, itemsize: Any) -> int:
    g = model.graph
    weights = {i.name for i in g.initializer}
    sizes = _tensor_sizes(model)

    def nbytes(name: str) -> int:
        if name not in sizes or name in weights:
            return 0
        n, et = sizes[name]
        return n * itemsize(et)

    last: dict[str, int] = {}
    for i, node in enumerate(g.node):
        for x in node.input:
            last[x] = i
    end = len(g.node)
    for o in g.output:
        last[o.name] = end
    live = {i.name for i in g.input if i.name not in weights}
    total = sum(nbytes(n) for n in live)
    peak = total
    for i, node in enumerate(g.node):
        for o in node.output:
            if o and o not in live:
                live.add(o)
                total += nbytes(o)
        peak = max(peak, total)
        for x in [x for x in live if last.get(x, i) <= i]:  # read for the last time (or never)
            live.discard(x)
            total -= nbytes(x)
    return int(peak)


def _weights(model: onnx.ModelProto, itemsize: Any, gemm_itemsize: Any = None) -> int:
    gemm = {x for n in model.graph.node if n.op_type in ("MatMul", "Gemm") for x in n.input}
    total = 0
    for t in model.graph.initializer:
        size = (gemm_itemsize or itemsize)(t.data_type) if t.name in gemm else itemsize(t.data_type)
        total += _numel(t.dims) * size
    return int(total)


def graph_memory(path: str | Path, estimates: bool = False) -> dict[str, Any]:
    """The manifest's ``graphs.<g>.memory`` for the graph file at ``path`` (its own precision);
    with ``estimates`` (an fp32 graph) also ``by_precision``."""
    model = onnx.load(str(path), load_external_data=False)
    out: dict[str, Any] = {
        "weight_bytes": _weights(model, _itemsize),
        "peak_activation_bytes": _peak(model, _itemsize),
    }
    if estimates:

        def half(et: int) -> int:
            return 2 if et in _FLOAT else _itemsize(et)

        def one(et: int) -> int:
            return 1 if et in _FLOAT else _itemsize(et)

        out["by_precision"] = {
            "fp32": {
                "weight_bytes": out["weight_bytes"],
                "peak_activation_bytes": out["peak_activation_bytes"],
            },
            "fp16": {"weight_bytes": _weights(model, half), "peak_activation_bytes": _peak(model, half)},
            "int8": {"weight_bytes": _weights(model, half, one), "peak_activation_bytes": _peak(model, one)},
        }
    return out

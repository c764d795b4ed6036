"""Tiny hand-made ONNX graphs for the runtime tests (no bundle, no torch needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def affine_graph(path: Path, shape: tuple[int, ...] = (1, 16, 3), scale: float = 2.0) -> Path:
    """out = x * scale + bias, x float32 of `shape` (first dim symbolic 'b')."""
    dims: list = ["b", *shape[1:]]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, dims)
    s = numpy_helper.from_array(np.array(scale, np.float32), "scale")
    bias = numpy_helper.from_array(np.arange(shape[-1], dtype=np.float32), "bias")
    g = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["m"]), helper.make_node("Add", ["m", "bias"], ["out"])],
        "affine", [x], [out], [s, bias],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path

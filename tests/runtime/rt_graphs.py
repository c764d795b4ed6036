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
        "affine",
        [x],
        [out],
        [s, bias],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


class FnEngine:
    """An edge.engine.Engine whose run() is a numpy function (fake graphs for the sampler tests)."""

    def __new__(cls, *a, **k):
        from edge.engine import Engine

        if not issubclass(cls, Engine):  # build the subclass lazily so importing this file stays cheap
            cls = type("FnEngine", (cls, Engine), {})
        return object.__new__(cls)

    def __init__(self, name, inputs, outputs, fn):
        from edge.engine import TensorSpec

        self.name = name
        self.input_specs = {n: TensorSpec(n, tuple(s), np.dtype(d)) for n, (s, d) in inputs.items()}
        self.output_specs = {n: TensorSpec(n, tuple(s), np.dtype(d)) for n, (s, d) in outputs.items()}
        self._alloc()
        self.fn = fn
        self.runs = 0

    def _run_impl(self):
        self.fn(self.inputs, self.outputs)


def fake_graphs(spec, c=4, layers=1, p=3):
    """A prefix and a flow head with the bundle's I/O names (docs/bundle.md) whose velocity depends
    on every input: v = tanh(y * (1 + kv) + cond) * (1 + mod[t index]) - omega / 2."""
    h, a, n = spec.horizon, spec.action_dim, spec.num_steps
    hi, wi = spec.image_hw
    f = "float32"
    kv_s, mod_s, cond_s = (1, layers, 2, p, c), (1, n + 1, layers, 6, c), (1, h, c)

    def prefix_fn(i, o):
        m = float(i["image"].mean()) / 255.0 + 0.1 * float(i["tokens"].sum() % 7)
        o["kv"][...] = m
        k = np.arange(n + 1, dtype=np.float32)[None, :, None, None, None]
        o["mod"][...] = 0.1 * k + 0.01 * float(i["state"].sum())
        o["cond"][...] = 0.05 * np.arange(h, dtype=np.float32)[None, :, None] + 0.1 * float(i["state"][0, 0])

    def head_fn(i, o):
        k = np.rint(i["t"][0] * n).astype(int)  # (h,)
        scale = 1.0 + i["mod"][0, k, 0, 0, 0]  # (h,)
        o["v"][...] = (
            np.tanh(i["y"] * (1.0 + i["kv"].mean()) + i["cond"][..., :1]) * scale[None, :, None]
            - i["omega"][..., None] / 2
        )

    prefix = FnEngine(
        "prefix",
        {
            "image": ((1, hi, wi, 3), "uint8"),
            "tokens": ((1, spec.max_tokens), "int64"),
            "state": ((1, spec.state_dim), f),
        },
        {"kv": (kv_s, f), "mod": (mod_s, f), "cond": (cond_s, f)},
        prefix_fn,
    )
    head = FnEngine(
        "flow_head",
        {
            "y": ((1, h, a), f),
            "t": ((1, h), f),
            "omega": ((1, h), f),
            "kv": (kv_s, f),
            "mod": (mod_s, f),
            "cond": (cond_s, f),
        },
        {"v": ((1, h, a), f)},
        head_fn,
    )
    return prefix, head

"""Precision transforms of the exported fp32 graphs (ONNX in, ONNX out).

- fp16 (GPU profiles): weights and compute in float16, float32 inputs and outputs
  (keep_io_types). Kept float32: LayerNormalization/ReduceMean/Pow/Sqrt (variance), Softmax, and
  the fused graph's blend/Euler accumulation (its top-level Add/Mul/Sub on the chunk). The sweep
  (bench/sweep_fp16.py) cannot tell these apart on onnxruntime's CPU (every variant 0.0011 max
  abs: its fp16 kernels accumulate in fp32); the list follows the field notes (pi0.5's fp16
  overflow until the accumulation stayed fp32) and fp16 autocast on an H100, which keeps the same
  ops in fp32, matched fp32 (cosine 0.999998; docs/performance.md).
- int8, CPU (onnxruntime backend): onnxruntime dynamic quantization, per-channel int8 weights
  of MatMul/Gemm, activations quantized on the fly.
- int8, TensorRT: explicit QDQ (per-channel weights, per-tensor activations) calibrated on
  simulator observations, for TensorRT's strongly typed mode.

Each result is written as export.onnx_files writes any graph: with external data past 2 GB.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx

from edge.errors import UsageError
from export.onnx_files import needs_external_data, save_graph, weight_bytes

FP16_KEEP_FP32 = ("LayerNormalization", "ReduceMean", "Softmax", "Pow", "Sqrt")
QUANT_OPS = ("MatMul", "Gemm")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime.quantization logs per tensor at WARNING through the root logger."""
    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(old)


def to_fp16(src: Path, dst: Path, keep_fp32: tuple[str, ...] = FP16_KEEP_FP32) -> list[str]:
    """float16 graph with float32 I/O; returns the op types kept float32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    # The fused graph's blend/Euler chain (the nodes that touch eps/a_ref/omega's math outside the
    # network) is small and precision-critical: keep every node whose name has no module scope.
    blocked = [
        n.name
        for n in model.graph.node
        if "/" not in n.name.strip("/") and n.op_type in ("Add", "Mul", "Sub")
    ]
    with _quiet():
        m16 = convert_float_to_float16(
            model, keep_io_types=True, op_block_list=list(keep_fp32), node_block_list=blocked
        )
    toposort(m16.graph)
    save_graph(m16, dst)
    return list(keep_fp32)


def toposort(graph: onnx.GraphProto) -> None:
    """Order nodes so every input is produced before use (the fp16 converter appends its I/O casts)."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for n in pending:
            if all(x in ready for x in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ValueError(f"graph has a cycle or a dangling input at {rest[0].name}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def to_dynamic_int8(src: Path, dst: Path, activation_matmuls: bool = False) -> int:
    """onnxruntime's dynamic int8: weights int8 per channel, activations uint8 per tensor at run
    time. ``activation_matmuls``: also the MatMuls of two activations (attention's QK^T and PV),
    which onnxruntime leaves float by default (its MatMulConstBOnly): worth it where attention over
    many tokens is a large part of the graph (a VLM prefix: 1,024 image tokens). Then
    :func:`fuse_fast_gelu` on the result; returns how many GELUs it fused."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=list(QUANT_OPS),
            # CPU profiles' fp32 graphs already hold FastGelu (com.microsoft), whose output type
            # ONNX shape inference leaves unknown: the quantizer then cannot type the MatMul after
            # it and refuses the graph. Every activation here is float32.
            extra_options={
                "MatMulConstBOnly": not activation_matmuls,
                "DefaultTensorType": onnx.TensorProto.FLOAT,
            },
            use_external_data_format=_large(src),
        )
    return fuse_fast_gelu(dst)


def _large(path: Path) -> bool:
    """The graph's weights pass the external-data threshold (read without its data)."""
    return needs_external_data(weight_bytes(onnx.load(str(path), load_external_data=False)))


def fuse_fast_gelu(path: Path) -> int:
    """Rewrite, in place, every tanh-approximated GELU chain (0.5 x (1 + tanh(sqrt(2/pi) (x +
    0.044715 x^3))), nine element-wise ops as the exporter writes SigLIP's gelu_pytorch_tanh) as
    onnxruntime's fused FastGelu (com.microsoft; onnxruntime.transformers' own fusion). For the
    onnxruntime-only graphs (dynamic int8): -8 % on full-size SmolVLA's int8 prefix. Returns how
    many were fused (0: the graph is left as it was, e.g. the reference model's erf GELU)."""
    import onnx
    from onnxruntime.transformers.fusion_fastgelu import FusionFastGelu
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = onnx.load(str(path))
    om = OnnxModel(model)
    with _quiet():
        FusionFastGelu(om).apply()
    fused = sum(n.op_type == "FastGelu" for n in om.model.graph.node)
    if not fused:
        return 0
    om.prune_graph()
    toposort(om.model.graph)  # the fusion appends its nodes at the end
    if not any(o.domain == "com.microsoft" for o in om.model.opset_import):
        om.model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    save_graph(om.model, path)
    return fused


def check_feeds(model_path: Path, feeds: list[dict[str, np.ndarray]], source: str) -> None:
    """Calibration feeds must match the graph's inputs exactly (names, dtypes, shapes)."""
    model = onnx.load(str(model_path))
    init = {i.name for i in model.graph.initializer}
    want = {}
    for i in model.graph.input:
        if i.name in init:
            continue
        tt = i.type.tensor_type
        want[i.name] = (
            onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type),
            tuple(d.dim_value for d in tt.shape.dim),
        )
    if not feeds:
        raise UsageError(f"calibration data {source}: no samples")
    for k, f in enumerate(feeds):
        if set(f) != set(want):
            raise UsageError(
                f"calibration data {source}: sample {k} has inputs {sorted(f)}, "
                f"the graph needs {sorted(want)}"
            )
        for name, (dt, shape) in want.items():
            x = f[name]
            if x.dtype != dt or tuple(x.shape) != shape:
                raise UsageError(
                    f"calibration data {source}: input {name!r} is {x.dtype}{list(x.shape)}, "
                    f"the graph needs {np.dtype(dt)}{list(shape)}"
                )


def feeds_sha256(feeds: list[dict[str, np.ndarray]]) -> str:
    h = hashlib.sha256()
    for f in feeds:
        for k in sorted(f):
            h.update(k.encode())
            h.update(np.ascontiguousarray(f[k]).tobytes())
    return h.hexdigest()


def to_qdq_int8(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]], source: str) -> None:
    """Static QDQ int8 of the weight GEMMs (per-channel weights, symmetric per-tensor int8
    activations), calibrated on feeds; attention's activation x activation MatMuls stay float."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    check_feeds(src, feeds, source)
    model = onnx.load(str(src))
    weights = {i.name for i in model.graph.initializer}
    # Attention's activation x activation MatMuls (scores, weighted values) stay float: quantizing
    # them moved the chunk by 0.13 (cosine 0.976); weight GEMMs only: cosine 0.9987 (docs/performance.md).
    excluded = [n.name for n in model.graph.node if n.op_type == "MatMul" and not weights & set(n.input)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self):  # noqa: ANN201 (onnxruntime's signature)
            return next(self.it, None)

    with _quiet():
        quantize_static(
            str(src),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(QUANT_OPS),
            nodes_to_exclude=excluded,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
            use_external_data_format=_large(src),
        )

"""export.memory: the weight bytes and peak activation estimate each manifest graph records."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge.bundle import load_manifest
from export.memory import graph_memory


def _chain(path):
    """x -> y = Relu(x) -> z = y * W -> out = z + x, every tensor (1, 1000) float32, W (1000,)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1000])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1000])
    w = numpy_helper.from_array(np.ones(1000, np.float32), "W")
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Mul", ["y", "W"], ["z"]),
             helper.make_node("Add", ["z", "x"], ["out"])]  # fmt: skip
    model = helper.make_model(helper.make_graph(nodes, "chain", [x], [out], [w]),
                              opset_imports=[helper.make_opsetid("", 17)])  # fmt: skip
    onnx.save(model, str(path))
    return path


def test_liveness_peak_and_weights_by_hand(tmp_path):
    """Alive: x; + y; + z (x, y, z: the peak, 12 kB), y freed; + out, z and x freed."""
    mem = graph_memory(_chain(tmp_path / "c.onnx"), estimates=True)
    assert mem["weight_bytes"] == 4000 and mem["peak_activation_bytes"] == 12000
    by = mem["by_precision"]
    assert by["fp32"] == {"weight_bytes": 4000, "peak_activation_bytes": 12000}
    assert by["fp16"] == {"weight_bytes": 2000, "peak_activation_bytes": 6000}
    assert by["int8"] == {"weight_bytes": 2000, "peak_activation_bytes": 3000}  # W feeds a Mul, not a GEMM


def test_the_manifest_records_every_graphs_memory(tiny_bundle):
    m = load_manifest(tiny_bundle)
    for g in m.graphs.values():
        mem = m.data["graphs"][g.name]["memory"]
        model = onnx.load(str(tiny_bundle / g.file))
        weights = sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
        assert mem["weight_bytes"] == weights > 0
        largest_out = max(4 * int(np.prod(t.shape)) for t in g.outputs)
        assert mem["peak_activation_bytes"] >= largest_out
        assert mem["by_precision"]["fp16"]["weight_bytes"] < weights

"""Engine.bind on the TensorRT backend, against the fake tensorrt / pycuda modules of
test_trt_engine: a bound input reads the producer's device buffer, so neither the producer's
output nor the consumer's input crosses PCIe."""

import numpy as np
from test_trt_engine import LOG, MEM, fakes  # noqa: F401 (the fixture)

from edge.engine import EngineOptions, open_engine


def test_bound_input_stays_on_the_device(fakes, monkeypatch):  # noqa: F811
    import pycuda.driver as drv

    copies = []
    htod, dtoh = drv.memcpy_htod_async, drv.memcpy_dtoh_async
    monkeypatch.setattr(
        drv, "memcpy_htod_async", lambda d, h, s: (copies.append(("htod", int(d))), htod(d, h, s))
    )
    monkeypatch.setattr(
        drv, "memcpy_dtoh_async", lambda h, d, s: (copies.append(("dtoh", int(d))), dtoh(h, d, s))
    )
    first = open_engine(fakes, EngineOptions(backend="tensorrt"), name="prefix")
    second = open_engine(fakes, EngineOptions(backend="tensorrt"), name="flow_head")
    out_addr = int(first._device["out"])
    second.bind("x", first, "out")
    assert second._context.addr["x"] == out_addr and second.inputs["x"] is first.outputs["out"]
    for k in range(3):
        first.inputs["x"][...] = k
        first.run()
        second.run()
        np.testing.assert_allclose(second.outputs["out"], 2 * (2 * k + 1) + 1)  # out = 2 x + 1, twice
    # per pair of runs: the prefix's input goes up and the head's output comes down, nothing else
    assert copies == [("htod", int(first._device["x"])), ("dtoh", int(second._device["out"]))] * 3
    assert not first.outputs["out"].any()  # the prefix's output never came to the host
    first.close()
    second.close()
    assert out_addr not in MEM


def test_binding_to_another_backend_goes_through_its_host_buffer(fakes, tmp_path):  # noqa: F811
    from rt_graphs import affine_graph

    from edge.engine import OrtEngine

    host = OrtEngine(affine_graph(tmp_path / "a.onnx", shape=(1, 4, 3)), name="cpu")
    dev = open_engine(fakes, EngineOptions(backend="tensorrt"), name="flow_head")
    dev.bind("x", host, "out")
    host.inputs["x"][...] = 1.0
    host.run()
    dev.run()
    np.testing.assert_allclose(
        dev.outputs["out"], np.broadcast_to(2 * (2 * 1.0 + np.arange(3)) + 1, (1, 4, 3))
    )
    assert "exec" in LOG

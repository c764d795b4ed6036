import numpy as np
import pytest
from rt_graphs import affine_graph

from edge.engine import EngineOptions, OrtEngine, open_engine
from edge.errors import BundleError, ProfileError


def test_ort_engine_writes_into_preallocated_outputs(tmp_path):
    eng = OrtEngine(affine_graph(tmp_path / "a.onnx"))
    assert eng.input_specs["x"].shape == (1, 16, 3)  # symbolic batch defaults to 1
    out = eng.outputs["out"]
    x = np.random.default_rng(0).standard_normal((1, 16, 3)).astype(np.float32)
    eng.inputs["x"][...] = x
    eng.run()
    assert eng.outputs["out"] is out  # the same buffer every run
    np.testing.assert_allclose(out, 2 * x + np.arange(3), rtol=1e-6)
    eng.inputs["x"][...] = 0
    eng.run()
    np.testing.assert_allclose(out, np.broadcast_to(np.arange(3, dtype=np.float32), (1, 16, 3)))
    assert eng.runs == 2


def test_call_copies_and_checks(tmp_path):
    eng = open_engine(affine_graph(tmp_path / "a.onnx"), shapes={"x": (2, 16, 3), "out": (2, 16, 3)})
    x = np.ones((2, 16, 3), np.float32)
    res = eng({"x": x})
    np.testing.assert_allclose(res["out"], np.broadcast_to(2 + np.arange(3, dtype=np.float32), (2, 16, 3)))
    with pytest.raises(ValueError, match="shape"):
        eng({"x": np.ones((1, 16, 3), np.float32)})
    with pytest.raises(ValueError, match="missing"):
        eng({})


def test_run_retains_no_memory(tmp_path):
    """Retained memory only (tracemalloc's net growth over 200 runs): a run keeps nothing; the
    outputs land in the same preallocated buffers (checked by identity above)."""
    import tracemalloc

    eng = OrtEngine(affine_graph(tmp_path / "a.onnx"))
    for _ in range(5):
        eng.run()
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    for _ in range(200):
        eng.run()
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(
        s.size_diff
        for s in snap1.compare_to(snap0, "filename")
        if s.size_diff > 0 and "tracemalloc" not in str(s.traceback)
    )
    assert grown < 4096


def test_options_and_errors(tmp_path):
    o = EngineOptions.from_table({"providers": "CPUExecutionProvider", "intra_op_threads": 2, "x": 1})
    assert o.providers == ("CPUExecutionProvider",) and o.intra_op_threads == 2
    with pytest.raises(ProfileError, match="graph_optimization"):
        EngineOptions(graph_optimization="max")
    with pytest.raises(ProfileError, match="lacks provider"):
        OrtEngine(affine_graph(tmp_path / "a.onnx"), EngineOptions(providers=("NopeExecutionProvider",)))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(BundleError, match="cannot load"):
        OrtEngine(bad)
    with pytest.raises(BundleError, match="fixed"):
        OrtEngine(affine_graph(tmp_path / "a.onnx"), shapes={"x": (1, 8, 3)})


def test_run_after_close_is_a_clear_error(tmp_path):
    from edge.engine import EngineClosedError

    eng = OrtEngine(affine_graph(tmp_path / "a.onnx"))
    eng.run()
    eng.close()
    eng.close()  # idempotent
    with pytest.raises(EngineClosedError, match="engine a.onnx is closed"):
        eng.run()
    with pytest.raises(EngineClosedError, match="closed"):
        eng({"x": np.zeros((1, 16, 3), np.float32)})


def test_bound_input_reads_the_producers_output_without_a_copy(tmp_path):
    """prefix -> head chaining: the consumer's input is the producer's output buffer, so its run
    sees each new output with nothing copied in between."""
    first = OrtEngine(affine_graph(tmp_path / "a.onnx"), name="first")
    second = OrtEngine(affine_graph(tmp_path / "b.onnx", scale=3.0), name="second")
    second.bind("x", first, "out")
    assert second.inputs["x"] is first.outputs["out"] and second.bound == {"x": ("first", "out")}
    for k in range(3):
        first.inputs["x"][...] = k
        first.run()
        second.run()
        bias = np.arange(3, dtype=np.float32)
        np.testing.assert_allclose(
            second.outputs["out"], np.broadcast_to(3 * (2 * k + bias) + bias, (1, 16, 3))
        )


def test_bind_refuses_unknown_names_and_mismatched_tensors(tmp_path):
    first = OrtEngine(affine_graph(tmp_path / "a.onnx"), name="first")
    other = OrtEngine(affine_graph(tmp_path / "c.onnx", shape=(1, 8, 3)), name="other")
    with pytest.raises(BundleError, match="no input 'y'"):
        other.bind("y", first, "out")
    with pytest.raises(BundleError, match="no output 'v'"):
        other.bind("x", first, "v")
    with pytest.raises(BundleError, match=r"cannot take first output 'out' float32\[1, 16, 3\]"):
        other.bind("x", first, "out")

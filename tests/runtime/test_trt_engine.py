"""The TensorRT backend against fake tensorrt / pycuda / cuda-python modules (no GPU here).

The fakes keep "device memory" in a dict keyed by address and run the engine (out = 2 x + 1) on
it, so the test checks the real data path: host buffer -> H2D -> execute_async_v3 on the stream
-> D2H -> host buffer, every tensor addressed by name, and the CUDA graph replay.
"""

import sys
import types

import numpy as np
import pytest

from edge.engine import EngineOptions, open_engine
from edge.errors import BundleError, ProfileError

MEM: dict[int, np.ndarray] = {}
STREAMS: dict[int, "Stream"] = {}
LOG: list[str] = []


class Alloc:
    next_addr = 0x1000
    sizes: dict[int, int] = {}

    def __init__(self, n):
        self.addr = Alloc.next_addr
        Alloc.sizes[self.addr] = n
        Alloc.next_addr += 0x1000 + n
        MEM[self.addr] = np.zeros(n, np.uint8)

    def __int__(self):
        return self.addr

    def free(self):
        MEM.pop(self.addr, None)


class Stream:
    def __init__(self):
        self.handle = 77 + len(STREAMS)
        STREAMS[self.handle] = self
        self.capture = None

    def do(self, fn):
        if self.capture is not None:
            self.capture.append(fn)
        else:
            fn()

    def synchronize(self):
        LOG.append("sync")


def fake_pycuda():
    drv = types.ModuleType("pycuda.driver")

    class Ctx:
        def push(self):
            LOG.append("push")

        def detach(self):
            LOG.append("detach")

    class Device:
        def __init__(self, i):
            self.i = i

        def retain_primary_context(self):
            return Ctx()

    class Context:
        @staticmethod
        def pop():
            LOG.append("pop")

    def htod(dst, src, stream):
        stream.do(lambda: MEM[int(dst)].__setitem__(slice(None), np.frombuffer(src.tobytes(), np.uint8)))

    def dtoh(dst, src, stream):
        stream.do(lambda: dst.reshape(-1).view(np.uint8).__setitem__(slice(None), MEM[int(src)]))

    drv.init = lambda: None
    drv.Device, drv.Context, drv.Stream = Device, Context, Stream
    drv.pagelocked_empty = lambda shape, dtype: np.zeros(shape, dtype)
    drv.mem_alloc = Alloc
    drv.memcpy_htod_async, drv.memcpy_dtoh_async = htod, dtoh
    pkg = types.ModuleType("pycuda")
    pkg.driver = drv
    return pkg, drv


def fake_tensorrt(version="10.3.0", deserialize_ok=True, dynamic=False):
    """The engine computes out = 2 x + 1. dynamic: x is (1, -1, 3) in the plan and out is (1, -1, 3)
    until the context has x's shape (as TensorRT resolves an output from its inputs)."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    made: dict[str, object] = {}

    class Severity:
        ERROR, WARNING, INFO = 1, 2, 3

    class ILogger:
        def __init__(self):
            pass

    ILogger.Severity = Severity

    class TensorIOMode:
        INPUT, OUTPUT = "in", "out"

    class Context:
        def __init__(self, eng):
            self.eng, self.addr = eng, {}
            self.shapes = dict(eng.shapes)

        def set_input_shape(self, n, shape):
            LOG.append(f"set_input_shape {n} {tuple(shape)}")
            self.shapes[n] = tuple(shape)
            if n == "x":
                self.shapes["out"] = tuple(shape)
            return True

        def set_tensor_address(self, n, ptr):
            self.addr[n] = ptr
            return True

        def get_tensor_shape(self, n):
            return self.shapes[n]

        def execute_async_v3(self, handle):
            def run():
                x = MEM[self.addr["x"]].view(np.float32)
                out = MEM[self.addr["out"]].view(np.float32)
                assert out.size == x.size, "output buffer sized for another shape"
                out[:] = 2 * x + 1
                LOG.append("exec")

            STREAMS[handle].do(run)
            return True

    class Engine:
        shapes = {"x": (1, -1, 3), "out": (1, -1, 3)} if dynamic else {"x": (1, 4, 3), "out": (1, 4, 3)}
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ["out", "x"][i] if dynamic else ["x", "out"][i]  # outputs may come first

        def get_tensor_mode(self, n):
            return TensorIOMode.INPUT if n == "x" else TensorIOMode.OUTPUT

        def get_tensor_shape(self, n):
            return self.shapes[n]

        def get_tensor_dtype(self, n):
            return "float"

        def create_execution_context(self):
            made["context"] = Context(self)
            return made["context"]

    class Runtime:
        def __init__(self, logger):
            self.logger = logger
            self.DLA_core = -1
            made["runtime"] = self

        def deserialize_cuda_engine(self, plan):
            assert plan == b"PLAN"
            LOG.append(f"deserialize on DLA core {self.DLA_core}")
            if not deserialize_ok:
                self.logger.log(
                    Severity.ERROR,
                    "The engine plan file is generated on an incompatible "
                    "device, expecting compute 8.9 got compute 8.7, please rebuild.",
                )
                return None
            made["engine"] = Engine()
            return made["engine"]

    trt.ILogger, trt.TensorIOMode, trt.Runtime = ILogger, TensorIOMode, Runtime
    trt.nptype = lambda dt: {"float": np.float32}[dt]
    trt.made = made
    return trt


def fake_cudart(fail_capture: bool = False):
    """cuda-python's runtime: capture records the stream's work into a graph. fail_capture: the
    enqueue during capture fails, as an illegal call inside a capture does, leaving an error pending."""
    rt = types.ModuleType("cuda.bindings.runtime")
    state = {"pending_error": 0, "graphs": set(), "execs": set(), "modes": []}

    class Mode:
        cudaStreamCaptureModeGlobal, cudaStreamCaptureModeThreadLocal = 0, 1

    def begin(h, mode):
        state["modes"].append(mode)
        STREAMS[h].capture = []
        if fail_capture:
            STREAMS[h].capture.append("poison")
        return (0,)

    def end(h):
        ops, STREAMS[h].capture = STREAMS[h].capture, None
        graph = ("graph", len(state["graphs"]), tuple(ops))
        state["graphs"].add(graph)
        if "poison" in ops:
            state["pending_error"] = 901  # cudaErrorStreamCaptureInvalidated
            return (901, graph)  # the partial graph comes back with the error
        return (0, graph)

    def inst(graph, flags):
        ex = ("exec", graph)
        state["execs"].add(ex)
        return (0, ex)

    def launch(ex, h):
        LOG.append("graph")
        for fn in ex[1][2]:
            fn()
        return (0,)

    def destroy(graph):
        state["graphs"].discard(graph)
        return (0,)

    def destroy_exec(ex):
        state["execs"].discard(ex)
        return (0,)

    def last_error():
        err, state["pending_error"] = state["pending_error"], 0
        return (err,)

    rt.cudaStreamCaptureMode = Mode
    rt.cudaStreamBeginCapture, rt.cudaStreamEndCapture = begin, end
    rt.cudaGraphInstantiate, rt.cudaGraphLaunch = inst, launch
    rt.cudaGraphDestroy, rt.cudaGraphExecDestroy, rt.cudaGetLastError = destroy, destroy_exec, last_error
    rt.state = state
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = rt
    cuda = types.ModuleType("cuda")
    cuda.bindings = bindings
    return cuda, bindings, rt


@pytest.fixture
def fakes(monkeypatch, tmp_path):
    pkg, drv = fake_pycuda()
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", drv)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt())
    cuda, bindings, rt = fake_cudart()
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", rt)
    LOG.clear()
    Alloc.sizes.clear()
    plan = tmp_path / "flow_head.plan"
    plan.write_bytes(b"PLAN")
    return plan


def test_runs_by_name_through_pinned_and_device_buffers(fakes):
    eng = open_engine(fakes, EngineOptions(backend="tensorrt"), name="flow_head")
    assert set(eng.inputs) == {"x"} and eng.outputs["out"].shape == (1, 4, 3)
    out = eng.outputs["out"]
    x = np.arange(12, dtype=np.float32).reshape(1, 4, 3)
    eng.inputs["x"][...] = x
    eng.run()
    np.testing.assert_allclose(out, 2 * x + 1)
    assert LOG.count("exec") == 1 and LOG[-2:] == ["sync", "pop"]  # synchronised, context popped
    eng.close()


def test_cuda_graph_is_captured_after_the_first_run_and_replayed(fakes):
    eng = open_engine(fakes, EngineOptions(backend="tensorrt", cuda_graph=True))
    for k in range(3):
        x = np.full((1, 4, 3), k, np.float32)
        eng.inputs["x"][...] = x
        eng.run()
        np.testing.assert_allclose(eng.outputs["out"], 2 * x + 1)
    assert eng.graph_error is None and LOG.count("graph") == 2  # runs 2 and 3 launch the graph


def test_engine_key_mismatch_is_refused(fakes):
    from edge.device import DeviceIdentity

    here = DeviceIdentity("10.3.0", "12.6", "Orin", "8.7", "36.4.3", "6.2", "x")
    key = {
        "tensorrt": "10.3.0",
        "cuda": "12.6",
        "gpu": "Thor",
        "compute_capability": "11.0",
        "l4t": "36.4.3",
        "jetpack": "6.2",
        "onnx_sha256": "abc",
    }
    with pytest.raises(BundleError, match="compute_capability: engine '11.0', device '8.7'"):
        open_engine(fakes, EngineOptions(backend="tensorrt"), key=key, ident=here)
    ok = dict(key, gpu="Orin", compute_capability="8.7")
    assert open_engine(fakes, EngineOptions(backend="tensorrt"), key=ok, ident=here).outputs


def test_deserialize_failure_surfaces_tensorrt_log(fakes, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(deserialize_ok=False))
    with pytest.raises(BundleError, match="incompatible device, expecting compute 8.9"):
        open_engine(fakes, EngineOptions(backend="tensorrt"))


def test_missing_or_old_tensorrt_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ProfileError, match="tensorrt is not importable"):
        open_engine(tmp_path / "x.plan", EngineOptions(backend="tensorrt"))
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("8.5.2"))
    with pytest.raises(ProfileError, match="JetPack 5 / TensorRT 8.5 is not supported"):
        open_engine(tmp_path / "x.plan", EngineOptions(backend="tensorrt"))


def _install(monkeypatch, trt=None, cudart=None):
    if trt is not None:
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
    if cudart is not None:
        cuda, bindings, rt = cudart
        monkeypatch.setitem(sys.modules, "cuda", cuda)
        monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
        monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", rt)
        return rt
    return None


def test_the_runtime_runs_on_the_dla_core_the_engine_was_built_for(fakes, monkeypatch):
    eng = open_engine(fakes, EngineOptions(backend="tensorrt"), dla_core=1)
    assert "deserialize on DLA core 1" in LOG and eng.dla_core == 1
    LOG.clear()
    open_engine(fakes, EngineOptions(backend="tensorrt"))
    assert "deserialize on DLA core -1" in LOG  # GPU engines leave TensorRT's default


def test_a_dynamic_output_gets_a_device_buffer_of_its_resolved_shape(fakes, monkeypatch):
    _install(monkeypatch, fake_tensorrt(dynamic=True))
    eng = open_engine(fakes, EngineOptions(backend="tensorrt"), shapes={"x": (1, 8, 3)})
    assert eng.outputs["out"].shape == (1, 8, 3) and eng.output_specs["out"].shape == (1, 8, 3)
    assert sorted(Alloc.sizes.values()) == [96, 96], Alloc.sizes  # 1 x 8 x 3 float32 each, not 1 x 1 x 3
    x = np.arange(24, dtype=np.float32).reshape(1, 8, 3)
    eng.inputs["x"][...] = x
    eng.run()
    np.testing.assert_allclose(eng.outputs["out"], 2 * x + 1)


def test_a_failed_capture_is_cleaned_up_and_the_plain_path_keeps_running(fakes, monkeypatch):
    rt = _install(monkeypatch, cudart=fake_cudart(fail_capture=True))
    eng = open_engine(fakes, EngineOptions(backend="tensorrt", cuda_graph=True))
    for k in range(3):
        x = np.full((1, 4, 3), k, np.float32)
        eng.inputs["x"][...] = x
        eng.run()
        np.testing.assert_allclose(eng.outputs["out"], 2 * x + 1)
    assert eng.graph_error and "cudaStreamEndCapture failed" in eng.graph_error
    assert rt.state["graphs"] == set() and rt.state["execs"] == set()  # the partial graph destroyed
    assert rt.state["pending_error"] == 0  # cleared with cudaGetLastError
    assert LOG.count("graph") == 0 and LOG.count("exec") == 3  # runs 2 and 3 on the plain path
    assert rt.state["modes"] == [rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal]


def test_capture_is_thread_local_and_close_frees_everything(fakes, monkeypatch):
    rt = sys.modules["cuda.bindings.runtime"]
    eng = open_engine(fakes, EngineOptions(backend="tensorrt", cuda_graph=True))
    eng.run()
    eng.run()
    assert rt.state["modes"] == [rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal]
    assert len(rt.state["graphs"]) == 1 and len(rt.state["execs"]) == 1
    allocated = set(Alloc.sizes)
    eng.close()
    assert rt.state["graphs"] == set() and rt.state["execs"] == set()
    assert not allocated & set(MEM)  # every device buffer freed
    assert not hasattr(eng, "_context") and not hasattr(eng, "_engine") and not hasattr(eng, "_runtime")
    assert LOG[-3:] == ["push", "pop", "detach"]  # the retained primary context released last
    with pytest.raises(RuntimeError, match="is closed"):
        eng.run()
    eng.close()  # idempotent
    assert LOG.count("detach") == 1


def test_a_failed_load_releases_the_context(fakes, monkeypatch):
    _install(monkeypatch, fake_tensorrt(deserialize_ok=False))
    with pytest.raises(BundleError):
        open_engine(fakes, EngineOptions(backend="tensorrt"))
    assert LOG[-2:] == ["pop", "detach"]


def test_the_loader_passes_the_engines_dla_core_to_the_runtime(tmp_path, monkeypatch):
    """edge.assembly.load opens each TensorRT engine with the DLA core it was built for (the
    manifest's engines.<g>.flags.dla_core), so TrtEngine sets runtime.DLA_core to it."""
    import json
    from pathlib import Path

    import edge.assembly as assembly

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
    from bundles import make_bundle

    key = {"tensorrt": "10.3.0", "cuda": "12.6", "gpu": "Orin", "compute_capability": "8.7", "l4t": "36.4.3",
           "jetpack": "6.2"}  # fmt: skip
    b = make_bundle(tmp_path / "b", profile="jetson-agx-orin-64gb", engine_key=key)
    m = json.loads((b / "manifest.json").read_text())
    (b / "engines/prefix.plan").write_bytes(b"plan")
    from edge.outputs import sha256_file

    m["engines"]["prefix"] = {"file": "engines/prefix.plan", "sha256": sha256_file(b / "engines/prefix.plan"),
                              "key": {**key, "onnx_sha256": m["graphs"]["prefix"]["sha256"]},
                              "flags": {"dla_core": 0}}  # fmt: skip
    m["engines"]["flow_head"]["flags"] = {"dla_core": None}
    (b / "manifest.json").write_text(json.dumps(m))
    opened = {}
    monkeypatch.setattr(assembly, "open_engine", lambda path, opts, name, **kw: opened.setdefault(name, kw))
    monkeypatch.setattr(assembly, "denoiser_for", lambda *a, **k: None)
    assembly.load(str(b), "jetson-agx-orin-64gb", fused=False)
    assert opened["prefix"]["dla_core"] == 0 and opened["flow_head"]["dla_core"] is None

"""Run edge/trt_engine.py's TrtEngine on a real GPU with the real pycuda and cuda-python.

TensorRT itself is not available on any machine this project can reach, so a stand-in
`tensorrt` module serves the engine: its execute_async_v3 enqueues a real CUDA kernel
(y = 2 x + 1, through CuPy on the engine's own stream). Everything else is real: pycuda's
primary context pushed in a worker thread, pinned host buffers, device allocations, async
copies on a non-default stream, and the CUDA graph captured and replayed through cuda-python.

What it proves: the buffer, stream, context and CUDA-graph code of the TensorRT backend.
What it does not: anything TensorRT does (deserialisation, kernels, engine keys).

Run on a GPU machine:  python scripts/gpu_check_trt_engine.py   (needs pycuda, cuda-python, cupy)
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
SHAPE = (1, 16, 3)


def stand_in_tensorrt() -> types.ModuleType:
    import cupy as cp

    kernel = cp.ElementwiseKernel("float32 x", "float32 y", "y = 2.0f * x + 1.0f", "two_x_plus_one")
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"

    class ILogger:
        class Severity:
            ERROR, WARNING, INFO = 1, 2, 3

        def __init__(self) -> None:
            pass

    class TensorIOMode:
        INPUT, OUTPUT = "in", "out"

    class Context:
        def __init__(self) -> None:
            self.addr: dict[str, int] = {}

        def set_input_shape(self, name, shape) -> bool:
            return True

        def set_tensor_address(self, name, ptr) -> bool:
            self.addr[name] = int(ptr)
            return True

        def get_tensor_shape(self, name):
            return SHAPE

        def execute_async_v3(self, stream_handle: int) -> bool:
            n = int(np.prod(SHAPE))

            def mem(ptr: int):
                return cp.ndarray(
                    (n,), cp.float32, cp.cuda.MemoryPointer(cp.cuda.UnownedMemory(ptr, 4 * n, self), 0)
                )

            with cp.cuda.ExternalStream(stream_handle):
                kernel(mem(self.addr["x"]), mem(self.addr["y"]))
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ("x", "y")[i]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name == "x" else TensorIOMode.OUTPUT

        def get_tensor_shape(self, name):
            return SHAPE

        def get_tensor_dtype(self, name):
            return "float32"

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger) -> None:
            pass

        def deserialize_cuda_engine(self, plan: bytes):
            return Engine()

    trt.ILogger, trt.TensorIOMode, trt.Runtime = ILogger, TensorIOMode, Runtime
    trt.nptype = lambda dt: np.dtype(dt).type
    return trt


def main() -> int:
    sys.modules["tensorrt"] = stand_in_tensorrt()
    from edge.engine import EngineOptions
    from edge.trt_engine import TrtEngine

    plan = Path(tempfile.mkdtemp()) / "y.plan"
    plan.write_bytes(b"stand-in plan")
    results: dict[str, object] = {}

    def worker() -> None:  # the runtime's inference worker owns the engine, as on the robot
        rng = np.random.default_rng(0)
        for graph in (False, True):
            eng = TrtEngine(plan, EngineOptions(backend="tensorrt", cuda_graph=graph), name=f"graph={graph}")
            times, worst = [], 0.0
            for _ in range(200):
                x = rng.standard_normal(SHAPE).astype(np.float32)
                eng.inputs["x"][...] = x
                tic = time.perf_counter()
                eng.run()
                times.append(time.perf_counter() - tic)
                worst = max(worst, float(np.abs(eng.outputs["y"] - (2 * x + 1)).max()))
            results[f"graph={graph}"] = {
                "max_abs_error": worst,
                "graph_captured": eng._graph_exec is not None,
                "graph_error": eng.graph_error,
                "run_us_median": 1e6 * float(np.median(times[10:])),
                "run_us_p99": 1e6 * float(np.percentile(times[10:], 99)),
            }
            eng.close()

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    for k, v in results.items():
        print(k, v)
    plain, graph = results.get("graph=False"), results.get("graph=True")
    ok = (
        isinstance(plain, dict) and isinstance(graph, dict)
        and plain["max_abs_error"] == 0.0 and graph["max_abs_error"] == 0.0
        and graph["graph_captured"] and graph["graph_error"] is None
    )  # fmt: skip
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

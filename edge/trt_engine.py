"""The TensorRT 10 backend of :class:`edge.engine.Engine` (pycuda for memory and the stream).

tensorrt and pycuda are imported when a :class:`TrtEngine` is built, never at module import;
their absence (or TensorRT older than 10.3, i.e. JetPack 5) is a one-line ProfileError.

Load (docs/bundle.md, jetson-tensorrt notes):
1. the engine key stored with the plan (TensorRT, CUDA, GPU, compute capability, L4T, JetPack,
   ONNX sha256) must equal this device's (``edge.device.engine_key``), or the plan is refused
   with the fields that differ (rebuild it on the device: `legato flash`);
2. ``trt.Runtime`` with ``DLA_core`` set to the core the engine was built for (the manifest's
   ``flags.dla_core``), then ``deserialize_cuda_engine``; a None is refused with TensorRT's own log
   lines (they say "incompatible device" or "version" and what was expected);
3. every input shape is set first (``set_input_shape`` for dynamic inputs), then per I/O tensor
   (by name, ``num_io_tensors`` / ``get_tensor_name``) at its resolved shape (an output's comes
   from the context once the inputs are set): a pinned host buffer (``pagelocked_empty``), a
   device buffer of that size (``mem_alloc``), ``set_tensor_address`` once;
4. one non-default stream. A run: H2D copies, ``execute_async_v3(stream.handle)``, D2H copies,
   ``stream.synchronize()``.
Chaining (``Engine.bind``): an input bound to another TrtEngine's output on the same device takes
that output's device buffer as its address; the input is then never copied host-to-device and
the output never device-to-host (a prefix's K/V cache stays on the GPU for every head call).
With ``cuda_graph``, the whole run (copies included: addresses are fixed) is captured into a CUDA
graph after the first run, through cuda-python (pycuda has no graph API), in thread-local capture
mode (another thread's CUDA calls neither join nor break it), and later runs launch the graph. A
capture that fails ends the capture, destroys the partial graph, clears the pending CUDA error
(cudaGetLastError) and leaves the plain path in use (``graph_error`` says why).
``close`` frees the graph exec and graph, the device buffers, the TensorRT context, engine and
runtime (in that order) and the retained primary context (a run after close is refused by
:class:`edge.engine.Engine`).

CUDA context: pycuda's primary context of ``device_id`` is pushed around every call that touches
CUDA (load, run, close), so the engine may be loaded in one thread and run in another (the
inference worker), as pycuda requires a current context in the calling thread.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import numpy as np

from edge.engine import Engine, EngineOptions, TensorSpec
from edge.errors import BundleError, ProfileError

MIN_VERSION = (10, 3)


def import_trt() -> tuple[ModuleType, ModuleType]:
    """(tensorrt, pycuda.driver), lazily; a one-line ProfileError where they are missing."""
    try:
        import tensorrt as trt
    except ImportError:
        raise ProfileError("this profile runs TensorRT engines, but tensorrt is not importable here "
                           "(on a Jetson: python3-libnvinfer from JetPack, in a venv made with "
                           "--system-site-packages); use an onnxruntime profile such as x86-cpu"
                           ) from None  # fmt: skip
    try:
        version = tuple(int(x) for x in str(trt.__version__).split(".")[:2])
    except ValueError:
        version = (0, 0)
    if version < MIN_VERSION:
        raise ProfileError(f"TensorRT {trt.__version__} is not supported: the runtime needs 10.3+ "
                           "(JetPack 6.1+ or 7); JetPack 5 / TensorRT 8.5 is not supported")  # fmt: skip
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise ProfileError("the TensorRT backend needs pycuda: pip install 'legato-edge[jetson]' "
                           "(it builds from source on the device; nvcc must be on PATH)"
                           ) from None  # fmt: skip
    return trt, cuda


def make_logger() -> Any:
    """A trt.ILogger that keeps warnings and errors (built here so importing this module never
    imports tensorrt, as Polygraphy does)."""
    import tensorrt as trt

    class CapturingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.lines: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity <= trt.ILogger.Severity.WARNING:
                self.lines.append(" ".join(str(msg).split()))

    return CapturingLogger()


class TrtEngine(Engine):
    """A deserialized TensorRT plan with pinned host buffers as ``inputs`` / ``outputs``."""

    def __init__(self, path: str | os.PathLike[str], options: EngineOptions | None = None,
                 name: str | None = None, key: Mapping[str, Any] | None = None, ident: Any = None,
                 shapes: Mapping[str, tuple[int, ...]] | None = None,
                 dla_core: int | None = None) -> None:  # fmt: skip
        trt, cuda = import_trt()
        self.trt, self.cuda = trt, cuda
        opts = options or EngineOptions(backend="tensorrt")
        self.options = opts
        self.name = name or os.path.basename(str(path))
        self.graph_error: str | None = None
        self.dla_core = dla_core  # the DLA core the engine was built for (None: GPU)
        self._graph_exec: Any = None
        self._graph: Any = None
        self._cudart: Any = None
        self._device: dict[str, Any] = {}
        self._closed = False
        self._device_in: set[str] = set()  # inputs bound to another engine's device buffer: no H2D
        self._device_out: set[str] = set()  # outputs only read on the device by a bound engine: no D2H
        if key is not None:
            from edge.device import engine_key, key_mismatch

            current = engine_key(str(key.get("onnx_sha256", "")), ident)
            diff = key_mismatch(dict(key), current)
            if diff:
                raise BundleError(
                    f"{path}: engine was built for another device or software "
                    f"({'; '.join(diff)}); rebuild it on this device (legato flash)"
                )
        try:
            with open(path, "rb") as f:
                plan = f.read()
        except OSError as e:
            raise BundleError(f"{path}: cannot read the engine ({e.strerror or e})") from None
        cuda.init()
        self._ctx = cuda.Device(opts.device_id).retain_primary_context()
        self._ctx.push()
        try:
            self._load(plan, str(path), dict(shapes or {}))
        except BaseException:
            try:
                self._release()  # what was allocated before the failure
            finally:
                cuda.Context.pop()
                self._detach()  # and the retained context
            raise
        cuda.Context.pop()

    def _load(self, plan: bytes, src: str, shapes: dict[str, tuple[int, ...]]) -> None:
        import tensorrt as trt  # already imported by import_trt; typed by the stubs (typings/)

        cuda = self.cuda
        self._logger = make_logger()
        self._runtime = trt.Runtime(self._logger)
        if self.dla_core is not None:
            self._runtime.DLA_core = self.dla_core  # before deserializing: the plan runs on that core
        engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:
            why = " | ".join(self._logger.lines[-3:]) or "no reason logged"
            raise BundleError(f"{src}: TensorRT cannot deserialize the engine ({why}); rebuild it on this "
                              "device (legato flash)")  # fmt: skip
        self._engine = engine
        ctx = engine.create_execution_context()
        if ctx is None:
            raise BundleError(f"{src}: TensorRT could not create an execution context (out of memory?)")
        self._context = ctx
        self._stream = cuda.Stream()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = {n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}
        for n in names:  # every input shape first: outputs resolve from them
            dims = _dims(engine.get_tensor_shape(n))
            if n in inputs and any(x < 0 for x in dims):
                want = shapes.get(n)
                shape = tuple(want) if want is not None else tuple(x if x >= 0 else 1 for x in dims)
                if not ctx.set_input_shape(n, shape):
                    raise BundleError(f"{src}: TensorRT refused shape {shape} for input {n!r}")
        self.input_specs, self.output_specs = {}, {}
        self.inputs, self.outputs = {}, {}
        for n in names:
            shape = _dims(ctx.get_tensor_shape(n))  # resolved now (inputs set above)
            if any(x < 0 for x in shape):
                raise BundleError(f"{src}: the shape of {n!r} is unresolved ({shape}) after every input "
                                  "shape was set (a data-dependent output is not supported)")  # fmt: skip
            try:
                dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(n)))
            except TypeError:
                raise BundleError(f"{src}: tensor {n!r} has a dtype numpy lacks (bf16/fp8 at the boundary); "
                                  "bundles keep float32 at graph boundaries") from None  # fmt: skip
            spec = TensorSpec(n, shape, dtype)
            host = cuda.pagelocked_empty(shape, dtype)
            dev = cuda.mem_alloc(max(spec.nbytes, 1))  # sized for the resolved shape
            self._device[n] = dev
            if not ctx.set_tensor_address(n, int(dev)):
                raise BundleError(f"{src}: TensorRT refused the address of {n!r}")
            if n in inputs:
                self.input_specs[n], self.inputs[n] = spec, host
            else:
                self.output_specs[n], self.outputs[n] = spec, host

    # ---- running ---------------------------------------------------------------------------------
    def _enqueue(self) -> None:
        cuda, s = self.cuda, self._stream
        for n, host in self.inputs.items():
            if n not in self._device_in:
                cuda.memcpy_htod_async(self._device[n], host, s)
        if not self._context.execute_async_v3(s.handle):
            raise RuntimeError(f"{self.name}: TensorRT execute_async_v3 failed")
        for n, host in self.outputs.items():
            if n not in self._device_out:
                cuda.memcpy_dtoh_async(host, self._device[n], s)

    def _bind_impl(self, name: str, producer: Engine, output: str) -> None:
        if not (isinstance(producer, TrtEngine) and producer.options.device_id == self.options.device_id):
            super()._bind_impl(name, producer, output)  # another backend: through its host buffer
            return
        if self._graph_exec is not None or producer._graph_exec is not None:
            raise BundleError(f"{self.name}: bind {name!r} before the first run (a captured CUDA graph "
                              "keeps the addresses it was captured with)")  # fmt: skip
        self._ctx.push()
        try:
            if not self._context.set_tensor_address(name, int(producer._device[output])):
                raise BundleError(f"{self.name}: TensorRT refused {producer.name}'s {output!r} as {name!r}")
            self._device.pop(name).free()  # the input's own buffer is no longer used
        finally:
            self.cuda.Context.pop()
        self._device_in.add(name)
        producer._device_out.add(output)
        self.inputs[name] = producer.outputs[output]

    def _run_impl(self) -> None:
        self._ctx.push()
        try:
            if self._graph_exec is not None:
                _check(self._cudart.cudaGraphLaunch(self._graph_exec, self._stream.handle), "cudaGraphLaunch")
            else:
                self._enqueue()
            self._stream.synchronize()
            if self.options.cuda_graph and self._graph_exec is None and self.graph_error is None:
                self._capture()  # after the first (warm-up) run, as CUDA graphs need
        finally:
            self.cuda.Context.pop()

    def _capture(self) -> None:
        try:
            try:
                from cuda.bindings import runtime as cudart
            except ImportError:
                from cuda import cudart  # cuda-python < 12.6
        except ImportError:
            self.graph_error = "cuda-python is not installed (pip install cuda-python); no CUDA graph"
            return
        self._cudart = cudart
        h = self._stream.handle
        graph = None
        try:
            mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
            _check(cudart.cudaStreamBeginCapture(h, mode), "cudaStreamBeginCapture")
            try:
                self._enqueue()
            finally:
                res = cudart.cudaStreamEndCapture(h)  # always: a stream left capturing fails every later call
                graph = res[1] if isinstance(res, tuple) and len(res) > 1 else None
            _check(res, "cudaStreamEndCapture")
            self._graph_exec = _check(cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
            self._graph, graph = graph, None
        except RuntimeError as e:
            self.graph_error = str(e)
            self._graph_exec = None
            if graph is not None:
                cudart.cudaGraphDestroy(graph)  # the partial graph of a failed capture
            cudart.cudaGetLastError()  # clear the (non-sticky) error the failure left pending
            self._stream.synchronize()

    def close(self) -> None:
        if self._closed:
            return
        self._ctx.push()
        try:
            self._release()
        finally:
            self.cuda.Context.pop()
        self._detach()

    def _release(self) -> None:
        """Free in dependency order: graph exec, graph, buffers, context, engine, runtime."""
        self._closed = True
        rt = self._cudart
        if rt is not None:
            if self._graph_exec is not None:
                rt.cudaGraphExecDestroy(self._graph_exec)
            if self._graph is not None:
                rt.cudaGraphDestroy(self._graph)
        self._graph_exec = self._graph = None
        for d in self._device.values():
            d.free()
        self._device.clear()
        for attr in ("_context", "_engine", "_runtime"):  # TensorRT frees them when the last reference goes
            self.__dict__.pop(attr, None)

    def _detach(self) -> None:
        ctx, self.__dict__["_ctx"] = self.__dict__.get("_ctx"), None
        if ctx is not None:
            ctx.detach()  # the reference retain_primary_context() took


def _dims(d: Any) -> tuple[int, ...]:
    """trt.Dims -> tuple (Dims indexes like a tuple; the stubs give it no __iter__)."""
    return tuple(int(d[j]) for j in range(len(d)))


def _check(result: Any, what: str) -> Any:
    """cuda-python calls return (error, *values); raise on an error, return the value."""
    if not isinstance(result, tuple):
        result = (result,)
    err = result[0]
    if int(err) != 0:
        raise RuntimeError(f"{what} failed: {err}")
    return result[1] if len(result) == 2 else (result[1:] or None)

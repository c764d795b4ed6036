"""One engine interface: named inputs into preallocated outputs. No torch.

An :class:`Engine` owns one host buffer per graph input and output, allocated once at load time
with the graph's static shapes (a dynamic dimension is fixed by ``shapes=`` or defaults to 1).
The hot path is allocation-free:

    eng.inputs["y"][...] = y          # write into the engine's own input buffer
    eng.run()                         # outputs land in eng.outputs[...] (same arrays every call)
    v = eng.outputs["velocity"]

``__call__(feeds)`` is the convenient, copying form for parity tests and tools. Backends
implement only ``_run_impl`` (and build their buffers in ``__init__``), in the manner of
Polygraphy's runners; the base class checks names, shapes and dtypes once, and that the engine
is open on every call (``run`` after ``close`` is an :class:`EngineClosedError`).

Chaining graphs: ``head.bind("kv", prefix, "kv")`` feeds an input from another engine's output
where that output lies, with no copy by the caller: on onnxruntime (CPU) the input is bound to
the producer's output buffer; on TensorRT the producer's device buffer becomes the input's
address, so a K/V cache stays on the GPU between the prefix and every head call instead of
crossing PCIe N times per chunk. After ``bind``, ``inputs[name]`` is ``producer.outputs[output]``.

Backends: :class:`OrtEngine` (onnxruntime, IOBinding onto the numpy buffers, so a run copies
nothing and allocates no output) here, and ``edge.trt_engine.TrtEngine`` (TensorRT 10 +
pycuda, imported lazily). :func:`open_engine` picks one from the backend name a bundle and a
profile agree on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.errors import BundleError, ProfileError

GRAPH_OPT_LEVELS = ("disable", "basic", "extended", "all")


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, static shape, numpy dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


@dataclass(frozen=True)
class EngineOptions:
    """How to run a graph on this device (from the profile's [engine.*] table)."""

    backend: str = "onnxruntime"  # onnxruntime | tensorrt
    providers: tuple[str, ...] = ("CPUExecutionProvider",)  # onnxruntime providers, in priority order
    intra_op_threads: int = 1  # onnxruntime threads inside an op (0 = onnxruntime's default)
    inter_op_threads: int = 1  # onnxruntime threads across ops
    allow_spinning: bool = False  # onnxruntime worker threads spin between ops (cores are scarce here)
    graph_optimization: str = "all"  # disable | basic | extended | all
    cuda_graph: bool = False  # TensorRT: capture a CUDA graph after the first run
    device_id: int = 0  # GPU index (TensorRT, CUDA provider)
    provider_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backend not in ("onnxruntime", "tensorrt"):
            raise ProfileError(f"engine backend {self.backend!r} is not one of onnxruntime, tensorrt")
        if self.graph_optimization not in GRAPH_OPT_LEVELS:
            raise ProfileError(f"graph_optimization {self.graph_optimization!r} is not one of "
                               f"{', '.join(GRAPH_OPT_LEVELS)}")  # fmt: skip
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise ProfileError(f"thread counts must be >= 0, got intra {self.intra_op_threads}, "
                               f"inter {self.inter_op_threads}")  # fmt: skip
        if not self.providers:
            raise ProfileError("engine providers must name at least one onnxruntime provider")

    @staticmethod
    def from_table(table: Mapping[str, Any] | Any) -> EngineOptions:
        """From a profile's [engine.*] table (a dict) or any object with the same attributes;
        unknown keys are ignored here (the profile loader validates its own schema)."""
        get = table.get if isinstance(table, Mapping) else (lambda k, d=None: getattr(table, k, d))
        kw: dict[str, Any] = {}
        for f in ("backend", "intra_op_threads", "inter_op_threads", "allow_spinning",
                  "graph_optimization", "cuda_graph", "device_id"):  # fmt: skip
            v = get(f, None)
            if v is not None:
                kw[f] = v
        prov = get("providers", None)
        if prov is not None:
            kw["providers"] = (prov,) if isinstance(prov, str) else tuple(prov)
        popt = get("provider_options", None)
        if popt:
            kw["provider_options"] = dict(popt)
        return EngineOptions(**kw)


class EngineClosedError(RuntimeError):
    """An engine used after ``close``: a bug in the caller, named clearly."""


class Engine:
    """A loaded graph with preallocated host buffers. Subclasses fill ``input_specs`` /
    ``output_specs`` and ``inputs`` / ``outputs`` and implement ``_run_impl``."""

    name: str
    input_specs: dict[str, TensorSpec]
    output_specs: dict[str, TensorSpec]
    inputs: dict[str, np.ndarray]  # name -> host buffer the caller writes before run()
    outputs: dict[str, np.ndarray]  # name -> host buffer run() fills (same array every call)
    runs: int = 0
    _closed: bool = False

    def _alloc(self) -> None:
        self.inputs = {n: np.zeros(s.shape, s.dtype) for n, s in self.input_specs.items()}
        self.outputs = {n: np.zeros(s.shape, s.dtype) for n, s in self.output_specs.items()}

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosedError(f"engine {self.name} is closed: it cannot run or bind after close()")

    def run(self) -> None:
        """Run once on the current input buffers; results in ``outputs``. Allocation-free."""
        self._check_open()
        self._run_impl()
        self.runs += 1

    def _run_impl(self) -> None:
        raise NotImplementedError

    def bind(self, name: str, producer: Engine, output: str) -> None:
        """Feed input ``name`` from ``producer``'s output ``output`` (same shape and dtype) where
        it lies: no copy between the two runs, and on a device backend no host round trip. Bind
        before the first run (a captured CUDA graph keeps the addresses it was captured with)."""
        self._check_open()
        producer._check_open()
        if name not in self.input_specs:
            raise BundleError(
                f"{self.name}: no input {name!r} to bind (inputs: {', '.join(self.input_specs)})"
            )
        if output not in producer.output_specs:
            raise BundleError(f"{producer.name}: no output {output!r} to bind {self.name}.{name} to "
                              f"(outputs: {', '.join(producer.output_specs)})")  # fmt: skip
        mine, theirs = self.input_specs[name], producer.output_specs[output]
        if mine.shape != theirs.shape or mine.dtype != theirs.dtype:
            raise BundleError(f"{self.name} input {name!r} {mine.dtype}{list(mine.shape)} cannot take "
                              f"{producer.name} output {output!r} "
                              f"{theirs.dtype}{list(theirs.shape)}")  # fmt: skip
        self._bind_impl(name, producer, output)
        self.bound[name] = (producer.name, output)

    @property
    def bound(self) -> dict[str, tuple[str, str]]:
        """Bound inputs: name -> (producer engine, its output)."""
        if "_bound" not in self.__dict__:
            self._bound: dict[str, tuple[str, str]] = {}
        return self._bound

    def _bind_impl(self, name: str, producer: Engine, output: str) -> None:
        """Host backends whose run reads ``inputs`` by name: the input becomes the producer's
        output buffer. Backends that bind addresses at load time override this."""
        self.inputs[name] = producer.outputs[output]

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copy ``feeds`` into the input buffers, run, return copies of the outputs."""
        missing = set(self.input_specs) - set(feeds)
        extra = set(feeds) - set(self.input_specs)
        if missing or extra:
            raise ValueError(f"{self.name}: inputs missing {sorted(missing)}, unknown {sorted(extra)}; "
                             f"the graph takes {sorted(self.input_specs)}")  # fmt: skip
        for n, x in feeds.items():
            spec = self.input_specs[n]
            x = np.asarray(x)
            if x.shape != spec.shape:
                raise ValueError(
                    f"{self.name}: input {n!r} has shape {x.shape}, the engine needs {spec.shape}"
                )
            self.inputs[n][...] = x
        self.run()
        return {n: v.copy() for n, v in self.outputs.items()}

    def close(self) -> None:
        """Release backend resources (idempotent)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}  # fmt: skip


def _static_shape(name: str, shape: list[Any], override: tuple[int, ...] | None,
                  source: str) -> tuple[int, ...]:  # fmt: skip
    if override is not None:
        if len(override) != len(shape):
            raise BundleError(f"{source}: shape {override} for {name!r} has rank {len(override)}, "
                              f"the graph's is {len(shape)}")  # fmt: skip
        for want, have in zip(override, shape, strict=True):
            if isinstance(have, int) and have > 0 and have != want:
                raise BundleError(
                    f"{source}: {name!r} is fixed at {tuple(shape)} in the graph, not {override}"
                )
        return tuple(int(x) for x in override)
    # A symbolic or unknown dimension (batch) defaults to 1: the robot runs one observation.
    return tuple(int(x) if isinstance(x, int) and x > 0 else 1 for x in shape)


class OrtEngine(Engine):
    """onnxruntime on preallocated numpy buffers through IOBinding.

    Every input and output is bound once, by pointer, to this engine's numpy arrays (CPU), so
    ``run`` is one ``run_with_iobinding`` call: no feed dict, no output allocation. On another
    provider (CUDA, TensorRT EP) onnxruntime copies to and from the device inside the run.
    """

    def __init__(self, path: str | os.PathLike[str], options: EngineOptions | None = None,
                 shapes: Mapping[str, tuple[int, ...]] | None = None,
                 name: str | None = None) -> None:  # fmt: skip
        import onnxruntime as ort

        opts = options or EngineOptions()
        self.name = name or os.path.basename(str(path))
        self.options = opts
        so = ort.SessionOptions()
        so.intra_op_num_threads = opts.intra_op_threads
        so.inter_op_num_threads = opts.inter_op_threads
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[opts.graph_optimization]
        spin = "1" if opts.allow_spinning else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", spin)
        so.add_session_config_entry("session.inter_op.allow_spinning", spin)
        so.log_severity_level = 3
        available = set(ort.get_available_providers())
        missing = [p for p in opts.providers if p not in available]
        if missing:
            raise ProfileError(f"onnxruntime here lacks provider(s) {', '.join(missing)} (available: "
                               f"{', '.join(sorted(available))}); pick another profile")  # fmt: skip
        providers = [(p, dict(opts.provider_options.get(p, {}))) for p in opts.providers]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as e:  # onnxruntime raises its own types for a corrupt or missing file
            raise BundleError(f"{path}: onnxruntime cannot load the graph ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None  # fmt: skip
        shapes = dict(shapes or {})
        src = str(path)

        def spec(arg: Any) -> TensorSpec:
            if arg.type not in _ORT_DTYPES:
                raise BundleError(f"{src}: {arg.name!r} has type {arg.type}, not supported by the runtime")
            return TensorSpec(arg.name, _static_shape(arg.name, arg.shape, shapes.get(arg.name), src),
                              np.dtype(_ORT_DTYPES[arg.type]))  # fmt: skip

        self.input_specs = {a.name: spec(a) for a in self.session.get_inputs()}
        self.output_specs = {a.name: spec(a) for a in self.session.get_outputs()}
        unknown = set(shapes) - set(self.input_specs) - set(self.output_specs)
        if unknown:
            raise BundleError(f"{src}: shapes given for unknown tensors {sorted(unknown)}")
        self._alloc()
        self._binding = self.session.io_binding()
        for n, buf in self.inputs.items():
            self._binding.bind_input(n, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
        for n, buf in self.outputs.items():
            self._binding.bind_output(n, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
        self._run_options = ort.RunOptions()

    def _run_impl(self) -> None:
        self.session.run_with_iobinding(self._binding, self._run_options)

    def _bind_impl(self, name: str, producer: Engine, output: str) -> None:
        buf = producer.outputs[output]
        if not (buf.flags.c_contiguous and buf.flags.aligned):
            raise BundleError(f"{producer.name} output {output!r} is not a contiguous host buffer")
        self.inputs[name] = buf
        self._binding.bind_input(name, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)

    def close(self) -> None:
        self._closed = True
        self.__dict__.pop("_binding", None)
        self.__dict__.pop("session", None)


def open_engine(path: str | os.PathLike[str], options: EngineOptions | None = None,
                shapes: Mapping[str, tuple[int, ...]] | None = None, name: str | None = None,
                **trt_kwargs: Any) -> Engine:  # fmt: skip
    """Load ``path`` with the backend in ``options`` (onnxruntime by default). TensorRT imports
    tensorrt and pycuda only here; their absence is a one-line :class:`ProfileError`."""
    opts = options or EngineOptions()
    if opts.backend == "tensorrt":
        from edge.trt_engine import TrtEngine

        return TrtEngine(path, opts, name=name, shapes=shapes, **trt_kwargs)
    return OrtEngine(path, opts, shapes=shapes, name=name)

"""TensorRT engine builder on the TensorRT 10 Python API (10.3 on JetPack 6 through 10.13+ on
JetPack 7). tensorrt is imported lazily, only inside ``build_engine``/``build_engines``; this
module imports no torch, so `legato flash` can build engines on the device from a bundle.

What a build does (docs/jetson.md, "Engines (TensorRT)"):
- a STRONGLY_TYPED network parsed from the bundle's ONNX: precision comes from the graph
  (fp16 weights/compute, or Q/DQ for int8), never from builder flags;
- a workspace pool limit from the profile (``engine.<graph>.workspace_mb``);
- a timing cache at ``engines/timing.cache``, loaded when present and saved after each build;
- a DLA core with GPU fallback where the profile asks (refused when the device has none);
- static shapes (the bundle's graphs are batch 1 with fixed shapes: no optimization profile).
Each engine is keyed (edge.device.engine_key) by TensorRT, CUDA, GPU, compute capability,
L4T/JetPack and the ONNX sha256.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from edge.device import engine_key, identify
from edge.errors import BundleError, LegatoError
from edge.profiles import EngineSettings, Profile

TIMING_CACHE = "timing.cache"
MIN_VERSION = (10, 3)


class TensorRTUnavailable(LegatoError):
    """TensorRT cannot be imported here: engines are built on the device."""


def import_tensorrt() -> ModuleType:
    """The tensorrt module (lazily; tests put a fake in sys.modules), 10.3 or later."""
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTUnavailable(
            "TensorRT is not installed here; engines are built on the device at flash time (legato flash)"
        ) from None
    version = tuple(int(x) for x in str(trt.__version__).split(".")[:2])
    if version < MIN_VERSION:
        raise TensorRTUnavailable(
            f"TensorRT {trt.__version__} is too old: 10.3+ is supported (JetPack 6.1+); "
            "JetPack 5 / TensorRT 8.5 is not"
        )
    return trt


def build_engine(
    onnx_path: Path, plan_path: Path, settings: EngineSettings, cache_path: Path
) -> dict[str, Any]:
    """Build one serialized engine; returns its builder flags for the manifest. Type-checked
    against the TensorRT 10.13 stubs (typings/, `make lint`)."""
    import_tensorrt()
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(parser.get_error(i).desc() for i in range(parser.num_errors))
        raise BundleError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb << 20)
    if settings.dla_core is not None:
        if builder.num_DLA_cores == 0:
            raise BundleError(
                f"{onnx_path.name}: the profile asks for DLA core {settings.dla_core} but this "
                "device has no DLA"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = settings.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    cache_bytes = cache_path.read_bytes() if cache_path.exists() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BundleError(f"TensorRT could not build an engine from {onnx_path.name} (see the log above)")
    plan_path.write_bytes(bytes(plan))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    return {
        "strongly_typed": True,
        "workspace_mb": settings.workspace_mb,
        "dla_core": settings.dla_core,
        "gpu_fallback": settings.dla_core is not None,
        "timing_cache": f"engines/{TIMING_CACHE}",
    }


def build_engines(profile: Profile, bundle: Path, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Engines for every graph whose profile backend is tensorrt, into BUNDLE/engines/.
    Returns the manifest's `engines` section."""
    from edge.bundle import sha256_file

    wanted = [
        g
        for g in ("prefix", "flow_head", "fused")
        if (bundle / f"{g}.onnx").exists() and profile.engine(g).backend == "tensorrt"
    ]
    if not wanted:
        say(f"    --engines: profile {profile.name} runs every graph on onnxruntime; no engines to build")
        return {}
    trt = import_tensorrt()
    folder = bundle / "engines"
    folder.mkdir(exist_ok=True)
    ident = identify()
    out: dict[str, Any] = {}
    for g in wanted:
        onnx_path = bundle / f"{g}.onnx"
        say(f"    building {g} engine (TensorRT {trt.__version__})")
        flags = build_engine(onnx_path, folder / f"{g}.plan", profile.engine(g), folder / TIMING_CACHE)
        out[g] = {
            "file": f"engines/{g}.plan",
            "sha256": sha256_file(folder / f"{g}.plan"),
            "key": engine_key(sha256_file(onnx_path), ident),
            "flags": flags,
        }
    return out

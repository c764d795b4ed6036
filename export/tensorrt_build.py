"""TensorRT engine builder on the TensorRT 10 Python API (10.3 on JetPack 6 through 10.13+ on
JetPack 7). tensorrt is imported lazily, only inside ``build_engine``/``build_engines``; this
module imports no torch, so `legato flash` can build engines on the device from a bundle.

What a build does (docs/jetson.md, "Engines (TensorRT)"):
- a STRONGLY_TYPED network parsed from the bundle's ONNX: precision comes from the graph
  (fp16 weights/compute, or Q/DQ for int8), never from builder flags;
- a workspace pool limit from the profile (``engine.<graph>.workspace_mb``);
- a timing cache, one file per TensorRT version and compute capability in ``cache_dir``
  (`legato flash` keeps it in DEST/cache, outside the releases, so it survives flashes; never in
  the bundle, which holds exactly what its manifest lists): loaded
  when present, written atomically after each build. A cache TensorRT refuses
  (``set_timing_cache`` returns false: another device or version) is replaced by a fresh one;
- a DLA core with GPU fallback where the profile asks (refused when the device has none, and
  for an fp32 graph: DLA runs fp16 and int8 only, so every layer would silently run on the GPU);
- static shapes (the bundle's graphs are batch 1 with fixed shapes: no optimization profile).
TensorRT's own log (warnings and errors) is captured: a failed build raises a one-line
BundleError that carries its last lines, since over ssh only the agent's one reply line survives.
Each engine is keyed (edge.device.engine_key) by TensorRT, CUDA, GPU, compute capability,
L4T/JetPack and the ONNX sha256.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from edge.device import DeviceIdentity, engine_key, identify
from edge.errors import BundleError, LegatoError
from edge.profiles import EngineSettings, Profile
from edge.trt_engine import make_logger

MIN_VERSION = (10, 3)
LOG_LINES = 4  # TensorRT log lines carried in an error


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


def _log_tail(logger: Any) -> str:
    lines = getattr(logger, "lines", [])[-LOG_LINES:]
    return f"; TensorRT said: {' | '.join(lines)}" if lines else "; TensorRT logged nothing"


def cache_name(ident: DeviceIdentity) -> str:
    """'timing-trt10.3.0-sm87.cache': a cache embeds the device and TensorRT it was made on."""
    cc = (ident.compute_capability or "unknown").replace(".", "")
    return f"timing-trt{ident.tensorrt or 'unknown'}-sm{cc}.cache"


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/legato-edge/tensorrt (~/.cache/... by default): a timing cache outlives bundles."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "legato-edge" / "tensorrt"


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    settings: EngineSettings,
    cache_path: Path,
    precision: str = "fp16",
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Build one serialized engine; returns its builder flags for the manifest. Type-checked
    against the TensorRT 10.13 stubs (typings/, `make lint`)."""
    import_tensorrt()
    import tensorrt as trt

    from edge.outputs import atomic_file

    if settings.dla_core is not None and precision == "fp32":
        raise BundleError(
            f"{onnx_path.name}: the profile puts this fp32 graph on DLA core {settings.dla_core}, but DLA "
            "runs fp16 and int8 only (every layer would silently run on the GPU); export --precision fp16 or "
            "int8, or remove dla_core from the profile"
        )
    logger = make_logger()
    try:
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
        cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
        cache = config.create_timing_cache(cache_bytes)
        if not config.set_timing_cache(cache, ignore_mismatch=False):
            say(f"    {cache_path.name} does not match this device or TensorRT; timing from scratch")
            cache = config.create_timing_cache(b"")
            if not config.set_timing_cache(cache, ignore_mismatch=False):
                say("    TensorRT refused an empty timing cache; building without one")
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise BundleError(f"TensorRT could not build an engine from {onnx_path.name}{_log_tail(logger)}")
        plan_bytes = bytes(plan)
        final = config.get_timing_cache()
        cache_out = bytes(final.serialize()) if final is not None else None
    except LegatoError:
        raise
    except Exception as e:  # TensorRT raises RuntimeError / TypeError from its bindings
        raise BundleError(
            f"TensorRT failed on {onnx_path.name} ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
            f"{_log_tail(logger)}"
        ) from None
    atomic_file(plan_path, plan_bytes, replace=True, what="TensorRT engine")
    if cache_out:
        atomic_file(cache_path, cache_out, replace=True, what="TensorRT timing cache")
    return {
        "strongly_typed": True,
        "workspace_mb": settings.workspace_mb,
        "dla_core": settings.dla_core,
        "gpu_fallback": settings.dla_core is not None,
        "timing_cache": cache_path.name if cache_out else None,
        "warnings": len(getattr(logger, "lines", [])),
    }


def build_engines(
    profile: Profile, bundle: Path, say: Callable[[str], None] = print, cache_dir: Path | None = None
) -> dict[str, Any]:
    """Engines for every graph whose profile backend is tensorrt, into BUNDLE/engines/.
    Returns the manifest's `engines` section (written into manifest.json by `legato flash`; this
    function writes no manifest). The timing cache goes to `cache_dir` (`legato flash`: DEST/cache;
    default: the user's cache folder), never into the bundle, which holds only what it lists."""
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
    cache_path = Path(cache_dir or default_cache_dir()) / cache_name(ident)
    precisions = _graph_precisions(bundle)
    out: dict[str, Any] = {}
    for g in wanted:
        onnx_path = bundle / f"{g}.onnx"
        say(f"    building {g} engine (TensorRT {trt.__version__})")
        flags = build_engine(
            onnx_path, folder / f"{g}.plan", profile.engine(g), cache_path, precisions.get(g, "fp16"), say
        )
        out[g] = {
            "file": f"engines/{g}.plan",
            "sha256": sha256_file(folder / f"{g}.plan"),
            "key": engine_key(sha256_file(onnx_path), ident),
            "flags": flags,
        }
    return out


def _graph_precisions(bundle: Path) -> dict[str, str]:
    """graph -> precision from the bundle's manifest (empty when it has none)."""
    try:
        graphs = json.loads((bundle / "manifest.json").read_text()).get("graphs", {})
        return {g: str(e.get("precision")) for g, e in graphs.items() if isinstance(e, dict)}
    except (OSError, ValueError, AttributeError):
        return {}

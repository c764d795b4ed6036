"""The TensorRT engine builder: a fake tensorrt module checks the call sequence and arguments;
mypy checks the code against the TensorRT 10.13 stubs (typings/)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from edge.errors import BundleError
from edge.profiles import load_profile
from export import tensorrt_build

ROOT = Path(__file__).resolve().parents[2]


def fake_tensorrt(calls: list, version: str = "10.3.0", dla_cores: int = 2, parse_ok: bool = True):
    """A module with the TensorRT 10 names the builder uses; every call is recorded."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version

    class Enum:
        def __init__(self, **members):
            self.__dict__.update(members)

    trt.NetworkDefinitionCreationFlag = Enum(STRONGLY_TYPED=5)
    trt.MemoryPoolType = Enum(WORKSPACE="WORKSPACE")
    trt.DeviceType = Enum(DLA="DLA", GPU="GPU")
    trt.BuilderFlag = Enum(GPU_FALLBACK="GPU_FALLBACK", FP16="FP16")

    class Logger:
        WARNING = "WARNING"

        def __init__(self, severity):
            calls.append(("Logger", severity))

    class Cache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return b"cache:" + self.data[-8:] + b"+"

    class Config:
        def __init__(self):
            self.cache = None

        def __setattr__(self, k, v):
            if k in ("default_device_type", "DLA_core"):
                calls.append(("config." + k, v))
            object.__setattr__(self, k, v)

        def set_memory_pool_limit(self, pool, size):
            calls.append(("set_memory_pool_limit", pool, size))

        def set_flag(self, flag):
            calls.append(("set_flag", flag))

        def create_timing_cache(self, data):
            calls.append(("create_timing_cache", bytes(data)))
            return Cache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            calls.append(("set_timing_cache", ignore_mismatch))
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

    class Builder:
        num_DLA_cores = dla_cores

        def __init__(self, logger):
            calls.append(("Builder",))

        def create_network(self, flags):
            calls.append(("create_network", flags))
            return "network"

        def create_builder_config(self):
            return Config()

        def build_serialized_network(self, network, config):
            calls.append(("build_serialized_network", network))
            return b"PLAN"

    class Error:
        def desc(self):
            return "Unsupported op Foo"

    class OnnxParser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            calls.append(("OnnxParser", network))

        def parse_from_file(self, path):
            calls.append(("parse_from_file", Path(path).name))
            return parse_ok

        def get_error(self, i):
            return Error()

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, OnnxParser
    return trt


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    return b


def test_build_call_sequence_and_timing_cache_reuse(bundle_copy, monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(calls))
    prof = load_profile("jetson-agx-orin-64gb")  # prefix on DLA core 0, flow head on the GPU
    engines = tensorrt_build.build_engines(prof, bundle_copy, say=lambda m: None)
    assert set(engines) == {"prefix", "flow_head", "fused"}
    first = calls[: calls.index(("build_serialized_network", "network")) + 1]
    assert first == [
        ("Logger", "WARNING"),
        ("Builder",),
        ("create_network", 1 << 5),
        ("OnnxParser", "network"),
        ("parse_from_file", "prefix.onnx"),
        ("set_memory_pool_limit", "WORKSPACE", 4096 << 20),
        ("config.default_device_type", "DLA"),
        ("config.DLA_core", 0),
        ("set_flag", "GPU_FALLBACK"),
        ("create_timing_cache", b""),
        ("set_timing_cache", False),
        ("build_serialized_network", "network"),
    ]
    caches = [c[1] for c in calls if c[0] == "create_timing_cache"]
    assert (
        caches[0] == b"" and caches[1] == b"cache:+" and caches[2].startswith(b"cache:")
    )  # reused, in order
    assert not [
        c for c in calls[len(first) :] if c[0].startswith("config.")
    ]  # the flow head stays on the GPU
    assert (bundle_copy / "engines/flow_head.plan").read_bytes() == b"PLAN"
    assert (bundle_copy / "engines/timing.cache").exists()
    key = engines["flow_head"]["key"]
    assert key["tensorrt"] == "10.3.0" and len(key["onnx_sha256"]) == 64
    assert engines["prefix"]["flags"]["dla_core"] == 0 and engines["prefix"]["flags"]["strongly_typed"]


def test_refusals(bundle_copy, monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(calls, dla_cores=0))
    with pytest.raises(BundleError, match="has no DLA"):
        tensorrt_build.build_engines(load_profile("jetson-agx-orin-64gb"), bundle_copy, say=lambda m: None)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(calls, parse_ok=False))
    with pytest.raises(BundleError, match="cannot parse prefix.onnx: Unsupported op Foo"):
        tensorrt_build.build_engines(load_profile("x86-cuda"), bundle_copy, say=lambda m: None)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(calls, version="8.5.2"))
    with pytest.raises(tensorrt_build.TensorRTUnavailable, match="JetPack 5 / TensorRT 8.5 is not"):
        tensorrt_build.build_engines(load_profile("x86-cuda"), bundle_copy, say=lambda m: None)


def test_without_tensorrt_engines_are_left_to_the_device(bundle_copy, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt raises ImportError
    lines: list[str] = []
    from export.pipeline import _engines

    assert _engines(load_profile("x86-cuda"), bundle_copy, lines.append) == {}
    assert lines == [
        "    --engines: TensorRT is not installed here; engines are built on the device at flash "
        "time (legato flash)"
    ]
    assert _engines(load_profile("x86-cpu"), bundle_copy, lines.append) == {}
    assert "no engines to build" in lines[-1]


def _mypy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_mypy_against_tensorrt_stubs(tmp_path):
    pytest.importorskip("mypy")
    ok = _mypy()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = tmp_path / "bad_trt.py"
    bad.write_text(
        "import tensorrt as trt\n\n\ndef run(ctx: trt.IExecutionContext, c: trt.IBuilderConfig) -> None:\n"
        "    ctx.execute_async_v2([], 0)\n    c.max_workspace_size = 1\n"
    )
    res = _mypy("--config-file", "pyproject.toml", str(bad))
    assert res.returncode == 1
    assert '"IExecutionContext" has no attribute "execute_async_v2"' in res.stdout
    assert '"IBuilderConfig" has no attribute "max_workspace_size"' in res.stdout

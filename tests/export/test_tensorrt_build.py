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


def fake_tensorrt(
    calls: list,
    version: str = "10.3.0",
    dla_cores: int = 2,
    parse_ok: bool = True,
    accept_cache=lambda data: True,
    give_cache: bool = True,
    build_ok: bool = True,
):
    """A module with the TensorRT 10 names the builder uses; every call is recorded.
    accept_cache(bytes) -> what set_timing_cache returns; give_cache False: get_timing_cache()
    returns None; build_ok False: the build logs errors and returns None."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version

    class Severity:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = 0, 1, 2, 3, 4

    class ILogger:
        Severity = None  # set below

        def __init__(self):
            calls.append(("ILogger",))

    ILogger.Severity = Severity
    trt.ILogger = ILogger

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
            if not accept_cache(cache.data):
                return False
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache if give_cache else None

    class Builder:
        num_DLA_cores = dla_cores

        def __init__(self, logger):
            calls.append(("Builder",))
            self.logger = logger

        def create_network(self, flags):
            calls.append(("create_network", flags))
            return "network"

        def create_builder_config(self):
            return Config()

        def build_serialized_network(self, network, config):
            calls.append(("build_serialized_network", network))
            if not build_ok:
                self.logger.log(Severity.ERROR, "[myelin] Out of memory: 2147483648 bytes requested\n")
                self.logger.log(Severity.INFO, "an info line is not kept")
                self.logger.log(Severity.ERROR, "Builder failed while configuring tactics.")
                return None
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
def bundle_copy(tiny_bundle, tmp_path, monkeypatch):
    """The tiny bundle, its manifest saying fp16 (what a TensorRT profile exports; the builder reads
    only the precision the manifest records). The default timing-cache folder is the test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    return with_precision(b, "fp16")


def with_precision(bundle: Path, precision: str) -> Path:
    import json

    m = json.loads((bundle / "manifest.json").read_text())
    for g in m["graphs"].values():
        g["precision"] = precision
    (bundle / "manifest.json").write_text(json.dumps(m))
    return bundle


def test_build_call_sequence_and_timing_cache_reuse(bundle_copy, monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(calls))
    prof = load_profile("jetson-agx-orin-64gb")  # prefix on DLA core 0, flow head on the GPU
    engines = tensorrt_build.build_engines(prof, bundle_copy, say=lambda m: None)
    assert set(engines) == {"prefix", "flow_head", "fused"}
    first = calls[: calls.index(("build_serialized_network", "network")) + 1]
    assert first == [
        ("ILogger",),  # the capturing logger (warnings and errors are kept for the error message)
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
    cache = bundle_copy.parent / "xdg/legato-edge/tensorrt" / engines["prefix"]["flags"]["timing_cache"]
    assert cache.name.startswith("timing-trt10.3.0-sm") and cache.is_file()  # one per TensorRT and GPU
    assert sorted(p.name for p in (bundle_copy / "engines").iterdir()) == [  # plans only: written
        "flow_head.plan", "fused.plan", "prefix.plan"]  # atomically, no cache inside the bundle  # fmt: skip
    assert not [p for p in cache.parent.iterdir() if ".tmp-" in p.name]
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


def _build(profile: str, bundle: Path, lines: list | None = None, **kw):
    say = lines.append if lines is not None else (lambda line: None)
    return tensorrt_build.build_engines(load_profile(profile), bundle, say=say, **kw)


def test_a_timing_cache_tensorrt_refuses_is_replaced_by_a_fresh_one(bundle_copy, monkeypatch, tmp_path):
    calls: list = []
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    trt = fake_tensorrt(calls, accept_cache=lambda data: data != b"from another device")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    name = tensorrt_build.cache_name(tensorrt_build.identify())
    (cache_dir / name).write_bytes(b"from another device")
    lines: list = []
    engines = _build("x86-cuda", bundle_copy, lines, cache_dir=cache_dir)
    assert set(engines) == {"prefix", "flow_head", "fused"}
    assert any("does not match this device or TensorRT" in ln for ln in lines)
    created = [c[1] for c in calls if c[0] == "create_timing_cache"]
    assert created[:2] == [b"from another device", b""]  # the refused one, then a fresh one
    assert (cache_dir / name).read_bytes().startswith(b"cache:")  # replaced by what this build timed


def test_no_timing_cache_from_tensorrt_is_not_an_error(bundle_copy, monkeypatch, tmp_path):
    """get_timing_cache() may return None: today's AttributeError, which the flash agent did not catch."""
    calls: list = []
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(calls, give_cache=False))
    engines = _build("x86-cuda", bundle_copy, cache_dir=tmp_path / "cache")
    assert engines["prefix"]["flags"]["timing_cache"] is None and not (tmp_path / "cache").exists()
    assert (bundle_copy / "engines/prefix.plan").read_bytes() == b"PLAN"


def test_a_failed_build_carries_tensorrts_log_in_one_line(bundle_copy, monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(calls, build_ok=False))
    with pytest.raises(BundleError) as e:
        _build("x86-cuda", bundle_copy)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(
        "TensorRT could not build an engine from prefix.onnx; TensorRT said:"
    )
    assert (
        "[myelin] Out of memory: 2147483648 bytes requested | Builder failed while configuring tactics."
        in msg
    )
    assert "info line" not in msg


def test_an_fp32_graph_on_dla_is_refused(tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    calls: list = []
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(calls))
    b = tmp_path / "fp32"
    shutil.copytree(tiny_bundle, b)
    with pytest.raises(BundleError, match="fp32 graph on DLA core 0, but DLA runs fp16 and int8 only"):
        _build("jetson-agx-orin-64gb", b)
    assert ("build_serialized_network", "network") not in calls  # refused before TensorRT builds


NX_FACTS = {
    "soc": "orin", "model": "NVIDIA Jetson Orin NX Engineering Reference Developer Kit", "l4t": "36.4.3",
    "jetpack": "6.2", "tensorrt": "10.3.0", "cuda": "12.6", "gpu": "Orin", "compute_capability": "8.7",
}  # fmt: skip


def test_the_timing_cache_survives_flashes(tmp_path, monkeypatch, capsys):
    """`legato flash` builds on the target through the real builder (a fake tensorrt): the cache
    lives in DEST/cache, outside the releases, and the next flash's build starts from it."""
    sys.path.insert(0, str(ROOT / "tests/deploy"))
    from bundles import make_bundle

    from deploy import doctor
    from legato.cli import main

    calls: list = []
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(calls))
    monkeypatch.setattr(doctor, "facts", lambda *a, **k: dict(NX_FACTS))
    dest = tmp_path / "robot"
    for i, data in enumerate((b"v1", b"v2")):
        b = make_bundle(tmp_path / f"b{i}", profile="jetson-orin-nx-16gb", data=data)
        rc = main(["flash", "--bundle", str(b), "--profile", "jetson-orin-nx-16gb", "--target", str(dest)])
        assert rc == 0, capsys.readouterr().err
    caches = list((dest / "cache").iterdir())
    assert len(caches) == 1 and caches[0].name.startswith("timing-trt10.3.0-sm")
    assert not list((dest / "releases").glob("*/engines/timing*"))
    created = [c[1] for c in calls if c[0] == "create_timing_cache"]
    assert created[0] == b"" and created[2].startswith(b"cache:")  # the second flash reused the first's
    assert main(["flash", "--check", "--target", str(dest)]) == 0

"""This device's identity, for TensorRT engine keys (docs/bundle.md, "engines"). No torch.

Each reader takes an injectable root (``/`` on the device, a temporary folder in tests) or
module, and returns None for what is absent: a workstation has no /etc/nv_tegra_release, a
machine without TensorRT has no version. ``engine_key(onnx_sha256)`` assembles the key that a
built engine records and a loader compares field by field (``key_mismatch``).
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# L4T release -> JetPack (docs: shared/jetson-tensorrt.md table); first match wins.
_JETPACK = (("36.4", "6.1/6.2"), ("36.3", "6.0"), ("35.", "5.1"), ("38.", "7.0/7.1"), ("39.", "7.2"))


def l4t_release(root: str | Path = "/") -> str | None:
    """'36.4.3' from the first line of /etc/nv_tegra_release ('# R36 (release), REVISION: 4.3, ...')."""
    try:
        first = (Path(root) / "etc/nv_tegra_release").read_text(errors="replace").splitlines()[0]
    except (OSError, IndexError):
        return None
    m = re.match(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", first)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def jetpack_release(l4t: str | None) -> str | None:
    if l4t is None:
        return None
    for prefix, jp in _JETPACK:
        if l4t.startswith(prefix):
            return jp
    return None


def device_model(root: str | Path = "/") -> str | None:
    """'/proc/device-tree/model' without its trailing NUL ("NVIDIA Jetson AGX Orin Developer Kit")."""
    try:
        text = (Path(root) / "proc/device-tree/model").read_bytes().rstrip(b"\x00").decode(errors="replace")
    except OSError:
        return None
    return text.strip() or None


def tensorrt_version(module: str = "tensorrt") -> str | None:
    """The importable TensorRT's version (imported lazily; None when absent or broken)."""
    try:
        trt = importlib.import_module(module)
    except Exception:  # an ImportError, or a broken install raising anything on import
        return None
    v = getattr(trt, "__version__", None)
    return str(v) if v else None


def _nvidia_smi(query: str, runner: Any = subprocess.run) -> str | None:
    if shutil.which("nvidia-smi") is None and runner is subprocess.run:
        return None
    try:
        out = runner(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    return out.stdout.strip().splitlines()[0].strip()


def cuda_version(root: str | Path = "/", runner: Any = subprocess.run) -> str | None:
    """CUDA toolkit version: /usr/local/cuda/version.json (CUDA 11+), else nvcc --version."""
    import json

    try:
        data = json.loads((Path(root) / "usr/local/cuda/version.json").read_text())
        return (
            str(data["cuda"]["version"]).rsplit(".", 1)[0]
            if data["cuda"]["version"].count(".") > 1
            else str(data["cuda"]["version"])
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    nvcc = Path(root) / "usr/local/cuda/bin/nvcc"
    if runner is subprocess.run and not nvcc.exists():
        return None
    try:
        out = runner([str(nvcc), "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release (\d+\.\d+)", out.stdout or "")
    return m.group(1) if m else None


def gpu_name(root: str | Path = "/", runner: Any = subprocess.run) -> str | None:
    """The GPU's name: nvidia-smi on discrete GPUs; on Jetson (no nvidia-smi on JetPack 6) the
    integrated GPU is named after the SoC read from the device-tree model."""
    name = _nvidia_smi("name", runner)
    if name:
        return name
    model = device_model(root) or ""
    for soc in ("Thor", "Orin", "Xavier"):
        if soc in model:
            return soc
    return None


def compute_capability(root: str | Path = "/", runner: Any = subprocess.run) -> str | None:
    """'8.7': nvidia-smi's compute_cap, else the SoC's known value (Orin 8.7, Thor 11.0, Xavier 7.2)."""
    cc = _nvidia_smi("compute_cap", runner)
    if cc:
        return cc
    return {"Orin": "8.7", "Thor": "11.0", "Xavier": "7.2"}.get(gpu_name(root, runner) or "")


@dataclass(frozen=True)
class DeviceIdentity:
    tensorrt: str | None
    cuda: str | None
    gpu: str | None
    compute_capability: str | None
    l4t: str | None
    jetpack: str | None
    model: str | None

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)


def identify(
    root: str | Path = "/", runner: Any = subprocess.run, trt_module: str = "tensorrt"
) -> DeviceIdentity:
    l4t = l4t_release(root)
    return DeviceIdentity(
        tensorrt=tensorrt_version(trt_module),
        cuda=cuda_version(root, runner),
        gpu=gpu_name(root, runner),
        compute_capability=compute_capability(root, runner),
        l4t=l4t,
        jetpack=jetpack_release(l4t),
        model=device_model(root),
    )


def engine_key(onnx_sha256: str, ident: DeviceIdentity | None = None) -> dict[str, str | None]:
    """The key an engine is stored under: who built it, on what, from which ONNX."""
    i = ident or identify()
    return {
        "tensorrt": i.tensorrt,
        "cuda": i.cuda,
        "gpu": i.gpu,
        "compute_capability": i.compute_capability,
        "l4t": i.l4t,
        "jetpack": i.jetpack,
        "onnx_sha256": onnx_sha256,
    }


def key_mismatch(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between an engine's stored key and this device's ([] = match)."""
    return [
        f"{k}: engine {stored.get(k)!r}, device {current.get(k)!r}"
        for k in sorted(set(stored) | set(current))
        if stored.get(k) != current.get(k)
    ]

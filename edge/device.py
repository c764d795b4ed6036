"""This device's identity, for TensorRT engine keys (docs/bundle.md, "engines"), and the match
of a profile's [device] table against it (`legato flash`, `legato doctor`). No torch.

Each reader takes an injectable root (``/`` on the device, a temporary folder in tests) or
module, and returns None for what is absent: a workstation has no /etc/nv_tegra_release, a
machine without TensorRT has no version. ``engine_key(onnx_sha256)`` assembles the key that a
built engine records and a loader compares (``key_mismatch``: the fields a plan depends on).

Jetsons update under a flashed bundle (``apt upgrade`` moves JetPack 6.2 to 6.2.2, L4T 36.4 to
36.5) and ship with firmware that renames the board (the Orin Nano with the Super firmware reads
"... Engineering Reference Developer Kit Super"), so a profile matches a device by board family
and by the TensorRT major.minor its engines are built with, never by exact strings.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# L4T release -> JetPack, most specific first (NVIDIA's JetPack archive; shared/jetson-tensorrt.md).
_JETPACK = (
    ("36.4.0", "6.1"), ("36.4.3", "6.2"), ("36.4.4", "6.2.1"), ("36.4", "6.1/6.2"), ("36.5", "6.2.2"),
    ("36.3", "6.0"), ("35.", "5.1"), ("38.2", "7.0"), ("38.4", "7.1"), ("38.", "7.0/7.1"), ("39.", "7.2"),
)  # fmt: skip
# L4T major.minor -> the TensorRT major.minor JetPack ships on it. R36.4 and R36.5 (JetPack 6.1 to
# 6.2.2) share TensorRT 10.3, R38 (JetPack 7.0, 7.1) 10.13; R39's 10.16 is unconfirmed.
L4T_TENSORRT = {"35.": "8.5", "36.3": "8.6", "36.4": "10.3", "36.5": "10.3", "38.": "10.13", "39.": "10.16"}
SUPPORTED_TENSORRT = (10, 3)  # TensorRT 10.3+: JetPack 6.1 and later, JetPack 7
UNSUPPORTED_JETPACK = "JetPack 5 / TensorRT 8.5 (and JetPack 6.0 / TensorRT 8.6) is not supported"
# Fields of an engine key that decide whether a plan loads: TensorRT's exact version, the GPU and
# the ONNX it came from. CUDA, L4T and JetPack are recorded for people (an apt upgrade that keeps
# TensorRT keeps the engines: TensorRT itself refuses a plan it cannot run, and says why).
KEY_BINDING = ("tensorrt", "compute_capability", "gpu", "onnx_sha256")
HEADER_UART = "3100000.serial"  # the 40-pin header UART (pins 8/10) on Orin Nano / NX dev kits
_FAMILIES = (  # (family, words the device-tree model must contain), first match wins
    ("agx-thor", ("thor",)),
    ("agx-orin", ("agx", "orin")),
    ("orin-nx", ("orin", "nx")),
    ("orin-nano", ("orin", "nano")),
    ("xavier-nx", ("xavier", "nx")),
    ("agx-xavier", ("agx", "xavier")),
    ("nano", ("nano",)),
)


def _mm(v: str | None) -> str:
    """'36.4' from '36.4.3', '10.3' from '10.3.0.30'."""
    return ".".join(str(v).split(".")[:2])


def _version(v: str | None) -> tuple[int, ...]:
    out = []
    for part in str(v or "").split("."):
        if not part.isdigit():
            break
        out.append(int(part))
    return tuple(out)


def l4t_release(root: str | Path = "/") -> str | None:
    """'36.4.3' from the first line of /etc/nv_tegra_release ('# R36 (release), REVISION: 4.3, ...')."""
    try:
        first = (Path(root) / "etc/nv_tegra_release").read_text(errors="replace").splitlines()[0]
    except (OSError, IndexError):
        return None
    m = re.match(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", first)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def _release_match(l4t: str, prefix: str) -> bool:
    """'36.4.3' is in '36.4' and '36.' (component-wise: '36.4.1' is not in '36.4.10')."""
    want = [p for p in prefix.split(".") if p]
    return l4t.split(".")[: len(want)] == want


def jetpack_release(l4t: str | None) -> str | None:
    if l4t is None:
        return None
    return next((jp for prefix, jp in _JETPACK if _release_match(l4t, prefix)), None)


def tensorrt_for_l4t(l4t: str | None) -> str | None:
    """The TensorRT major.minor JetPack installs on this L4T release ('10.3' for 36.5.0), or None."""
    if l4t is None:
        return None
    return next((trt for prefix, trt in L4T_TENSORRT.items() if _release_match(l4t, prefix)), None)


def unsupported_l4t(l4t: str | None) -> str | None:
    """Why this L4T release cannot run bundles (JetPack 5, JetPack 6.0), or None."""
    trt = tensorrt_for_l4t(l4t)
    if l4t is None or (trt is not None and _version(trt) >= SUPPORTED_TENSORRT):
        return None
    if _version(l4t)[:1] >= (36,) and trt is None:
        return None  # a newer release than this table knows: judged by its TensorRT
    jp = jetpack_release(l4t) or "5 or older"
    return f"L4T {l4t} is JetPack {jp} (TensorRT {trt or '8 or older'}): {UNSUPPORTED_JETPACK}"


def device_model(root: str | Path = "/") -> str | None:
    """'/proc/device-tree/model' without its trailing NUL ("NVIDIA Jetson AGX Orin Developer Kit")."""
    try:
        text = (Path(root) / "proc/device-tree/model").read_bytes().rstrip(b"\x00").decode(errors="replace")
    except OSError:
        return None
    return text.strip() or None


def board_family(model: str | None) -> str | None:
    """The board family of a device-tree model string: 'orin-nano' for "NVIDIA Jetson Orin Nano
    Developer Kit", "NVIDIA Orin Nano Developer Kit" (JetPack 5) and "NVIDIA Jetson Orin Nano
    Engineering Reference Developer Kit Super" (JetPack 6.2 Super firmware) alike; None for a
    board this table does not know (a vendor carrier naming itself)."""
    words = set(re.findall(r"[a-z0-9]+", (model or "").lower()))
    return next((fam for fam, need in _FAMILIES if all(w in words for w in need)), None)


def memory_bytes(root: str | Path = "/") -> int | None:
    """MemTotal of /proc/meminfo in bytes (an Orin Nano 8 GB reports about 7.6 GiB: carve-outs)."""
    try:
        text = (Path(root) / "proc/meminfo").read_text(errors="replace")
    except OSError:
        return None
    m = re.search(r"^MemTotal:\s*(\d+)\s*kB", text, re.M)
    return int(m.group(1)) * 1024 if m else None


def header_uart(root: str | Path = "/") -> str | None:
    """'/dev/ttyTHS1': the ttyTHS* whose /sys/class/tty/<name>/device link ends in 3100000.serial.

    The 40-pin header's UART is ttyTHS0 on JetPack 5 and ttyTHS1 on JetPack 6.2 (the same
    controller, renumbered), so the name is found, never assumed."""
    base = Path(root) / "sys/class/tty"
    try:
        names = sorted(p.name for p in base.iterdir() if p.name.startswith("ttyTHS"))
    except OSError:
        return None
    for name in names:
        try:
            link = os.readlink(base / name / "device")
        except OSError:
            continue
        if link.rstrip("/").endswith(HEADER_UART):
            return f"/dev/{name}"
    return None


def cc_satisfies(want: str | None, got: str | None) -> bool:
    """Whether compute capability `got` ('8.9') meets a profile's `want`: exact ('8.7', a Jetson
    SoC has one) or a minimum ('8.6+': Ampere or newer on a workstation)."""
    if not want or not got:
        return True  # nothing to compare
    if want.endswith("+"):
        return _version(got) >= _version(want[:-1])
    return _version(got) == _version(want)


def tensorrt_version(module: str = "tensorrt") -> str | None:
    """The importable TensorRT's version (imported lazily; None when absent or broken)."""
    try:
        trt = importlib.import_module(module)
    except Exception:  # an ImportError, or a broken install raising anything on import
        return None
    v = getattr(trt, "__version__", None)
    return str(v) if v else None


def _nvidia_smi(query: str, runner: Any = subprocess.run) -> str | None:
    """One field of `nvidia-smi --query-gpu`, or None (absent, failing, or "[N/A]")."""
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
    value = out.stdout.strip().splitlines()[0].strip()
    return None if value.strip("[]").lower() in ("n/a", "not supported", "") else value


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


_SOC_CC = {"Thor": "11.0", "Orin": "8.7", "Xavier": "7.2"}


def jetson_soc(root: str | Path = "/") -> str | None:
    """'Orin', 'Thor' or 'Xavier' from the device-tree model; None off a Jetson."""
    model = device_model(root) or ""
    return next((soc for soc in _SOC_CC if soc in model), None)


def gpu_name(root: str | Path = "/", runner: Any = subprocess.run) -> str | None:
    """The GPU's name. On a Jetson, the SoC from the device-tree model: JetPack 6 does ship an
    nvidia-smi, but it says "Orin (nvgpu)" and "[N/A]" for most fields, and JetPack 5 has none.
    Elsewhere, nvidia-smi's name."""
    return jetson_soc(root) or _nvidia_smi("name", runner)


def compute_capability(root: str | Path = "/", runner: Any = subprocess.run) -> str | None:
    """'8.7': the SoC's (Orin 8.7, Thor 11.0, Xavier 7.2) on a Jetson, else nvidia-smi's compute_cap."""
    soc = jetson_soc(root)
    if soc is not None:
        return _SOC_CC[soc]
    cc = _nvidia_smi("compute_cap", runner)
    return cc if cc and re.fullmatch(r"\d+\.\d+", cc) else None


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
    """Why a plan with key `stored` cannot run here ([] = it can): the fields of KEY_BINDING that
    differ. L4T, JetPack and CUDA may differ (an apt upgrade within one TensorRT release)."""
    return [
        f"{k}: engine {stored.get(k)!r}, device {current.get(k)!r}"
        for k in KEY_BINDING
        if stored.get(k) != current.get(k)
    ]


def profile_mismatch(device: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """How a profile's [device] table differs from a device's facts (``deploy.doctor.facts``:
    edge identity plus soc, memory_bytes); [] = the profile is for this device.

    Matched: the SoC; the board family (not the model string: firmware renames boards); the
    compute capability (exact, or a minimum "8.6+"); the L4T release by the TensorRT major.minor
    it ships (36.4 and 36.5 both carry TensorRT 10.3); the TensorRT major.minor importable on
    the target; the memory (a device with under 85 % of the profile's memory_gb is another
    module, e.g. an Orin NX 8 GB under the 16 GB profile)."""
    bad = []
    if device.get("soc") and device["soc"] != got.get("soc"):
        bad.append(f"profile soc {device['soc']}, target {got.get('soc')}")
        return bad  # the rest follows from the wrong family
    if device.get("soc") != "x86":
        pm, gm = device.get("model") or "", got.get("model") or ""
        pf, gf = board_family(pm), board_family(gm)
        if pf and gf:
            if pf != gf:
                bad.append(f"profile board {pf} ({pm!r}), target {gf} ({gm!r})")
        elif pm and gm and pm.lower() not in gm.lower() and gm.lower() not in pm.lower():
            bad.append(f"profile model {pm!r}, target {gm!r}")  # a board the family table lacks
    want_trt = device.get("tensorrt")
    if device.get("l4t"):
        l4t = got.get("l4t")
        if not l4t:
            bad.append(f"profile L4T {device['l4t']}, target has no /etc/nv_tegra_release")
        elif unsupported_l4t(l4t):
            bad.append(f"target {unsupported_l4t(l4t)}")
            return bad
        elif _version(l4t)[:1] != _version(device["l4t"])[:1]:
            bad.append(f"profile L4T {device['l4t']} (R{_version(device['l4t'])[0]}), target L4T {l4t}")
        elif want_trt and not got.get("tensorrt"):
            ships = tensorrt_for_l4t(l4t)
            if ships is None:
                bad.append(
                    f"target L4T {l4t}: which TensorRT it ships is unknown here, and none is importable"
                )
            elif ships != _mm(want_trt):
                bad.append(f"profile TensorRT {_mm(want_trt)}, target L4T {l4t} ships TensorRT {ships}")
    cc_want, cc_got = device.get("compute_capability"), got.get("compute_capability")
    if cc_want and cc_got and not cc_satisfies(cc_want, cc_got):
        bad.append(f"profile compute capability {cc_want}, target {cc_got}")
    if want_trt:
        if not got.get("tensorrt"):
            bad.append(f"profile TensorRT {want_trt}, target has no TensorRT for this Python")
        elif _mm(want_trt) != _mm(got["tensorrt"]):
            bad.append(f"profile TensorRT {want_trt}, target {got['tensorrt']}")
    mem, want_gb = got.get("memory_bytes"), device.get("memory_gb")
    if mem and want_gb and mem < 0.85 * float(want_gb) * 1e9:
        bad.append(f"profile memory {float(want_gb):g} GB, target has {mem / 1e9:.1f} GB")
    return bad

"""edge/device.py: this device's identity for engine keys, from injectable roots."""

from __future__ import annotations

import json
import subprocess

from edge import device


def _root(tmp_path, tegra: str | None, model: bytes | None, cuda: str | None = None):
    if tegra is not None:
        (tmp_path / "etc").mkdir(parents=True)
        (tmp_path / "etc/nv_tegra_release").write_text(tegra)
    if model is not None:
        (tmp_path / "proc/device-tree").mkdir(parents=True)
        (tmp_path / "proc/device-tree/model").write_bytes(model)
    if cuda is not None:
        (tmp_path / "usr/local/cuda").mkdir(parents=True)
        (tmp_path / "usr/local/cuda/version.json").write_text(
            json.dumps({"cuda": {"name": "CUDA SDK", "version": cuda}})
        )
    return tmp_path


def no_smi(cmd, **kw):
    return subprocess.CompletedProcess(cmd, 127, "", "not found")


def test_jetson_orin_identity(tmp_path):
    root = _root(
        tmp_path,
        "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan 8\n"
        "# KERNEL_VARIANT: oot\n",
        b"NVIDIA Jetson AGX Orin Developer Kit\x00",
        cuda="12.6.68",
    )
    ident = device.identify(root, runner=no_smi, trt_module="tensorrt_absent_here")
    assert ident.l4t == "36.4.3" and ident.jetpack == "6.1/6.2"
    assert ident.model == "NVIDIA Jetson AGX Orin Developer Kit"
    assert ident.gpu == "Orin" and ident.compute_capability == "8.7"
    assert ident.cuda == "12.6" and ident.tensorrt is None


def test_absent_pieces_are_none(tmp_path):
    ident = device.identify(tmp_path, runner=no_smi, trt_module="tensorrt_absent_here")
    assert ident == device.DeviceIdentity(None, None, None, None, None, None, None)
    assert device.l4t_release(_root(tmp_path / "x", "garbage\n", None)) is None


def test_discrete_gpu_from_nvidia_smi(tmp_path):
    def smi(cmd, **kw):
        out = {"--query-gpu=name": "NVIDIA RTX A4000\n", "--query-gpu=compute_cap": "8.6\n"}[cmd[1]]
        return subprocess.CompletedProcess(cmd, 0, out, "")

    assert device.gpu_name(tmp_path, smi) == "NVIDIA RTX A4000"
    assert device.compute_capability(tmp_path, smi) == "8.6"


def test_engine_key_and_mismatch():
    thor = device.DeviceIdentity(
        "10.13.3", "13.0", "Thor", "11.0", "38.2.0", "7.0/7.1", "NVIDIA Jetson AGX Thor"
    )
    orin = device.DeviceIdentity(
        "10.3.0", "12.6", "Orin", "8.7", "36.4.3", "6.1/6.2", "NVIDIA Jetson AGX Orin"
    )
    k1, k2 = device.engine_key("ab" * 32, thor), device.engine_key("ab" * 32, orin)
    assert set(k1) == {"tensorrt", "cuda", "gpu", "compute_capability", "l4t", "jetpack", "onnx_sha256"}
    assert device.key_mismatch(k1, k1) == []
    diff = device.key_mismatch(k1, k2)
    assert "compute_capability: engine '11.0', device '8.7'" in diff and len(diff) == 6

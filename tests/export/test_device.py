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
    assert ident.l4t == "36.4.3" and ident.jetpack == "6.2"
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
    assert "compute_capability: engine '11.0', device '8.7'" in diff
    assert [d.split(":")[0] for d in diff] == ["tensorrt", "compute_capability", "gpu"]  # what a plan needs


# Verbatim device files (public reports of real boards; see shared/docs/field-notes.md).
TEGRA_JP622 = (
    "# R36 (release), REVISION: 5.0, GCID: 43688277, BOARD: generic, EABI: aarch64, "
    "DATE: Fri Jan 16 03:50:45 UTC 2026\n# KERNEL_VARIANT: oot\nTARGET_USERSPACE_LIB_DIR=nvidia\n"
    "TARGET_USERSPACE_LIB_DIR_PATH=usr/lib/aarch64-linux-gnu/nvidia\n"
)
TEGRA_JP71 = (
    "# R38 (release), REVISION: 4.0, GCID: 43443517, BOARD: generic, EABI: aarch64, "
    "DATE: Wed Dec 31 00:15:19 UTC 2025\n# KERNEL_VARIANT: oot\n"
)
TEGRA_JP62 = (
    "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
    "DATE: Wed Jan  8 01:51:37 UTC 2025\n"
)
TEGRA_JP5 = (
    "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
    "DATE: Tue Aug  1 19:57:35 UTC 2023\n"
)
NANO_SUPER = b"NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super\x00"
NANO_DEVKIT = b"NVIDIA Jetson Orin Nano Developer Kit\x00"
NANO_JP5 = b"NVIDIA Orin Nano Developer Kit\x00"
NX_SUPER = b"NVIDIA Jetson Orin NX Engineering Reference Developer Kit Super\x00"
AGX = b"NVIDIA Jetson AGX Orin Developer Kit\x00"
THOR = b"NVIDIA Jetson AGX Thor Developer Kit\x00"
MEMINFO_NANO = "MemTotal:        7633536 kB\nMemFree:          213560 kB\nCmaTotal:         786432 kB\n"


def test_jetpack_6_2_2_and_7_1_releases_and_their_tensorrt(tmp_path):
    cases = [(TEGRA_JP622, "36.5.0", "6.2.2", "10.3"), (TEGRA_JP71, "38.4.0", "7.1", "10.13"),
             (TEGRA_JP62, "36.4.3", "6.2", "10.3"), (TEGRA_JP5, "35.4.1", "5.1", "8.5")]  # fmt: skip
    for i, (text, l4t, jp, trt) in enumerate(cases):
        root = _root(tmp_path / str(i), text, None)
        assert device.l4t_release(root) == l4t
        assert device.jetpack_release(l4t) == jp and device.tensorrt_for_l4t(l4t) == trt
    assert device.unsupported_l4t("36.5.0") is None and device.unsupported_l4t("38.4.0") is None
    why = device.unsupported_l4t("35.4.1")
    assert "JetPack 5 / TensorRT 8.5" in why and "not supported" in why
    assert "not supported" in device.unsupported_l4t("36.3.0")  # JetPack 6.0: TensorRT 8.6
    assert device.unsupported_l4t("36.9.1") is None  # a newer R36 than the table: judged by its TensorRT


def test_board_families_not_strings():
    fam = device.board_family
    for model in (NANO_SUPER, NANO_DEVKIT, NANO_JP5):
        assert fam(model.rstrip(b"\x00").decode()) == "orin-nano"
    assert fam(NX_SUPER.rstrip(b"\x00").decode()) == "orin-nx"
    assert fam(AGX.rstrip(b"\x00").decode()) == "agx-orin"
    assert fam(THOR.rstrip(b"\x00").decode()) == "agx-thor"
    assert fam("NVIDIA Jetson Nano Developer Kit") == "nano" and fam("reComputer J4012") is None


def test_nvidia_smi_on_jetpack_6_does_not_replace_the_soc(tmp_path):
    """JetPack 6 ships an nvidia-smi that names the GPU "Orin (nvgpu)" and answers [N/A]."""

    def jp6_smi(cmd, **kw):
        if cmd[0] != "nvidia-smi":
            return subprocess.CompletedProcess(cmd, 127, "", "not found")
        out = {"--query-gpu=name": "Orin (nvgpu)\n", "--query-gpu=compute_cap": "[N/A]\n"}[cmd[1]]
        return subprocess.CompletedProcess(cmd, 0, out, "")

    root = _root(tmp_path, TEGRA_JP622, NANO_SUPER)
    ident = device.identify(root, runner=jp6_smi, trt_module="tensorrt_absent_here")
    assert ident.gpu == "Orin" and ident.compute_capability == "8.7"
    # off a Jetson, a [N/A] answer is no answer
    assert device.compute_capability(tmp_path / "x86", jp6_smi) is None


def test_header_uart_is_found_by_its_controller(tmp_path):
    tty = tmp_path / "sys/class/tty"
    for name, ctrl in (("ttyTHS1", "3100000.serial"), ("ttyTHS2", "3130000.serial")):
        (tty / name).mkdir(parents=True)
        (tty / name / "device").symlink_to(f"../../../devices/platform/bus@0/{ctrl}")
    assert device.header_uart(tmp_path) == "/dev/ttyTHS1"
    assert device.header_uart(tmp_path / "none") is None


def test_memory_from_meminfo(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text(MEMINFO_NANO)
    assert device.memory_bytes(tmp_path) == 7633536 * 1024


def _facts(**kw):
    base = {"soc": "orin", "model": NANO_SUPER.rstrip(b"\x00").decode(), "l4t": "36.4.3",
            "tensorrt": "10.3.0", "compute_capability": "8.7", "gpu": "Orin",
            "memory_bytes": 7633536 * 1024}  # fmt: skip
    return {**base, **kw}


def test_profiles_match_jetsons_as_they_ship_and_update():
    from edge.profiles import load_profile

    nano = load_profile("jetson-orin-nano-8gb").to_dict()["device"]
    assert device.profile_mismatch(nano, _facts()) == []  # the Super firmware's name
    assert device.profile_mismatch(nano, _facts(model=NANO_DEVKIT.rstrip(b"\x00").decode())) == []
    assert device.profile_mismatch(nano, _facts(l4t="36.5.0")) == []  # JetPack 6.2.2 by apt upgrade
    assert device.profile_mismatch(nano, _facts(l4t="36.5.0", tensorrt=None)) == [
        "profile TensorRT 10.3.0, target has no TensorRT for this Python"
    ]
    bad = device.profile_mismatch(nano, _facts(model="NVIDIA Jetson AGX Orin Developer Kit"))
    assert bad == ["profile board orin-nano ('NVIDIA Jetson Orin Nano Engineering Reference Developer Kit "
                   "Super'), target agx-orin ('NVIDIA Jetson AGX Orin Developer Kit')"]  # fmt: skip
    jp5 = device.profile_mismatch(nano, _facts(l4t="35.4.1", tensorrt="8.5.2"))
    assert len(jp5) == 1 and "JetPack 5 / TensorRT 8.5" in jp5[0] and "not supported" in jp5[0]
    thor = load_profile("jetson-thor").to_dict()["device"]
    thor_facts = _facts(soc="thor", model=THOR.rstrip(b"\x00").decode(), l4t="38.4.0", tensorrt="10.13.3",
                        compute_capability="11.0", memory_bytes=128790100 * 1024)  # fmt: skip
    assert device.profile_mismatch(thor, thor_facts) == []  # JetPack 7.1
    nx = load_profile("jetson-orin-nx-16gb").to_dict()["device"]
    nx_facts = _facts(model=NX_SUPER.rstrip(b"\x00").decode(), memory_bytes=15388 << 20)
    assert device.profile_mismatch(nx, nx_facts) == []
    nx8 = device.profile_mismatch(nx, {**nx_facts, "memory_bytes": 7620 << 20})
    assert nx8 == ["profile memory 16 GB, target has 8.0 GB"]  # an Orin NX 8 GB shares the model string


def test_x86_cuda_is_ampere_or_newer():
    from edge.profiles import load_profile

    cuda = load_profile("x86-cuda").to_dict()["device"]
    facts = {"soc": "x86", "model": None, "tensorrt": "10.13.3", "compute_capability": "8.6"}
    for cc in ("8.6", "8.9", "9.0", "12.0"):
        assert device.profile_mismatch(cuda, {**facts, "compute_capability": cc}) == [], cc
    assert device.profile_mismatch(cuda, {**facts, "compute_capability": "7.5"}) == [
        "profile compute capability 8.6+, target 7.5"
    ]
    assert device.cc_satisfies("8.7", "8.7") and not device.cc_satisfies("8.7", "8.9")


def test_an_engine_survives_an_apt_upgrade_that_keeps_tensorrt():
    built = device.DeviceIdentity("10.3.0", "12.6", "Orin", "8.7", "36.4.3", "6.2", "Orin Nano")
    upgraded = device.DeviceIdentity("10.3.0", "12.6", "Orin", "8.7", "36.5.0", "6.2.2", "Orin Nano")
    key = device.engine_key("ab" * 32, built)
    assert device.key_mismatch(key, device.engine_key("ab" * 32, upgraded)) == []
    other_trt = device.DeviceIdentity("10.3.1", "12.6", "Orin", "8.7", "36.5.0", "6.2.2", "Orin Nano")
    assert device.key_mismatch(key, device.engine_key("ab" * 32, other_trt)) == [
        "tensorrt: engine '10.3.0', device '10.3.1'"
    ]

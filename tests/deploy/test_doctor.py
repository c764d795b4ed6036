"""`legato doctor` against fake device roots: /etc, /proc, /sys and /dev files written with the
verbatim contents from shared/docs/jetson-tensorrt.md, commands and modules injected."""

from __future__ import annotations

import getpass
import hashlib
import os
import subprocess
import types
from pathlib import Path

import pytest
from bundles import make_bundle

from deploy import doctor
from deploy.doctor import FAIL, OK, WARN, Env
from edge.profiles import load_profile
from legato.cli import main

# Verbatim from jetson-tensorrt.md ("..." included: the parser must take the first line as it comes).
TEGRA_R36 = "# R36 (release), REVISION: 4.3, GCID: ..., BOARD: generic, EABI: aarch64, DATE: ...\n"
TEGRA_R35 = "# R35 (release), REVISION: 4.1, GCID: ..., BOARD: generic, EABI: aarch64, DATE: ...\n"
NX_MODEL = b"NVIDIA Jetson Orin NX Engineering Reference Developer Kit\x00"
NANO_JP5_MODEL = b"NVIDIA Orin Nano Developer Kit\x00"
NVPMODEL_CONF = """< POWER_MODEL ID=0 NAME=MAXN_SUPER >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=1 NAME=10W >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=2 NAME=15W >
CPU_ONLINE CORE_0 1
< PM_CONFIG DEFAULT=2 >
"""
NX_KEY = {
    "tensorrt": "10.3.0",
    "cuda": "12.6",
    "gpu": "Orin",
    "compute_capability": "8.7",
    "l4t": "36.4.3",
    "jetpack": "6.1/6.2",
}


def fake_runner(nvpmodel: str = "MAXN_SUPER", mode_id: int = 0):
    def run(argv, **_kw):
        if argv[:2] == ["nvpmodel", "-q"]:
            text = f"NVPM WARN: fan mode is not set!\nNV Power Mode: {nvpmodel}\n{mode_id}\n"
            return subprocess.CompletedProcess(argv, 0, text, "")
        return subprocess.CompletedProcess(argv, 1, "", f"{argv[0]}: not found")  # nvidia-smi: none on Jetson

    return run


def fake_modules(**present: str):
    """tensorrt / pycuda / cuda / onnxruntime stand-ins with the versions given (absent otherwise)."""

    def module(name: str):
        if name not in present:
            return None
        m = types.SimpleNamespace(__version__=present[name], VERSION_TEXT=present[name])
        if name == "onnxruntime":
            m.get_available_providers = lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return m

    return module


NX = "jetson-orin-nx-16gb"
ALL = {"tensorrt": "10.3.0", "pycuda": "2025.1", "cuda.bindings": "12.6.0", "onnxruntime": "1.20.0"}


def jetson_root(
    tmp_path: Path,
    *,
    tegra=TEGRA_R36,
    model=NX_MODEL,
    port="ttyTHS1",
    port_group="dialout",
    pinned=True,
    key=NX_KEY,
    profile=NX,
    nvpmodel_conf=NVPMODEL_CONF,
    memory=None,
) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/nv_tegra_release").write_text(tegra)
    (root / "etc/nvpmodel.conf").write_text(nvpmodel_conf)
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(model)
    (root / "usr/local/cuda").mkdir(parents=True)
    (root / "usr/local/cuda/version.json").write_text('{"cuda": {"name": "CUDA SDK", "version": "12.6.68"}}')
    cpu = root / "sys/devices/system/cpu/cpu0/cpufreq"
    cpu.mkdir(parents=True)
    (cpu / "scaling_max_freq").write_text("1984000\n")
    (cpu / "scaling_min_freq").write_text("1984000\n" if pinned else "729600\n")
    (root / "dev").mkdir()
    dev = root / "dev" / port
    dev.write_text("")
    dev.chmod(0o660)
    gid = dev.stat().st_gid  # name the file's own group as the test wants it (no chown needed)
    (root / "etc/group").write_text(f"{port_group}:x:{gid}:robot\nrobot:x:{gid + 1}:\n")
    (root / "proc/locks").write_text("")
    bundle_dir = root / "opt/legato"
    rel = make_bundle(bundle_dir / "releases/tiny-1", profile=profile, engine_key=key, memory=memory)
    (bundle_dir / "current").symlink_to("releases/tiny-1")
    (rel / "profile.toml").write_text(load_profile(profile).path.read_text())
    return root


def env_for(root: Path, **kw) -> Env:
    base = dict(
        root=root,
        runner=fake_runner(),
        module=fake_modules(**ALL),
        machine="aarch64",
        python=(3, 10, 12),
        user="robot",
        groups=("robot", "dialout"),
        disk_free=lambda _p: 20 << 30,
    )
    return Env(**{**base, **kw})


def by_name(checks) -> dict[str, doctor.Check]:
    return {c.name: c for c in checks}


def test_healthy_orin_nx_is_ready(tmp_path):
    root = jetson_root(tmp_path)
    checks, facts = doctor.run_checks(env_for(root), load_profile(NX), "/opt/legato")
    bad = [c for c in checks if c.status != OK]
    assert bad == [], bad
    assert facts["l4t"] == "36.4.3" and facts["soc"] == "orin" and facts["compute_capability"] == "8.7"
    c = by_name(checks)
    assert c["jetpack"].detail.startswith("L4T 36.4.3, JetPack 6.2, NVIDIA Jetson Orin NX")
    assert c["nvpmodel"].detail == "mode MAXN_SUPER (0)"
    assert "engines flow_head match this device" in c["bundle"].detail
    assert doctor.format_checks(checks)[-1] == "doctor: ready to run"


def test_jetpack5_and_old_python_block(tmp_path):
    root = jetson_root(tmp_path, tegra=TEGRA_R35, model=NANO_JP5_MODEL)
    checks, facts = doctor.run_checks(env_for(root, python=(3, 8, 10)), None, "/opt/legato")
    c = by_name(checks)
    assert facts["l4t"] == "35.4.1"
    assert c["python"].status == FAIL and "3.8.10" in c["python"].detail
    assert c["jetpack"].status == FAIL and "not supported" in c["jetpack"].detail
    assert "JetPack 6.1" in c["jetpack"].fix


def test_console_on_the_uart_and_a_locking_process_are_named(tmp_path):
    root = jetson_root(tmp_path, port_group="tty")
    dev = root / "dev/ttyTHS1"
    st = dev.stat()
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    (root / "proc/locks").write_text(f"1: FLOCK  ADVISORY  WRITE 4242 {key} 0 EOF\n")
    (root / "proc/4242").mkdir()
    (root / "proc/4242/cmdline").write_bytes(b"python3\x00-m\x00lerobot.record\x00")
    checks, _ = doctor.run_checks(env_for(root), load_profile(NX), "/opt/legato")
    c = by_name(checks)
    assert c["serial port"].status == FAIL and "console" in c["serial port"].detail
    assert c["serial port"].fix.startswith("sudo systemctl disable --now nvgetty")
    assert (
        c["port in use"].status == FAIL and "pid 4242 (python3 -m lerobot.record)" in c["port in use"].detail
    )
    assert c["port in use"].fix.startswith("stop it: kill 4242")


def test_user_outside_dialout(tmp_path):
    root = jetson_root(tmp_path)
    checks, _ = doctor.run_checks(env_for(root, groups=("robot",)), load_profile(NX), "/opt/legato")
    c = by_name(checks)["serial port"]
    assert c.status == FAIL and c.fix == "sudo usermod -aG dialout robot  (then log in again)"


def test_ftdi_latency_timer_and_power_mode_warn_with_fixes(tmp_path):
    root = jetson_root(tmp_path, port="ttyUSB0", pinned=False)
    lt = root / "sys/bus/usb-serial/devices/ttyUSB0"
    lt.mkdir(parents=True)
    (lt / "latency_timer").write_text("16\n")
    env = env_for(root, runner=fake_runner("15W", 2))
    checks, _ = doctor.run_checks(env, load_profile(NX), "/opt/legato", port="/dev/ttyUSB0")
    c = by_name(checks)
    assert c["latency timer"].status == WARN and "16 ms" in c["latency timer"].detail
    assert c["latency timer"].fix.startswith(
        "echo 1 | sudo tee /sys/bus/usb-serial/devices/ttyUSB0/latency_timer"
    )
    assert c["nvpmodel"].status == WARN and c["nvpmodel"].fix.startswith("sudo nvpmodel -m 0")
    assert c["jetson_clocks"].status == WARN and c["jetson_clocks"].fix.startswith("sudo jetson_clocks")
    assert not [x for x in checks if x.status == FAIL]  # warnings do not block running


def test_missing_tensorrt_and_pycuda_block_a_tensorrt_profile(tmp_path):
    root = jetson_root(tmp_path)
    env = env_for(root, module=fake_modules(onnxruntime="1.20.0"))
    checks, _ = doctor.run_checks(env, load_profile(NX), "/opt/legato")
    c = by_name(checks)
    assert c["tensorrt"].status == FAIL and "python3-libnvinfer" in c["tensorrt"].fix
    assert "--system-site-packages" in c["tensorrt"].fix
    assert c["pycuda"].status == FAIL and "pip install pycuda" in c["pycuda"].fix
    assert c["profile"].status == FAIL and "no TensorRT" in c["profile"].detail


def test_bundle_with_engines_from_another_device(tmp_path):
    root = jetson_root(tmp_path, key={**NX_KEY, "tensorrt": "10.3.1"})
    checks, _ = doctor.run_checks(env_for(root), load_profile(NX), "/opt/legato")
    c = by_name(checks)["bundle"]
    assert c.status == FAIL and "tensorrt: engine '10.3.1', device '10.3.0'" in c.detail
    assert c.fix.startswith("legato flash --bundle B --profile P --target /opt/legato")


def test_corrupt_or_missing_bundle_and_full_disk(tmp_path):
    root = jetson_root(tmp_path)
    (root / "opt/legato/current/data/blob.bin").write_bytes(b"rot")
    checks, _ = doctor.run_checks(
        env_for(root, disk_free=lambda _p: 50 << 20), load_profile(NX), "/opt/legato"
    )
    c = by_name(checks)
    assert (
        c["bundle"].status == FAIL and "is corrupt" in c["bundle"].detail and "--rollback" in c["bundle"].fix
    )
    assert c["disk"].status == FAIL and "journalctl --vacuum-size" in c["disk"].fix
    (root / "opt/legato/current").unlink()
    checks, _ = doctor.run_checks(env_for(root), load_profile(NX), "/opt/legato")
    assert by_name(checks)["bundle"].detail == "no current bundle at /opt/legato/current"


def test_nvpmodel_parsers():
    assert doctor.nvpmodel_modes(NVPMODEL_CONF) == {"MAXN_SUPER": 0, "10W": 1, "15W": 2}
    assert doctor.parse_nvpmodel_q("NVPM WARN: fan mode is not set!\nNV Power Mode: 25W\n3\n") == ("25W", 3)
    assert doctor.parse_nvpmodel_q("nothing") == (None, None)


@pytest.mark.parametrize("healthy", [True, False])
def test_cli_exit_status(tmp_path, capsys, healthy):
    """Through `legato doctor --root` on this (x86) machine: exit 0 when ready, 1 when something blocks."""
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    port = root / "dev/ttyUSB0"
    port.write_text("")
    port.chmod(0o660)
    (root / "etc").mkdir()
    (root / "etc/group").write_text(f"dialout:x:{port.stat().st_gid}:{getpass.getuser()}\n")
    if healthy:
        rel = make_bundle(root / "opt/legato/releases/tiny-1")
        (root / "opt/legato/current").symlink_to("releases/tiny-1")
        (rel / "profile.toml").write_text(load_profile("x86-cpu").path.read_text())
    rc = main(["doctor", "--root", str(root), "--bundle-dir", "/opt/legato"])
    out = capsys.readouterr().out
    if healthy:  # the profile flashed with the release is used
        assert rc == 0 and "ok    profile        x86-cpu matches this device" in out, out
    else:
        assert rc == 1 and "fix: legato flash --bundle B --profile P --target /opt/legato" in out


def test_damaged_engine_plan_blocks(tmp_path):
    root = jetson_root(tmp_path)
    (root / "opt/legato/current/engines/flow_head.plan").write_bytes(b"truncated")
    checks, _ = doctor.run_checks(env_for(root), load_profile(NX), "/opt/legato")
    c = by_name(checks)["bundle"]
    assert c.status == FAIL and "is corrupt" in c.detail and "engines/flow_head.plan" in c.detail


# ---- Jetsons as they ship and update (issue 19 part 4), verbatim device files
NANO_SUPER_MODEL = b"NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super\x00"
TEGRA_JP622 = (
    "# R36 (release), REVISION: 5.0, GCID: 43688277, BOARD: generic, EABI: aarch64, "
    "DATE: Fri Jan 16 03:50:45 UTC 2026\n# KERNEL_VARIANT: oot\nTARGET_USERSPACE_LIB_DIR=nvidia\n"
    "TARGET_USERSPACE_LIB_DIR_PATH=usr/lib/aarch64-linux-gnu/nvidia\n"
)
# /etc/nvpmodel.conf of the Orin Nano 8 GB with the Super firmware (JetPack 6.2): the ids differ from
# the NX's, so the fix must name MAXN_SUPER's id from the file.
NANO_SUPER_NVPMODEL = """< POWER_MODEL ID=0 NAME=15W >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=1 NAME=25W >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=2 NAME=MAXN_SUPER >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=3 NAME=7W >
CPU_ONLINE CORE_0 1
< PM_CONFIG DEFAULT=0 >
"""
NANO = "jetson-orin-nano-8gb"
NANO_KEY = {**NX_KEY, "l4t": "36.4.3", "jetpack": "6.2"}  # engines built before the apt upgrade


def nano_super_root(tmp_path: Path, **kw) -> Path:
    root = jetson_root(
        tmp_path, tegra=TEGRA_JP622, model=NANO_SUPER_MODEL, profile=NANO, nvpmodel_conf=NANO_SUPER_NVPMODEL,
        key=NANO_KEY, **kw,
    )  # fmt: skip
    tty = root / "sys/class/tty/ttyTHS1"
    tty.mkdir(parents=True)
    (tty / "device").symlink_to("../../../devices/platform/bus@0/3100000.serial")
    (root / "proc/meminfo").write_text("MemTotal:        7633536 kB\nMemFree:          213560 kB\n")
    return root


def test_orin_nano_super_on_jetpack_6_2_2_is_ready(tmp_path):
    """The device the MAXN_SUPER profile is for, after `apt upgrade` to JetPack 6.2.2 (L4T 36.5), with
    engines built on 36.4.3 and the same TensorRT 10.3."""
    root = nano_super_root(tmp_path)
    env = env_for(root, runner=fake_runner("MAXN_SUPER", 2))
    checks, facts = doctor.run_checks(env, load_profile(NANO), "/opt/legato")
    bad = [c for c in checks if c.status != OK]
    assert bad == [], bad
    assert facts["l4t"] == "36.5.0" and facts["jetpack"] == "6.2.2" and facts["header_uart"] == "/dev/ttyTHS1"
    assert by_name(checks)["profile"].detail == "jetson-orin-nano-8gb matches this device"


def test_orin_nano_super_power_mode_fix_names_the_id_from_nvpmodel_conf(tmp_path):
    root = nano_super_root(tmp_path)
    checks, _ = doctor.run_checks(
        env_for(root, runner=fake_runner("15W", 0)), load_profile(NANO), "/opt/legato"
    )
    c = by_name(checks)["nvpmodel"]
    assert c.status == WARN and c.detail == "mode 15W (0); the profile asks for MAXN_SUPER"
    assert c.fix.startswith("sudo nvpmodel -m 2")
    assert doctor.nvpmodel_modes(NANO_SUPER_NVPMODEL) == {"15W": 0, "25W": 1, "MAXN_SUPER": 2, "7W": 3}
    assert doctor.nvpmodel_modes("< POWER_MODEL NAME=MAXN ID=3 >") == {"MAXN": 3}  # either attribute order


def test_a_missing_header_uart_names_the_one_this_jetson_has(tmp_path):
    root = nano_super_root(tmp_path)
    checks, _ = doctor.run_checks(env_for(root), load_profile(NANO), "/opt/legato", port="/dev/ttyTHS0")
    c = by_name(checks)["serial port"]
    assert c.status == FAIL and "header UART (3100000.serial) is /dev/ttyTHS1" in c.detail
    assert c.fix.startswith("pass --port /dev/ttyTHS1")


def test_cuda_python_as_a_namespace_package_is_found(tmp_path, monkeypatch):
    """Since the cuda-bindings split `cuda` has no __init__.py: probing `cuda` said absent."""
    import sys

    from deploy.checks import Ctx, find_module

    pkg = tmp_path / "site" / "cuda" / "bindings"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('__version__ = "12.6.2"\n')
    (pkg / "runtime.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in [m for m in sys.modules if m == "cuda" or m.startswith("cuda.")]:
        monkeypatch.delitem(sys.modules, name)
    assert find_module("cuda") is None  # the namespace package itself: nothing to probe
    root = nano_super_root(tmp_path)
    env = env_for(root, module=find_module)
    ctx = Ctx(env, load_profile(NANO), doctor.facts(env=env), Path("/opt/legato"))
    c = doctor.check_cuda_python(ctx)
    assert c.status == OK and c.detail == "cuda-python 12.6.2"


def test_cuda_python_13_on_jetpack_6_and_old_pycuda_on_thor(tmp_path):
    root = nano_super_root(tmp_path)
    env = env_for(root, module=fake_modules(**{**ALL, "cuda.bindings": "13.0.1"}))
    c = by_name(doctor.run_checks(env, load_profile(NANO), "/opt/legato")[0])["cuda-python"]
    assert c.status == WARN and "CUDA 12.6" in c.detail and c.fix == "pip install 'cuda-python<13'"
    thor = tmp_path / "thor"
    root = jetson_root(thor, tegra="# R38 (release), REVISION: 4.0, GCID: 43443517, BOARD: generic\n",
                       model=b"NVIDIA Jetson AGX Thor Developer Kit\x00", profile="jetson-thor")  # fmt: skip
    (root / "usr/local/cuda/version.json").write_text('{"cuda": {"name": "CUDA SDK", "version": "13.0.48"}}')
    env = env_for(root, module=fake_modules(**{**ALL, "tensorrt": "10.13.3", "cuda.bindings": "13.0.1"}))
    c = by_name(doctor.run_checks(env, load_profile("jetson-thor"), "/opt/legato")[0])["pycuda"]
    assert c.status == FAIL and "CUDA 13 needs pycuda 2025.1.2" in c.detail and ">=2025.1.2" in c.fix


def test_a_relative_bundle_dir_is_read_from_the_working_directory(tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    rel = make_bundle(work / "bundles/arm/releases/tiny-1")
    (work / "bundles/arm/current").symlink_to("releases/tiny-1")
    (rel / "profile.toml").write_text(load_profile("x86-cpu").path.read_text())
    monkeypatch.chdir(work)
    main(["doctor", "--bundle-dir", "bundles/arm", "--port", str(tmp_path / "none")])
    out = capsys.readouterr().out
    assert "ok    profile        x86-cpu matches this device" in out  # the flashed profile was found
    assert "ok    bundle         tiny-1 verifies" in out, out


# ---- memory (issue 18 item 7)
PI05_FP16 = {"prefix": (5_300_000_000, 600_000_000), "flow_head": (1_400_000_000, 250_000_000)}  # ~6.7 GB


def test_doctor_refuses_full_size_pi05_on_the_orin_nano(tmp_path):
    root = nano_super_root(tmp_path, memory=PI05_FP16)
    checks, _ = doctor.run_checks(
        env_for(root, runner=fake_runner("MAXN_SUPER", 2)), load_profile(NANO), "/opt/legato"
    )
    c = by_name(checks)["memory"]
    assert c.status == FAIL and "\n" not in c.detail
    assert c.detail.startswith("the bundle needs 7.55 GB (prefix 5.30 GB weights + 0.60 GB activations")
    assert "has 7.82 GB of which 3.39 GB stay reserved" in c.detail  # MemTotal (7.63 GiB), not 8 GB
    assert "leaving 4.43 GB" in c.detail
    root = nano_super_root(
        tmp_path / "small", memory={"prefix": (3_000_000, 1_000_000), "flow_head": (600_000, 90_000)}
    )
    checks, _ = doctor.run_checks(
        env_for(root, runner=fake_runner("MAXN_SUPER", 2)), load_profile(NANO), "/opt/legato"
    )
    assert by_name(checks)["memory"].status == OK


def test_a_calibration_edited_since_the_flash_fails_the_bundle_check(tmp_path):
    """doctor verifies the current release as the flash agent does (deploy.agent.verify_release):
    the profile and calibration the flash hashed into the release's marker are checked too."""
    from deploy.agent import RELEASE_KIND
    from edge.outputs import write_marker

    root = jetson_root(tmp_path)
    rel = root / "opt/legato/releases/tiny-1"
    (rel / "calibration.json").write_text('{"shoulder": {"homing_offset": 1023}}')
    extras = {"calibration.json": hashlib.sha256((rel / "calibration.json").read_bytes()).hexdigest()}
    write_marker(rel, RELEASE_KIND, {"extras_sha256": extras})
    assert (
        by_name(doctor.run_checks(env_for(root), load_profile(NX), "/opt/legato")[0])["bundle"].status != FAIL
    )
    (rel / "calibration.json").write_text('{"shoulder": {"homing_offset": 1024}}')
    c = by_name(doctor.run_checks(env_for(root), load_profile(NX), "/opt/legato")[0])["bundle"]
    assert c.status == FAIL and "calibration.json is corrupt or edited since the flash" in c.detail
    assert "--rollback" in c.fix

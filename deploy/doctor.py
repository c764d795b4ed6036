"""`legato doctor`: is this device ready to run a bundle, and if not, which command fixes it.

Every check returns a :class:`Check` (ok / warn / FAIL, what was found, the command that fixes
it); FAIL means the loop cannot run (the exit status is then 1), warn means it runs worse
than it could. Every file read goes through an injectable root (``Env.root``: ``/`` on the
device, a temporary folder in tests holding fake /proc, /sys, /etc and /dev), commands go
through an injectable runner, and modules through an injectable finder, so the tests cover
Jetson answers on any machine.

``facts(root)`` is the device identity that `legato flash` compares with a profile's [device]
table (``profile_mismatch``) before it changes anything on a target.

Longer than most modules on purpose: it is one flat list of small check functions, each
returning its finding and its fix, read top to bottom in the order `legato doctor` prints them.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OK, WARN, FAIL = "ok", "warn", "FAIL"
DEFAULT_BUNDLE_DIR = "/opt/legato"
MIN_FREE_FAIL, MIN_FREE_WARN = 200 << 20, 1 << 30


@dataclass(frozen=True)
class Check:
    name: str  # what was checked ("serial port")
    status: str  # ok | warn | FAIL
    detail: str  # what was found, with the values
    fix: str = ""  # the command (or the step) that fixes it; empty when ok

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


def _find_module(name: str) -> Any:
    """The imported module, or None when absent or broken (an injectable seam for tests)."""
    spec = importlib.util.find_spec(name.split(".")[0])
    if spec is None or spec.origin is None:  # absent, or an empty leftover folder (namespace package)
        return None
    try:
        return importlib.import_module(name)
    except Exception:  # a broken install may raise anything on import
        return None


@dataclass
class Env:
    """Everything doctor reads, injectable."""

    root: Path = Path("/")
    runner: Callable[..., Any] = subprocess.run
    module: Callable[[str], Any] = _find_module
    machine: str = field(default_factory=platform.machine)
    python: tuple[int, int, int] = tuple(sys.version_info[:3])  # type: ignore[assignment]
    user: str | None = None  # None: the current user
    groups: tuple[str, ...] | None = None  # None: the current user's groups
    disk_free: Callable[[Path], int] | None = None

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def read(self, absolute: str) -> str | None:
        try:
            return self.path(absolute).read_text(errors="replace")
        except OSError:
            return None

    def run(self, argv: list[str]) -> tuple[int, str] | None:
        if self.runner is subprocess.run and shutil.which(argv[0]) is None:
            return None
        try:
            out = self.runner(argv, capture_output=True, text=True, timeout=15)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.returncode, (out.stdout or "") + (out.stderr or "")


# ---------------------------------------------------------------- device facts and profile match
def facts(root: str | Path = "/", env: Env | None = None) -> dict[str, Any]:
    """The device's identity (edge.device) plus its SoC family, CPU architecture and Python."""
    from edge import device

    env = env or Env(root=Path(root))
    ident = device.identify(env.root, env.runner).to_dict()
    mod = env.module("tensorrt")
    ident["tensorrt"] = str(getattr(mod, "__version__", "")) or None if mod is not None else None
    model = ident.get("model") or ""
    soc = next((s.lower() for s in ("Thor", "Orin", "Xavier") if s in model), None)
    if soc is None:
        soc = "x86" if env.machine.lower() in ("x86_64", "amd64") else env.machine.lower() or "unknown"
    return {**ident, "soc": soc, "arch": env.machine, "python": ".".join(map(str, env.python))}


def _mm(v: str | None) -> str:
    """'36.4' from '36.4.3', '10.3' from '10.3.0.30'."""
    return ".".join(str(v).split(".")[:2])


def profile_mismatch(device: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """How a profile's [device] table differs from a device's facts ([] = it matches)."""
    bad = []
    if device.get("soc") and device["soc"] != got.get("soc"):
        bad.append(f"profile soc {device['soc']}, target {got.get('soc')}")
        return bad  # the rest follows from the wrong family
    pm, gm = (device.get("model") or "").lower(), (got.get("model") or "").lower()
    if device.get("soc") != "x86" and pm and gm and pm not in gm and gm not in pm:
        bad.append(f"profile model {device['model']!r}, target {got.get('model')!r}")
    if device.get("l4t"):
        if not got.get("l4t"):
            bad.append(f"profile L4T {device['l4t']}, target has no /etc/nv_tegra_release")
        elif _mm(device["l4t"]) != _mm(got["l4t"]):
            bad.append(f"profile L4T {device['l4t']}, target {got['l4t']}")
    if (
        device.get("compute_capability")
        and got.get("compute_capability")
        and device["compute_capability"] != got["compute_capability"]
    ):
        bad.append(
            f"profile compute capability {device['compute_capability']}, target {got['compute_capability']}"
        )
    if device.get("tensorrt"):
        if not got.get("tensorrt"):
            bad.append(f"profile TensorRT {device['tensorrt']}, target has no TensorRT for this Python")
        elif _mm(device["tensorrt"]) != _mm(got["tensorrt"]):
            bad.append(f"profile TensorRT {device['tensorrt']}, target {got['tensorrt']}")
    return bad


# ---------------------------------------------------------------- the checks
def check_python(env: Env) -> Check:
    v = ".".join(map(str, env.python))
    if env.python[:2] < (3, 10):
        return Check(
            "python",
            FAIL,
            f"Python {v} (3.10+ needed; JetPack 5 ships 3.8 and is not supported)",
            "upgrade to JetPack 6.1+ (Python 3.10) and make the venv from /usr/bin/python3",
        )
    return Check("python", OK, f"Python {v}")


def check_onnxruntime(env: Env, profile: Any) -> Check:
    ort = env.module("onnxruntime")
    wanted = _ort_providers(profile)
    if ort is None:
        return Check(
            "onnxruntime",
            FAIL,
            "not importable (the bundle is verified and run with it)",
            "pip install onnxruntime (on Jetson: onnxruntime-gpu from NVIDIA's Jetson index for your "
            "JetPack)",
        )
    have = list(ort.get_available_providers())
    missing = [p for p in wanted if p not in have]
    detail = f"{ort.__version__}, providers {', '.join(have)}"
    if missing:
        return Check(
            "onnxruntime",
            WARN,
            f"{detail}; the profile asks for {', '.join(missing)} too (falls back to the next provider)",
            "install onnxruntime-gpu from NVIDIA's Jetson package index for your JetPack "
            "(pip uninstall onnxruntime first)",
        )
    return Check("onnxruntime", OK, detail)


def _ort_providers(profile: Any) -> list[str]:
    if profile is None:
        return []
    out: list[str] = []
    for e in profile.engines.values():
        if e.backend == "onnxruntime":
            out += [p for p in e.providers if p not in out]
    return out


def _uses_trt(profile: Any) -> bool:
    return bool(profile is not None and profile.uses_tensorrt)


def check_tensorrt(env: Env, profile: Any) -> Check:
    trt = env.module("tensorrt")
    need = _uses_trt(profile)
    if trt is None:
        if need:
            return Check(
                "tensorrt",
                FAIL,
                "not importable, and the profile builds TensorRT engines",
                "sudo apt install python3-libnvinfer python3-libnvinfer-dev, and make the venv with "
                "python3 -m venv --system-site-packages (docs/jetson.md)",
            )
        return Check("tensorrt", OK, "absent (not needed: the profile runs onnxruntime)")
    v = str(getattr(trt, "__version__", "?"))
    if not v.startswith("1") or v.split(".")[0] not in ("10", "11", "12"):
        return Check(
            "tensorrt",
            FAIL,
            f"TensorRT {v}: only TensorRT 10.x (JetPack 6.1+, 7) is supported",
            "upgrade to JetPack 6.1 or later (TensorRT 10.3)",
        )
    if need and profile.device.tensorrt and _mm(profile.device.tensorrt) != _mm(v):
        return Check(
            "tensorrt",
            FAIL,
            f"TensorRT {v}, the profile was written for {profile.device.tensorrt}",
            "use the profile for this JetPack (legato profiles), or install that JetPack",
        )
    return Check("tensorrt", OK, f"TensorRT {v}")


def check_pycuda(env: Env, profile: Any) -> Check:
    mod = env.module("pycuda")
    if mod is None:
        if _uses_trt(profile):
            return Check(
                "pycuda",
                FAIL,
                "not importable (the TensorRT backend moves buffers with it)",
                "export PATH=/usr/local/cuda/bin:$PATH; pip install pycuda (builds on the device)",
            )
        return Check("pycuda", OK, "absent (not needed without TensorRT)")
    return Check(
        "pycuda", OK, f"pycuda {getattr(mod, 'VERSION_TEXT', None) or getattr(mod, '__version__', '?')}"
    )


def check_cuda_python(env: Env, profile: Any) -> Check:
    mod = env.module("cuda")
    graphs = profile is not None and any(e.cuda_graphs for e in profile.engines.values())
    if mod is None:
        if graphs and _uses_trt(profile):
            return Check(
                "cuda-python",
                WARN,
                "absent: the profile asks for CUDA graphs, which run without them",
                "pip install cuda-python (its major version = the device's CUDA major)",
            )
        return Check("cuda-python", OK, "absent (only CUDA graphs need it)")
    v = getattr(mod, "__version__", None)
    if v is None:
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            v = version("cuda-python")
    return Check("cuda-python", OK, f"cuda-python {v or '?'}")


def check_gpu(env: Env, profile: Any, f: dict[str, Any]) -> Check:
    gpu, cc = f.get("gpu"), f.get("compute_capability")
    if gpu is None:
        if _uses_trt(profile):
            return Check(
                "gpu",
                FAIL,
                "no CUDA GPU found (no nvidia-smi answer, not a Jetson)",
                "run on the device the profile names, or choose a CPU profile (x86-cpu)",
            )
        return Check("gpu", OK, "none (not needed: the profile runs on the CPU)")
    want = profile.device.compute_capability if profile is not None else None
    if want and cc and want != cc:
        return Check(
            "gpu",
            FAIL,
            f"{gpu}, compute capability {cc}; the profile is for {want}",
            "choose the profile for this device (legato profiles)",
        )
    return Check("gpu", OK, f"{gpu}, compute capability {cc or '?'}")


def check_l4t(env: Env, profile: Any, f: dict[str, Any]) -> Check:
    l4t, jp = f.get("l4t"), f.get("jetpack")
    jetson_profile = profile is not None and profile.device.soc in ("orin", "thor")
    if l4t is None:
        if jetson_profile:
            return Check(
                "jetpack",
                FAIL,
                "no /etc/nv_tegra_release: not a Jetson, but the profile is for one",
                "run on the device, or choose the profile for this machine",
            )
        return Check("jetpack", OK, "not a Jetson (no /etc/nv_tegra_release)")
    if l4t.startswith("35.") or int(l4t.split(".")[0]) < 35:
        return Check(
            "jetpack",
            FAIL,
            f"L4T {l4t} (JetPack {jp or '5 or older'}): not supported (TensorRT 8.5)",
            "flash JetPack 6.1 or later with NVIDIA SDK Manager",
        )
    detail = f"L4T {l4t}, JetPack {jp or '?'}, {f.get('model') or 'unknown model'}"
    if jetson_profile and profile.device.l4t and _mm(profile.device.l4t) != _mm(l4t):
        return Check(
            "jetpack",
            FAIL,
            f"{detail}; the profile was written for L4T {profile.device.l4t}",
            "choose the profile for this JetPack, or copy it and set device.l4t (legato profiles)",
        )
    return Check("jetpack", OK, detail)


def nvpmodel_modes(text: str | None) -> dict[str, int]:
    """{NAME: id} from /etc/nvpmodel.conf's ``< POWER_MODEL ID=n NAME=X >`` blocks."""
    out: dict[str, int] = {}
    for m in re.finditer(r"<\s*POWER_MODEL\s+ID\s*=\s*(\d+)\s+NAME\s*=\s*([^\s>]+)\s*>", text or ""):
        out.setdefault(m.group(2), int(m.group(1)))
    return out


def parse_nvpmodel_q(text: str) -> tuple[str | None, int | None]:
    """('MAXN', 0) from `nvpmodel -q` (warning lines may come first; the id is on the next line)."""
    lines = [ln.strip() for ln in text.splitlines()]
    for i, ln in enumerate(lines):
        m = re.match(r"NV Power Mode:\s*(\S+)", ln)
        if m:
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            return m.group(1), int(nxt) if nxt.isdigit() else None
    return None, None


def check_nvpmodel(env: Env, profile: Any, f: dict[str, Any]) -> Check:
    if f.get("l4t") is None:
        return Check("nvpmodel", OK, "not a Jetson")
    want = profile.power.nvpmodel if profile is not None else None
    modes = nvpmodel_modes(env.read("/etc/nvpmodel.conf"))
    res = env.run(["nvpmodel", "-q"])
    if res is None or res[0] != 0:
        return Check("nvpmodel", WARN, "nvpmodel -q did not answer", "sudo apt install nvidia-l4t-nvpmodel")
    name, mode_id = parse_nvpmodel_q(res[1])
    detail = f"mode {name} ({mode_id})"
    if want and name != want:
        if want not in modes:
            return Check(
                "nvpmodel",
                WARN,
                f"{detail}; the profile asks for {want}, which /etc/nvpmodel.conf lacks "
                f"(has {', '.join(modes) or 'none'})",
                "edit the profile's power.nvpmodel",
            )
        return Check(
            "nvpmodel",
            WARN,
            f"{detail}; the profile asks for {want}",
            f"sudo nvpmodel -m {modes[want]}  (may ask to reboot)",
        )
    return Check("nvpmodel", OK, detail)


def check_clocks(env: Env, profile: Any, f: dict[str, Any]) -> Check:
    """jetson_clocks pins each CPU's minimum frequency to its maximum: compare them."""
    if f.get("l4t") is None:
        return Check("jetson_clocks", OK, "not a Jetson")
    want = bool(profile is not None and profile.power.jetson_clocks)
    base = "/sys/devices/system/cpu/cpu0/cpufreq"
    lo, hi = env.read(f"{base}/scaling_min_freq"), env.read(f"{base}/scaling_max_freq")
    if lo is None or hi is None:
        return Check("jetson_clocks", WARN, f"cannot read {base}", "sudo jetson_clocks --show")
    pinned = lo.strip() == hi.strip()
    detail = f"cpu0 {int(lo) // 1000}-{int(hi) // 1000} MHz ({'pinned' if pinned else 'scaling'})"
    if want and not pinned:
        return Check(
            "jetson_clocks",
            WARN,
            f"{detail}; the profile asks for jetson_clocks (steadier latency)",
            "sudo jetson_clocks  (the service unit can run it: see docs/jetson.md)",
        )
    return Check("jetson_clocks", OK, detail)


def _groups_file(env: Env) -> dict[int, tuple[str, list[str]]]:
    out: dict[int, tuple[str, list[str]]] = {}
    for ln in (env.read("/etc/group") or "").splitlines():
        parts = ln.split(":")
        if len(parts) >= 4 and parts[2].isdigit():
            out[int(parts[2])] = (parts[0], [u for u in parts[3].split(",") if u])
    return out


def _user_groups(env: Env, user: str) -> set[str]:
    if env.groups is not None:
        return set(env.groups)
    if env.root.resolve() != Path("/"):  # a fake root: membership as its /etc/group lists it
        return {name for name, members in _groups_file(env).values() if user in members}
    import grp

    names = set()
    for gid in os.getgroups():
        with contextlib.suppress(KeyError):
            names.add(grp.getgrgid(gid).gr_name)
    return names


def port_holders(env: Env, port: Path, shown: str) -> list[tuple[int, str]]:
    """(pid, command) of processes that lock the port (/proc/locks) or have it open (/proc/*/fd)."""
    try:
        st = port.stat()
    except OSError:
        return []
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids: list[int] = []
    for ln in (env.read("/proc/locks") or "").splitlines():
        fields = ln.split()
        if len(fields) >= 6 and fields[1] != "->" and fields[5] == key and fields[4].isdigit():
            pids.append(int(fields[4]))
    targets = {shown, str(port), os.path.realpath(port)}
    proc = env.path("/proc")
    if not pids and proc.is_dir():
        for entry in proc.iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                if any(os.readlink(fd) in targets for fd in (entry / "fd").iterdir()):
                    pids.append(int(entry.name))
    out = []
    for pid in sorted(set(pids)):
        raw = env.read(f"/proc/{pid}/cmdline") or ""
        cmd = (
            " ".join(p for p in raw.split("\0") if p)[:100] or (env.read(f"/proc/{pid}/comm") or "?").strip()
        )
        out.append((pid, cmd))
    return out


def check_serial(env: Env, profile: Any, port_arg: str | None) -> list[Check]:
    port = port_arg or (profile.serial.port if profile is not None else None)
    if port is None:
        return [
            Check(
                "serial port",
                WARN,
                "no port to check (give --profile or --port)",
                "legato doctor --profile P",
            )
        ]
    p = env.path(port)
    name = Path(port).name
    if not os.path.lexists(p):
        fix = (
            "enable the UART (sudo /opt/nvidia/jetson-io/jetson-io.py) and check ls /dev/ttyTHS*"
            if name.startswith("ttyTHS")
            else "plug in the adapter; `legato service install` gives it a stable name"
        )
        return [Check("serial port", FAIL, f"{port} does not exist", fix)]
    if not p.exists():
        return [
            Check(
                "serial port",
                FAIL,
                f"{port} is a link to {os.readlink(p)}, which does not exist",
                "replug the adapter; check the udev rule (legato service install --print)",
            )
        ]
    st = p.stat()
    group = _groups_file(env).get(st.st_gid, (str(st.st_gid), []))[0]
    mode = st.st_mode & 0o777
    out: list[Check] = []
    detail = f"{port}: mode {mode:o}, group {group}"
    if group == "tty":
        out.append(
            Check(
                "serial port",
                FAIL,
                f"{detail}: a console (getty) holds this UART",
                "sudo systemctl disable --now nvgetty  (then replug or reboot)",
            )
        )
    elif group != "dialout" or mode & 0o060 != 0o060:
        out.append(
            Check(
                "serial port",
                FAIL,
                f"{detail} (needs group dialout, rw for the group)",
                "sudo legato service install --profile P  (udev rule: GROUP=dialout, MODE=0660)",
            )
        )
    else:
        user = env.user or _current_user()
        if user != "root" and "dialout" not in _user_groups(env, user):
            out.append(
                Check(
                    "serial port",
                    FAIL,
                    f"{detail}; user {user} is not in dialout",
                    f"sudo usermod -aG dialout {user}  (then log in again)",
                )
            )
        else:
            out.append(Check("serial port", OK, detail))
    holders = port_holders(env, p, port)
    if holders:
        who = ", ".join(f"pid {pid} ({cmd})" for pid, cmd in holders)
        out.append(
            Check(
                "port in use",
                FAIL,
                f"{port} is held by {who}",
                f"stop it: kill {' '.join(str(pid) for pid, _ in holders)}  (or sudo systemctl stop "
                "legato if it is the service)",
            )
        )
    else:
        out.append(Check("port in use", OK, "no other process holds it"))
    out.append(_latency_timer(env, port))
    return out


def _latency_timer(env: Env, port: str) -> Check:
    name = Path(os.path.realpath(env.path(port))).name if env.path(port).is_symlink() else Path(port).name
    f = f"/sys/bus/usb-serial/devices/{name}/latency_timer"
    text = env.read(f)
    if text is None:
        return Check("latency timer", OK, f"n/a ({name} is not an FTDI usb-serial port)")
    ms = int(text.strip() or 0)
    if ms > 1:
        return Check(
            "latency timer",
            WARN,
            f"{ms} ms on {name}: up to {ms} ms added to every read",
            f"echo 1 | sudo tee {f}  (for good: sudo legato service install, its udev rule sets 1 ms)",
        )
    return Check("latency timer", OK, f"{ms} ms on {name}")


def _current_user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def check_disk(env: Env, bundle_dir: Path) -> Check:
    where = env.path(str(bundle_dir))
    while not where.exists() and where != where.parent:
        where = where.parent
    if env.disk_free is not None:
        free = env.disk_free(where)
    else:
        st = os.statvfs(where)
        free = st.f_bavail * st.f_frsize
    detail = f"{free / 1e9:.2f} GB free at {bundle_dir}"
    fix = "sudo apt clean; sudo journalctl --vacuum-size=100M; flash with --keep 0 to drop old releases"
    if free < MIN_FREE_FAIL:
        return Check(
            "disk",
            FAIL,
            f"{detail} (under {MIN_FREE_FAIL >> 20} MB: logs and engines cannot be written)",
            fix,
        )
    if free < MIN_FREE_WARN:
        return Check("disk", WARN, detail, fix)
    return Check("disk", OK, detail)


def check_bundle(env: Env, bundle_dir: Path, profile: Any, f: dict[str, Any]) -> Check:
    from deploy.agent import verify_release
    from edge.device import engine_key, key_mismatch
    from edge.errors import LegatoError

    cur = env.path(str(bundle_dir)) / "current"
    flash = f"legato flash --bundle B --profile P --target {bundle_dir}"
    if not cur.exists():
        return Check("bundle", FAIL, f"no current bundle at {bundle_dir}/current", flash)
    try:
        info = verify_release(cur, load_graphs=True)  # every sha256, engine plans too; graphs load
        m = info["manifest"]
    except LegatoError as e:
        return Check(
            "bundle",
            FAIL,
            f"{bundle_dir}/current does not verify: {e}",
            f"legato flash --rollback --target {bundle_dir}, or flash it again",
        )
    name = Path(os.readlink(cur)).name if cur.is_symlink() else m.name
    if _uses_trt(profile) and not m.engines:
        return Check(
            "bundle",
            FAIL,
            f"{name} verifies but has no TensorRT engines, and the profile needs them",
            f"{flash}  (builds the engines on the device)",
        )
    ident = {k: f.get(k) for k in ("tensorrt", "cuda", "gpu", "compute_capability", "l4t", "jetpack")}
    for graph, e in m.engines.items():
        stored = e.get("key", {})
        bad = key_mismatch(stored, engine_key(stored.get("onnx_sha256", ""), _Ident(ident)))
        if bad:
            return Check(
                "bundle",
                FAIL,
                f"{name}: engine {graph} was built for another device ({'; '.join(bad)})",
                f"{flash}  (rebuilds the engines here)",
            )
    engines = f", engines {', '.join(m.engines)} match this device" if m.engines else ""
    return Check("bundle", OK, f"{name} verifies ({info['files']} files){engines}")


class _Ident:
    """Duck-typed edge.device.DeviceIdentity from the facts dict."""

    def __init__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)


def _release_profile(env: Env, bundle_dir: Path) -> Path | None:
    p = env.path(str(bundle_dir)) / "current" / "profile.toml"
    return p if p.is_file() else None


def run_checks(
    env: Env, profile: Any = None, bundle_dir: str | Path = DEFAULT_BUNDLE_DIR, port: str | None = None
) -> tuple[list[Check], dict[str, Any]]:
    """Every check, in the order they are printed, and the facts they used."""
    bundle_dir = Path(bundle_dir)
    f = facts(env=env)
    checks = [
        check_python(env),
        check_onnxruntime(env, profile),
        check_tensorrt(env, profile),
        check_pycuda(env, profile),
        check_cuda_python(env, profile),
        check_gpu(env, profile, f),
        check_l4t(env, profile, f),
        check_nvpmodel(env, profile, f),
        check_clocks(env, profile, f),
        *check_serial(env, profile, port),
        check_disk(env, bundle_dir),
        check_bundle(env, bundle_dir, profile, f),
    ]
    if profile is not None:
        bad = profile_mismatch(profile.to_dict()["device"], f)
        checks.insert(
            0,
            Check(
                "profile",
                FAIL,
                f"{profile.name} does not match this device: {'; '.join(bad)}",
                "choose the profile for this device (legato profiles)",
            )
            if bad
            else Check("profile", OK, f"{profile.name} matches this device"),
        )
    return checks, f


def load_profile_for(env: Env, name: str | None, bundle_dir: Path) -> Any:
    """--profile, else the profile flashed with the current release, else None."""
    from edge.profiles import load_profile

    if name:
        return load_profile(name)
    flashed = _release_profile(env, bundle_dir)
    return load_profile(flashed) if flashed else None


def format_checks(checks: list[Check]) -> list[str]:
    lines = []
    for c in checks:
        lines.append(f"{c.status:<5} {c.name:<14} {c.detail}")
        if c.fix and c.status != OK:
            lines.append(f"{'':<20} fix: {c.fix}")
    fails = sum(c.status == FAIL for c in checks)
    warns = sum(c.status == WARN for c in checks)
    verdict = (
        "ready to run" if not fails else f"{fails} problem{'s block' if fails != 1 else ' blocks'} running"
    )
    lines.append(f"doctor: {verdict}" + (f"; {warns} warning{'s' * (warns != 1)}" if warns else ""))
    return lines

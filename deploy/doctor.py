"""`legato doctor`: is this device ready to run a bundle, and if not, which command fixes it.

One table of checks (``CHECKS``), run top to bottom in the order they are printed. Each takes a
:class:`deploy.checks.Ctx` (the injectable Env, the profile, the device facts, the bundle folder,
the port) and returns its :class:`Check` (ok / warn / FAIL, what was found, the command that fixes
it); FAIL means the loop cannot run (exit status 1), warn means it runs worse than it could.
Files are read under ``Env.root`` (``/`` on the device, a temporary folder in tests holding fake
/proc, /sys, /etc and /dev), commands through an injectable runner, modules through an
injectable finder, so the tests cover Jetson answers on any machine.

``facts(root)`` is the device identity that `legato flash` compares with a profile's [device]
table (``edge.device.profile_mismatch``) before it changes anything on a target.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from deploy.checks import FAIL, OK, WARN, Check, Ctx, Env
from deploy.doctor_serial import check_serial
from edge.device import profile_mismatch, unsupported_l4t

__all__ = ["CHECKS", "FAIL", "OK", "WARN", "Check", "Env", "facts", "format_checks", "run_checks"]

DEFAULT_BUNDLE_DIR = "/opt/legato"
MIN_FREE_FAIL, MIN_FREE_WARN = 200 << 20, 1 << 30
MODULE_FIX = {
    "onnxruntime": "pip install onnxruntime (on Jetson: onnxruntime-gpu from NVIDIA's Jetson index for "
    "your JetPack)",
    "tensorrt": "sudo apt install python3-libnvinfer python3-libnvinfer-dev, and make the venv with "
    "python3 -m venv --system-site-packages (docs/jetson.md)",
    "pycuda": "export PATH=/usr/local/cuda/bin:$PATH; pip install pycuda (builds on the device)",
}


# ---------------------------------------------------------------- device facts
def facts(root: str | Path = "/", env: Env | None = None) -> dict[str, Any]:
    """The device's identity (edge.device) plus its SoC family, CPU architecture, Python, memory
    and the 40-pin header UART."""
    from edge import device

    env = env or Env(root=Path(root))
    ident = device.identify(env.root, env.runner).to_dict()
    mod = env.module("tensorrt")
    ident["tensorrt"] = str(getattr(mod, "__version__", "")) or None if mod is not None else None
    soc = (device.jetson_soc(env.root) or "").lower() or None
    if soc is None:
        soc = "x86" if env.machine.lower() in ("x86_64", "amd64") else env.machine.lower() or "unknown"
    return {
        **ident,
        "soc": soc,
        "arch": env.machine,
        "python": ".".join(map(str, env.python)),
        "memory_bytes": device.memory_bytes(env.root),
        "header_uart": device.header_uart(env.root),
    }


def _mm(v: str | None) -> str:
    """'36.4' from '36.4.3', '10.3' from '10.3.0.30'."""
    return ".".join(str(v).split(".")[:2])


def _ver(v: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", str(v))[:3])


# ---------------------------------------------------------------- the checks
def check_profile(ctx: Ctx) -> Iterable[Check]:
    if ctx.profile is None:
        return []
    bad = profile_mismatch(ctx.profile.to_dict()["device"], ctx.facts)
    if bad:
        return [
            Check(
                "profile",
                FAIL,
                f"{ctx.profile.name} does not match this device: {'; '.join(bad)}",
                "choose the profile for this device (legato profiles)",
            )
        ]
    return [Check("profile", OK, f"{ctx.profile.name} matches this device")]


def check_python(ctx: Ctx) -> Check:
    py = ctx.env.python
    v = ".".join(map(str, py))
    if py[:2] < (3, 10):
        return Check(
            "python",
            FAIL,
            f"Python {v} (3.10+ needed; JetPack 5 ships 3.8 and is not supported)",
            "upgrade to JetPack 6.1+ (Python 3.10) and make the venv from /usr/bin/python3",
        )
    return Check("python", OK, f"Python {v}")


def _ort_providers(profile: Any) -> list[str]:
    out: list[str] = []
    for e in profile.engines.values() if profile is not None else ():
        if e.backend == "onnxruntime":
            out += [p for p in e.providers if p not in out]
    return out


def check_onnxruntime(ctx: Ctx) -> Check:
    ort = ctx.env.module("onnxruntime")
    if ort is None:
        return Check(
            "onnxruntime",
            FAIL,
            "not importable (the bundle is verified and run with it)",
            MODULE_FIX["onnxruntime"],
        )
    have = list(ort.get_available_providers())
    missing = [p for p in _ort_providers(ctx.profile) if p not in have]
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


def check_tensorrt(ctx: Ctx) -> Check:
    trt = ctx.env.module("tensorrt")
    if trt is None:
        if ctx.uses_tensorrt:
            return Check(
                "tensorrt",
                FAIL,
                "not importable, and the profile builds TensorRT engines",
                MODULE_FIX["tensorrt"],
            )
        return Check("tensorrt", OK, "absent (not needed: the profile runs onnxruntime)")
    v = str(getattr(trt, "__version__", "?"))
    if _ver(v)[:2] < (10, 3):
        return Check(
            "tensorrt",
            FAIL,
            f"TensorRT {v}: only TensorRT 10.3+ (JetPack 6.1+, 7) is supported; "
            "JetPack 5 / TensorRT 8.5 is not",
            "upgrade to JetPack 6.1 or later (TensorRT 10.3)",
        )
    want = ctx.profile.device.tensorrt if ctx.uses_tensorrt else None
    if want and _mm(want) != _mm(v):
        return Check(
            "tensorrt",
            FAIL,
            f"TensorRT {v}, the profile was written for {want}",
            "use the profile for this JetPack (legato profiles), or install that JetPack",
        )
    return Check("tensorrt", OK, f"TensorRT {v}")


def check_pycuda(ctx: Ctx) -> Check:
    mod = ctx.env.module("pycuda")
    if mod is None:
        if ctx.uses_tensorrt:
            return Check(
                "pycuda",
                FAIL,
                "not importable (the TensorRT backend moves buffers with it)",
                MODULE_FIX["pycuda"],
            )
        return Check("pycuda", OK, "absent (not needed without TensorRT)")
    v = getattr(mod, "VERSION_TEXT", None) or getattr(mod, "__version__", "?")
    cuda = ctx.facts.get("cuda")
    if cuda and _ver(cuda)[:1] >= (13,) and _ver(v) < (2025, 1, 2):
        return Check(
            "pycuda",
            FAIL if ctx.uses_tensorrt else WARN,
            f"pycuda {v} predates CUDA {cuda} (CUDA 13 needs pycuda 2025.1.2 or later)",
            "export PATH=/usr/local/cuda/bin:$PATH; pip install 'pycuda>=2025.1.2'",
        )
    return Check("pycuda", OK, f"pycuda {v}")


def _dist_version(*names: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    for n in names:
        with contextlib.suppress(PackageNotFoundError, ValueError):
            return version(n)
    return None


def check_cuda_python(ctx: Ctx) -> Check:
    """cuda-python's runtime bindings (CUDA graphs). `cuda` itself is a namespace package since
    the cuda-bindings split, so the probe is ``cuda.bindings`` (``cuda.cudart`` before 12.6)."""
    mod = ctx.env.module("cuda.bindings") or ctx.env.module("cuda.cudart")
    graphs = ctx.profile is not None and any(e.cuda_graphs for e in ctx.profile.engines.values())
    cuda = ctx.facts.get("cuda")
    pin = f"'cuda-python<{_ver(cuda)[0] + 1}'" if cuda else "cuda-python (its major version = CUDA's)"
    if mod is None:
        if graphs and ctx.uses_tensorrt:
            return Check(
                "cuda-python",
                WARN,
                "absent: the profile asks for CUDA graphs, which run without them",
                f"pip install {pin}  (cuda-python's major version must be the device's CUDA major)",
            )
        return Check("cuda-python", OK, "absent (only CUDA graphs need it)")
    v = getattr(mod, "__version__", None) or _dist_version("cuda-python", "cuda-bindings")
    if cuda and v and _ver(v)[:1] != _ver(cuda)[:1]:
        return Check(
            "cuda-python",
            WARN,
            f"cuda-python {v} is for CUDA {_ver(v)[0]}, this device has CUDA {cuda}: CUDA graphs will fail",
            f"pip install {pin}",
        )
    return Check("cuda-python", OK, f"cuda-python {v or '?'}")


def check_gpu(ctx: Ctx) -> Check:
    from edge.device import cc_satisfies

    gpu, cc = ctx.facts.get("gpu"), ctx.facts.get("compute_capability")
    if gpu is None:
        if ctx.uses_tensorrt:
            return Check(
                "gpu",
                FAIL,
                "no CUDA GPU found (no nvidia-smi answer, not a Jetson)",
                "run on the device the profile names, or choose a CPU profile (x86-cpu)",
            )
        return Check("gpu", OK, "none (not needed: the profile runs on the CPU)")
    want = ctx.profile.device.compute_capability if ctx.profile is not None else None
    if want and cc and not cc_satisfies(want, cc):
        return Check(
            "gpu",
            FAIL,
            f"{gpu}, compute capability {cc}; the profile is for {want}",
            "choose the profile for this device (legato profiles)",
        )
    return Check("gpu", OK, f"{gpu}, compute capability {cc or '?'}")


def check_l4t(ctx: Ctx) -> Check:
    f, profile = ctx.facts, ctx.profile
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
    why = unsupported_l4t(l4t)
    if why:
        return Check("jetpack", FAIL, f"{why}", "flash JetPack 6.1 or later with NVIDIA SDK Manager")
    return Check("jetpack", OK, f"L4T {l4t}, JetPack {jp or '?'}, {f.get('model') or 'unknown model'}")


def nvpmodel_modes(text: str | None) -> dict[str, int]:
    """{NAME: id} from /etc/nvpmodel.conf's ``< POWER_MODEL ID=n NAME=X >`` blocks (either order)."""
    out: dict[str, int] = {}
    for m in re.finditer(r"<\s*POWER_MODEL\b([^>]*)>", text or ""):
        attrs = dict(re.findall(r"(\w+)\s*=\s*([^\s>]+)", m.group(1)))
        if attrs.get("ID", "").isdigit() and "NAME" in attrs:
            out.setdefault(attrs["NAME"], int(attrs["ID"]))
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


def check_nvpmodel(ctx: Ctx) -> Check:
    if not ctx.jetson:
        return Check("nvpmodel", OK, "not a Jetson")
    want = ctx.profile.power.nvpmodel if ctx.profile is not None else None
    modes = nvpmodel_modes(ctx.env.read("/etc/nvpmodel.conf"))
    res = ctx.env.run(["nvpmodel", "-q"])
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


def check_clocks(ctx: Ctx) -> Check:
    """jetson_clocks pins each CPU's minimum frequency to its maximum: compare them."""
    if not ctx.jetson:
        return Check("jetson_clocks", OK, "not a Jetson")
    want = bool(ctx.profile is not None and ctx.profile.power.jetson_clocks)
    base = "/sys/devices/system/cpu/cpu0/cpufreq"
    lo, hi = ctx.env.read(f"{base}/scaling_min_freq"), ctx.env.read(f"{base}/scaling_max_freq")
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


def check_disk(ctx: Ctx) -> Check:
    where = ctx.env.path(ctx.bundle_dir)
    while not where.exists() and where != where.parent:
        where = where.parent
    if ctx.env.disk_free is not None:
        free = ctx.env.disk_free(where)
    else:
        st = os.statvfs(where)
        free = st.f_bavail * st.f_frsize
    detail = f"{free / 1e9:.2f} GB free at {ctx.bundle_dir}"
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


def _current(ctx: Ctx) -> Path:
    return ctx.env.path(ctx.bundle_dir) / "current"


def check_bundle(ctx: Ctx) -> Check:
    from deploy.agent import verify_release
    from edge.device import key_mismatch
    from edge.errors import LegatoError

    cur = _current(ctx)
    flash = f"legato flash --bundle B --profile P --target {ctx.bundle_dir}"
    if not cur.exists():
        return Check("bundle", FAIL, f"no current bundle at {ctx.bundle_dir}/current", flash)
    try:
        # every sha256 (plans, the flashed profile and calibration too); the graphs load
        m = verify_release(cur, load_graphs=True)["manifest"]
    except LegatoError as e:
        return Check(
            "bundle",
            FAIL,
            f"{ctx.bundle_dir}/current does not verify: {e}",
            f"legato flash --rollback --target {ctx.bundle_dir}, or flash it again",
        )
    name = Path(os.readlink(cur)).name if cur.is_symlink() else m.name
    if ctx.uses_tensorrt and not m.engines:
        return Check(
            "bundle",
            FAIL,
            f"{name} verifies but has no TensorRT engines, and the profile needs them",
            f"{flash}  (builds the engines on the device)",
        )
    f = ctx.facts
    here = {k: f.get(k) for k in ("tensorrt", "cuda", "gpu", "compute_capability", "l4t", "jetpack")}
    for graph, e in m.engines.items():
        stored = e.get("key", {})
        bad = key_mismatch(stored, {**here, "onnx_sha256": stored.get("onnx_sha256")})
        if bad:
            return Check(
                "bundle",
                FAIL,
                f"{name}: engine {graph} was built for another device ({'; '.join(bad)})",
                f"{flash}  (rebuilds the engines here)",
            )
    engines = f", engines {', '.join(m.engines)} match this device" if m.engines else ""
    return Check("bundle", OK, f"{name} verifies ({len(m.files) + 1} files){engines}")


def check_memory(ctx: Ctx) -> Iterable[Check]:
    """The current bundle fits this device's memory beside the OS and the camera pipeline."""
    import json

    from edge import memory_budget as mb
    from edge.errors import LegatoError

    cur = _current(ctx)
    try:
        data = json.loads((cur / "manifest.json").read_text())
    except (OSError, ValueError):
        return []  # no readable bundle: the bundle check says so
    total_gb = ctx.profile.device.memory_gb if ctx.profile is not None else None
    sizes = [int(total_gb * 1e9)] if total_gb else []
    if ctx.facts.get("memory_bytes"):
        sizes.append(int(ctx.facts["memory_bytes"]))
    if not sizes:
        return []
    total = min(sizes)
    override = ctx.profile.device.memory_reserve_gb if ctx.profile is not None else None
    reserve = mb.reserve_bytes(total, override)
    graph = getattr(ctx.profile.control, "graph", None) if ctx.profile is not None else None
    try:
        need = mb.bundle_need(data, cur, graph, where=f"{ctx.bundle_dir}/current")
    except LegatoError as e:
        return [Check("memory", FAIL, str(e), "export the bundle again (legato export)")]
    device = ctx.profile.device.model if ctx.profile is not None else "this device"
    problem = mb.fit_problem(need, total, reserve, device)
    if problem:
        return [Check("memory", FAIL, problem, "export a smaller model or precision for this profile")]
    return [Check("memory", OK, mb.summary(need, total, reserve))]


CHECKS: tuple[Callable[[Ctx], Check | Iterable[Check]], ...] = (
    check_profile,
    check_python,
    check_onnxruntime,
    check_tensorrt,
    check_pycuda,
    check_cuda_python,
    check_gpu,
    check_l4t,
    check_nvpmodel,
    check_clocks,
    check_serial,
    check_disk,
    check_bundle,
    check_memory,
)


def run_checks(
    env: Env, profile: Any = None, bundle_dir: str | Path = DEFAULT_BUNDLE_DIR, port: str | None = None
) -> tuple[list[Check], dict[str, Any]]:
    """Every check of CHECKS, in the order they are printed, and the facts they used."""
    ctx = Ctx(env, profile, facts(env=env), Path(bundle_dir), port)
    out: list[Check] = []
    for check in CHECKS:
        got = check(ctx)
        out.extend([got] if isinstance(got, Check) else got)
    return out, ctx.facts


def load_profile_for(env: Env, name: str | None, bundle_dir: str | Path) -> Any:
    """--profile, else the profile flashed with the current release, else None."""
    from edge.profiles import load_profile

    if name:
        return load_profile(name)
    flashed = env.path(bundle_dir) / "current" / "profile.toml"
    return load_profile(flashed) if flashed.is_file() else None


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

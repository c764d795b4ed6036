"""Device profiles: one TOML file per target (profiles/*.toml), loaded without torch.

``load_profile(name_or_path)`` returns a frozen :class:`Profile`. The schema (SCHEMA below,
documented in profiles/README.md) is checked on load: an unknown key, a wrong type, a value
out of range or an impossible combination raises :class:`edge.errors.ProfileError` naming the
file, the key and what is allowed. Impossible combinations refused:
- fp8 on a device without FP8 (Orin: compute capability 8.7; FP8 needs 8.9+);
- a DLA core on a device without DLA (or an index beyond its cores);
- a TensorRT engine on a device without TensorRT / a GPU;
- a precision the device does not list in ``device.precisions``;
- chunking that breaks d <= s <= H - d or puts the ramp outside the overlap;
- a stream rate whose setpoint frames (plus, on a half-duplex bus, the status reads) do not
  fit the serial line's baud rate (10 bits a byte, 8N1, at most 80 % of the line).
"""

from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from edge.errors import ProfileError

if sys.version_info >= (3, 11):
    import tomllib
else:  # JetPack 6: Python 3.10
    import tomli as tomllib

PROFILE_DIR = Path(__file__).resolve().parents[1] / "profiles"
DEFAULT_PROFILE = "x86-cpu"
BACKENDS = ("onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8", "fp8")
PROTOCOLS = ("firmware", "feetech", "dynamixel")
SOCS = ("x86", "orin", "thor")
ENGINE_GRAPHS = ("prefix", "flow_head", "fused")
LINE_SHARE = 0.8  # at most this share of the serial line's bit rate is planned for


@dataclass(frozen=True)
class DeviceFacts:
    soc: str  # x86 | orin | thor
    model: str  # human-readable board name
    memory_gb: float  # RAM (unified on Jetson)
    precisions: tuple[str, ...]  # what this target can run: fp32 fp16 int8 fp8
    compute_capability: str | None = None  # "8.7" (a Jetson SoC's), "8.6+" (8.6 or newer); None: no CUDA GPU
    jetpack: str | None = None  # JetPack the profile was written for
    l4t: str | None = None  # L4T release, e.g. "36.4.3"
    tensorrt: str | None = None  # TensorRT version the profile was written for
    cuda: str | None = None  # CUDA version
    dla_cores: int = 0  # DLA cores (0: none)
    fp8: bool = False  # tensor cores with FP8
    memory_reserve_gb: float | None = None  # kept free for the OS, CUDA, cameras (edge.memory_budget)


@dataclass(frozen=True)
class EngineSettings:
    backend: str  # onnxruntime | tensorrt
    precision: str  # fp32 | fp16 | int8 | fp8
    workspace_mb: int = 1024  # TensorRT workspace pool limit
    dla_core: int | None = None  # DLA core with GPU fallback; None = GPU only
    cuda_graphs: bool = False  # capture the engine call in a CUDA graph (runtime option)
    intra_op_threads: int = 1  # onnxruntime intra-op threads
    inter_op_threads: int = 1  # onnxruntime inter-op threads
    providers: tuple[str, ...] = ("CPUExecutionProvider",)  # onnxruntime providers, in order


@dataclass(frozen=True)
class ControlSettings:
    """The chunking the robot runs. H and N are the bundle's (a model's own): a profile may pin
    them (a bundle with another H or N is refused); :func:`chunk_geometry` resolves s and checks
    the rest against the bundle before anything moves."""

    rate_hz: float  # control clock
    execution_horizon: float  # s: actions executed per chunk (an integer), or a fraction of H in (0, 1)
    d_max: int  # largest delay the runtime will use (<= the model's)
    ramp: int  # r, Legato ramp length the loop samples with (capped at H - s - d per chunk)
    latency_window: int = 10  # b: delay estimate = ceil(max of the last b latencies / period)
    graph: str = "stepwise"  # fused: one call per chunk | stepwise: prefix + N head calls (per-step times)
    horizon: int | None = None  # H: None = the bundle's; a number refuses bundles with another H
    num_steps: int | None = None  # N: None = the bundle's; a number refuses bundles with another N


@dataclass(frozen=True)
class SerialSettings:
    port: str  # /dev/ttyTHS0, /dev/ttyUSB0, ...
    baud: int
    protocol: str  # firmware | feetech | dynamixel
    watchdog_ms: int  # controller-side hold when the host goes silent
    ids: tuple[int, ...] = (1, 2, 3)  # motor ids, joint order
    stream_hz: float | None = None  # setpoint stream rate; None = control rate
    setup_timeout_ms: float | None = None  # servo buses: reply wait per request while starting
    #   (ping, calibration, torque; never in the cycle); None: the bus's default (100 ms)


@dataclass(frozen=True)
class RobotSettings:
    """The arm the robot has. Arrays are in action order (the order of the model's actions and of
    ``[serial] ids``); radians and seconds. ``max_velocity`` and ``max_step`` may be one number
    for every joint; at least one of them is given."""

    joints: tuple[str, ...]  # joint names in action order (LeRobot's motor names on servo buses)
    q_min: tuple[float, ...]  # rad, lowest setpoint per joint (every setpoint is clamped to it)
    q_max: tuple[float, ...]  # rad, highest
    max_velocity: tuple[float, ...] | None = None  # rad/s per joint (the controller's speed cap)
    max_step: tuple[float, ...] | None = None  # rad per control tick; default max_velocity / rate_hz
    calibration: str | None = None  # LeRobot calibration JSON (servo buses), relative to the profile
    stale_ms: float = 100.0  # joint state older than this holds the arm and stops the policy
    max_fault_ticks: int = 50  # consecutive fault ticks (NaN, stale state) before `legato run` stops

    @property
    def n_joints(self) -> int:
        return len(self.joints)

    def step_per_tick(self, rate_hz: float) -> tuple[float, ...]:
        """rad per control tick, per joint: max_step, else max_velocity / rate_hz."""
        if self.max_step is not None:
            return self.max_step
        assert self.max_velocity is not None  # check_robot: one of the two is given
        return tuple(v / rate_hz for v in self.max_velocity)

    def velocity(self, rate_hz: float) -> tuple[float, ...]:
        """rad/s per joint: max_velocity, else max_step * rate_hz."""
        if self.max_velocity is not None:
            return self.max_velocity
        return tuple(s * rate_hz for s in self.step_per_tick(rate_hz))


@dataclass(frozen=True)
class PowerSettings:
    nvpmodel: str | None = None  # power mode name (read ids from /etc/nvpmodel.conf)
    jetson_clocks: bool = False
    # while the clock process runs it holds every CPU's wake-up latency to this (Linux PM QoS,
    # /dev/cpu_dma_latency; root), so a clock sleeping on an idle CPU is not woken late from a deep
    # idle state (docs/runtime.md). 0: idle CPUs poll. -1 (default): the idle states are left
    # alone (measured no better on this project's VM; to be measured on each device).
    cpu_wake_latency_us: int = -1


@dataclass(frozen=True)
class Profile:
    name: str
    path: Path
    description: str
    device: DeviceFacts
    engines: dict[str, EngineSettings]  # prefix, flow_head (fused optional: defaults to flow_head's)
    control: ControlSettings
    serial: SerialSettings
    power: PowerSettings
    robot: RobotSettings
    # camera name (the bundle's, LeRobot's observation.images.<name>) -> source: a V4L2 index, a
    # GStreamer pipeline (with '!') or a video file; `legato run --camera NAME=SPEC` overrides one
    cameras: dict[str, str] = field(default_factory=dict)

    def engine(self, graph: str) -> EngineSettings:
        return self.engines.get(graph) or self.engines["flow_head"]

    @property
    def uses_tensorrt(self) -> bool:
        return any(e.backend == "tensorrt" for e in self.engines.values())

    def to_dict(self) -> dict[str, Any]:
        def d(obj: Any) -> dict[str, Any]:
            out = {}
            for f in fields(obj):
                v = getattr(obj, f.name)
                if v is not None:
                    out[f.name] = list(v) if isinstance(v, tuple) else v
            return out

        return {
            "name": self.name,
            "description": self.description,
            "device": d(self.device),
            "engine": {k: d(v) for k, v in self.engines.items()},
            "control": d(self.control),
            "serial": d(self.serial),
            "power": d(self.power),
            "robot": d(self.robot),
            **({"cameras": dict(self.cameras)} if self.cameras else {}),
        }


# Schema: table -> (dataclass, required keys). Types come from the dataclass fields.
_TABLES: dict[str, tuple[type, tuple[str, ...]]] = {
    "device": (DeviceFacts, ("soc", "model", "memory_gb", "precisions")),
    "control": (ControlSettings, ("rate_hz", "execution_horizon", "d_max", "ramp")),
    "serial": (SerialSettings, ("port", "baud", "protocol", "watchdog_ms")),
    "power": (PowerSettings, ()),
    "robot": (RobotSettings, ("joints", "q_min", "q_max")),
}
_ENGINE_REQUIRED = ("backend", "precision")
GRAPHS = ("fused", "stepwise")
_CHOICES = {"soc": SOCS, "backend": BACKENDS, "precision": PRECISIONS, "protocol": PROTOCOLS, "graph": GRAPHS}
_RANGES = {  # key -> (lo, hi) inclusive
    "memory_gb": (0.5, 4096),
    "memory_reserve_gb": (0, 4096),
    "dla_cores": (0, 4),
    "workspace_mb": (16, 65536),
    "dla_core": (0, 3),
    "intra_op_threads": (0, 256),
    "inter_op_threads": (0, 256),
    "rate_hz": (1, 2000),
    "horizon": (1, 1024),
    "execution_horizon": (0, 1024),  # > 0: an integer count or a fraction of H (_check_combinations)
    "num_steps": (1, 100),
    "d_max": (0, 1024),
    "ramp": (0, 1024),
    "latency_window": (1, 1000),
    "baud": (1200, 12_000_000),
    "watchdog_ms": (0, 60_000),
    "stream_hz": (1, 5000),
    "setup_timeout_ms": (1, 10_000),
    "stale_ms": (1, 60_000),
    "max_fault_ticks": (1, 1_000_000),
    "cpu_wake_latency_us": (-1, 1_000_000),
}


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "")


def _convert(value: Any, tp: str, where: str, key: str) -> Any:
    """Check `value` against a dataclass field annotation string (from __future__ annotations)."""
    optional = tp.endswith("| None")
    base = tp.replace("| None", "").strip()

    def bad(allowed: str) -> ProfileError:
        return ProfileError(f"{where}: key {key!r} must be {allowed}, got {value!r} ({type(value).__name__})")

    if base == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if base == "str":
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if base.startswith("tuple[int"):
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise bad("a list of integers")
        return tuple(value)
    if base.startswith("tuple[float"):  # a list of numbers; one number stands for every joint
        items = value if isinstance(value, list) else [value]
        if not items or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in items):
            raise bad("a number or a list of numbers")
        return tuple(float(v) for v in items)
    if base.startswith("tuple[str"):
        if not isinstance(value, list) or any(not isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return tuple(value)
    raise AssertionError(f"schema type {tp} for {key} ({optional})")  # internal invariant


def _table(cls: type, raw: Any, required: tuple[str, ...], where: str) -> Any:
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: must be a table, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = [k for k in raw if k not in known]
    if unknown:
        raise ProfileError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(known)})")
    missing = [k for k in required if k not in raw]
    if missing:
        raise ProfileError(f"{where}: missing key {missing[0]!r} (required: {', '.join(required)})")
    kw = {}
    for k, v in raw.items():
        val = _convert(v, str(known[k].type), where, k)
        if k in _CHOICES:
            for item in val if isinstance(val, tuple) else (val,):
                if item not in _CHOICES[k]:
                    raise ProfileError(
                        f"{where}: key {k!r} = {item!r} is not allowed (allowed: {', '.join(_CHOICES[k])})"
                    )
        if k == "precisions":
            for item in val:
                if item not in PRECISIONS:
                    raise ProfileError(
                        f"{where}: key 'precisions' has {item!r} (allowed: {', '.join(PRECISIONS)})"
                    )
        if k in _RANGES:
            lo, hi = _RANGES[k]
            if not lo <= val <= hi:
                raise ProfileError(f"{where}: key {k!r} = {val} is out of range (allowed: {lo} to {hi})")
        kw[k] = val
    return cls(**kw)


def setpoint_bytes(protocol: str, joints: int) -> int:
    """Bytes on the wire per control tick for `joints` motors (see docs/protocol.md):
    firmware: one SETPOINT frame (8 header + 1 + 4 n payload + 4 CRC-32C, COBS +1, delimiter +1);
    its telemetry returns on the other wire (full duplex).
    feetech: SYNC WRITE (7 + 3 n) then a SYNC READ of position (8 + n) answered by n status
    packets of 8 bytes, all on one half-duplex wire.
    dynamixel: SYNC WRITE (14 + 5 n) then SYNC READ (14 + n) with n status packets of 15 bytes."""
    if protocol == "firmware":
        return 8 + 1 + 4 * joints + 4 + 2
    if protocol == "feetech":
        return (7 + 3 * joints) + (8 + joints) + 8 * joints
    if protocol == "dynamixel":
        return (14 + 5 * joints) + (14 + joints) + 15 * joints
    raise AssertionError(protocol)


_VERSION = re.compile(r"\d+(\.\d+)*")
_CC = re.compile(r"\d+\.\d+\+?")
MAX_JOINTS = 32  # a SETPOINT frame carries 1..32 joints (firmware_bridge.messages.MAX_JOINTS)
SERVO_IDS = (0, 252)  # Feetech and Dynamixel ids a bus may address (253+: reserved, broadcast)
SERVO_WATCHDOG_MAX_MS = 2540  # Dynamixel Bus Watchdog: 1..127 units of 20 ms


def _check_device(dev: DeviceFacts, where: str) -> None:
    for key in ("jetpack", "l4t", "tensorrt", "cuda"):
        v = getattr(dev, key)
        if v is not None and not _VERSION.fullmatch(v):
            raise ProfileError(
                f"{where}: key 'device.{key}' = {v!r} is not a version (allowed: digits and dots)"
            )
    cc = dev.compute_capability
    if cc is not None:
        if not _CC.fullmatch(cc):
            raise ProfileError(
                f"{where}: key 'device.compute_capability' = {cc!r} "
                '(allowed: "8.7", or "8.6+" for 8.6 or newer)'
            )
        if cc.endswith("+") and dev.soc != "x86":
            raise ProfileError(
                f"{where}: key 'device.compute_capability' = {cc!r}: a {dev.soc} SoC has one compute "
                f"capability (allowed: {cc[:-1]!r})"
            )
    if dev.soc in ("orin", "thor"):
        trt = tuple(int(x) for x in (dev.tensorrt or "10.3").split(".")[:2])
        l4t_major = int((dev.l4t or "36").split(".")[0])
        if trt < (10, 3) or l4t_major < 36:
            raise ProfileError(
                f"{where}: keys 'device.tensorrt' = {dev.tensorrt!r} / 'device.l4t' = {dev.l4t!r}: "
                "JetPack 5 / TensorRT 8.5 is not supported (allowed: JetPack 6.1+ with TensorRT 10.3+, "
                "or JetPack 7)"
            )
    if dev.memory_reserve_gb is not None and dev.memory_reserve_gb >= dev.memory_gb:
        raise ProfileError(
            f"{where}: key 'device.memory_reserve_gb' = {dev.memory_reserve_gb:g} leaves nothing of "
            f"memory_gb = {dev.memory_gb:g} for the bundle (allowed: below {dev.memory_gb:g})"
        )


def _check_serial(p: Profile, where: str) -> None:
    """What the protocol and the buses enforce (firmware_bridge: messages, config.BridgeConfig,
    servo_bus.ServoBusConfig), so that a profile `legato profiles show` accepts never fails later."""
    sr, c = p.serial, p.control
    if not sr.port.strip():
        raise ProfileError(
            f"{where}: key 'serial.port' is empty (allowed: a device path such as /dev/ttyUSB0)"
        )
    ids = sr.ids
    if not 1 <= len(ids) <= MAX_JOINTS:
        raise ProfileError(
            f"{where}: key 'serial.ids' has {len(ids)} entries (allowed: 1 to {MAX_JOINTS} joints)"
        )
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ProfileError(
            f"{where}: key 'serial.ids' repeats id {dup[0]} (each joint needs its own motor id)"
        )
    lo, hi = SERVO_IDS if sr.protocol != "firmware" else (0, 65535)
    out = [i for i in ids if not lo <= i <= hi]
    if out:
        raise ProfileError(
            f"{where}: key 'serial.ids' has id {out[0]}, outside {lo}..{hi} for the {sr.protocol} bus"
        )
    if sr.protocol == "firmware":
        hz = sr.stream_hz or c.rate_hz
        if not 5 <= sr.watchdog_ms <= 60_000:
            raise ProfileError(
                f"{where}: key 'serial.watchdog_ms' = {sr.watchdog_ms}: the controller accepts 5 to 60000 ms"
            )
    else:
        hz = c.rate_hz  # a servo bus runs one write + read cycle per control period
        least = 2000 / c.rate_hz
        if sr.watchdog_ms and not least <= sr.watchdog_ms <= SERVO_WATCHDOG_MAX_MS:
            raise ProfileError(
                f"{where}: key 'serial.watchdog_ms' = {sr.watchdog_ms}: the {sr.protocol} bus takes 0 "
                f"(off) or {least:g} (two control periods) to {SERVO_WATCHDOG_MAX_MS} ms (127 x 20 ms)"
            )
        return
    if sr.watchdog_ms * 1e-3 * hz < 2:
        raise ProfileError(
            f"{where}: key 'serial.watchdog_ms' = {sr.watchdog_ms} is shorter than two stream "
            f"periods at {hz:g} Hz (allowed: >= {2000 / hz:.0f})"
        )


def _check_bus(p: Profile, where: str) -> None:
    """Build (not open) the bus configuration the runtime builds from this profile (edge.rig.bus_spec:
    the robot's limits, calibration, period, watchdog), as firmware_bridge.factory.open_bus does, so
    that any rule the buses enforce, now or later, is met at load time."""
    from edge.rig import bus_spec
    from firmware_bridge.config import BridgeConfig, LinkConfig
    from firmware_bridge.servo_bus import ServoBusConfig

    spec = bus_spec(p)  # raises ProfileError itself for a calibration the joints do not fit
    settings = dict(spec.settings)
    try:
        if spec.kind == "firmware":
            LinkConfig(settings.pop("port"), settings.pop("baudrate"))
            BridgeConfig(**settings)
        else:
            ServoBusConfig(**settings)
    except (ValueError, TypeError) as e:
        raise ProfileError(f"{where}: [serial] is refused by the {spec.kind} bus: {e}") from None


def _check_combinations(p: Profile, where: str) -> None:
    dev = p.device
    _check_device(dev, where)
    if "fp8" in dev.precisions and not dev.fp8:
        raise ProfileError(
            f"{where}: key 'device.precisions' lists fp8 but device.fp8 is false "
            f"({dev.soc} has no FP8; it needs compute capability 8.9+)"
        )
    if dev.fp8 and dev.soc == "orin":
        raise ProfileError(
            f"{where}: key 'device.fp8' = true is impossible on Orin (compute capability 8.7 "
            "has no FP8; allowed: false)"
        )
    for graph, e in p.engines.items():
        at = f"{where}: key 'engine.{graph}"
        if e.precision not in dev.precisions:
            extra = " (Orin has no FP8)" if e.precision == "fp8" and dev.soc == "orin" else ""
            raise ProfileError(
                f"{at}.precision' = {e.precision!r} cannot run on {dev.model}{extra} "
                f"(allowed: {', '.join(dev.precisions)})"
            )
        if e.precision == "fp8" and not dev.fp8:
            raise ProfileError(f"{at}.precision' = 'fp8' needs FP8 tensor cores; {dev.model} has none")
        if e.backend == "tensorrt" and (dev.tensorrt is None or dev.compute_capability is None):
            raise ProfileError(
                f"{at}.backend' = 'tensorrt' needs device.tensorrt and "
                f"device.compute_capability (a CUDA GPU); allowed here: onnxruntime"
            )
        if e.dla_core is not None:
            if dev.dla_cores == 0:
                raise ProfileError(f"{at}.dla_core' = {e.dla_core}: {dev.model} has no DLA (remove the key)")
            if e.dla_core >= dev.dla_cores:
                raise ProfileError(
                    f"{at}.dla_core' = {e.dla_core} but the device has {dev.dla_cores} DLA "
                    f"cores (allowed: 0 to {dev.dla_cores - 1})"
                )
            if e.backend != "tensorrt":
                raise ProfileError(f"{at}.dla_core' needs backend 'tensorrt' (DLA runs TensorRT engines)")
            if e.precision == "fp32":
                raise ProfileError(
                    f"{at}.dla_core' = {e.dla_core} with precision 'fp32': DLA runs fp16 and int8 only (the "
                    "whole graph would silently fall back to the GPU; allowed: precision fp16 or int8)"
                )
    c = p.control
    s = c.execution_horizon
    if not (0 < s < 1 or s == int(s)):
        raise ProfileError(f"{where}: key 'control.execution_horizon' = {s:g} must be an integer (actions "
                           "per chunk) or a fraction of H between 0 and 1")  # fmt: skip
    if s >= 1 and s < c.d_max:
        raise ProfileError(f"{where}: keys 'control.execution_horizon' = {s:g} and 'control.d_max' = "
                           f"{c.d_max} break d <= s")  # fmt: skip
    if c.horizon is not None:  # pinned: the rest of the geometry is checked now, not per bundle
        chunk_geometry(c, c.horizon, c.num_steps or 1, c.d_max, where, error=ProfileError)
    sr = p.serial
    hz = sr.stream_hz or c.rate_hz
    if hz < c.rate_hz:
        raise ProfileError(
            f"{where}: key 'serial.stream_hz' = {hz:g} is below control.rate_hz = {c.rate_hz:g}"
        )
    need = setpoint_bytes(sr.protocol, len(sr.ids)) * 10 * hz  # 8N1: 10 bits a byte
    if need > LINE_SHARE * sr.baud:
        raise ProfileError(
            f"{where}: key 'serial.baud' = {sr.baud}: {len(sr.ids)}-joint {sr.protocol} setpoint frames at "
            f"{hz:g} Hz need {need:.0f} bit/s, more than {LINE_SHARE:.0%} of the line "
            f"(allowed: baud >= {need / LINE_SHARE:.0f} or a lower rate)"
        )
    _check_serial(p, where)


def chunk_geometry(c: ControlSettings, horizon: int, num_steps: int, trained_d_max: int, where: str,
                   error: type[Exception] | None = None,
                   model: str = "the bundle") -> ControlSettings:  # fmt: skip
    """The control settings for a model of chunk length ``horizon`` (H), ``num_steps`` (N) and
    trained delay ``trained_d_max``: H and N the model's, s an integer (``execution_horizon``
    given as a count) or ``floor(fraction * H)`` (at least 1), with the profile's d_max and ramp
    checked against them (d_max <= the trained d_max, d_max <= s <= H - d_max, d_max + ramp <=
    H - s). A conflict is one line (edge.errors.MethodError unless ``error`` is given) naming the
    profile's key and the value of ``model`` (the bundle, a policy server, a checkpoint)."""
    from edge.errors import MethodError

    err = error or MethodError
    if c.num_steps is not None and c.num_steps != num_steps:
        raise err(f"{where} asks for N={c.num_steps} steps but {model} was trained with N={num_steps}")
    if c.horizon is not None and c.horizon != horizon:
        raise err(f"{where} asks for H={c.horizon} but {model} has H={horizon}")
    if c.d_max > trained_d_max:
        raise err(f"{where} allows delays up to d_max={c.d_max} but {model} was trained for "
                  f"d_max={trained_d_max}")  # fmt: skip
    frac = 0 < c.execution_horizon < 1
    s = max(1, math.floor(c.execution_horizon * horizon)) if frac else int(c.execution_horizon)
    given = f"'control.execution_horizon' = {c.execution_horizon:g}" + (f" (s = {s})" if frac else "")
    if not c.d_max <= s <= horizon - c.d_max:
        raise err(f"{where}: keys {given} and 'control.d_max' = {c.d_max} break d <= s <= H - d with "
                  f"H = {horizon} ({model})")  # fmt: skip
    if c.d_max + c.ramp > horizon - s:
        raise err(f"{where}: key 'control.ramp' = {c.ramp}: d_max + ramp = {c.d_max + c.ramp} exceeds the "
                  f"overlap H - s = {horizon - s} with H = {horizon} ({model}; allowed: 0 to "
                  f"{max(0, horizon - s - c.d_max)})")  # fmt: skip
    return replace(c, horizon=horizon, num_steps=num_steps, execution_horizon=s)


def profile_path(name_or_path: str | Path) -> Path:
    """A profile name (profiles/NAME.toml, or $LEGATO_PROFILES/NAME.toml) or a path to a TOML file."""
    text = str(name_or_path)
    if text.endswith(".toml") or os.sep in text or Path(text).is_file():
        p = Path(text)
        if not p.is_file():
            raise ProfileError(f"{p}: no such profile file")
        return p
    for d in [Path(x) for x in os.environ.get("LEGATO_PROFILES", "").split(os.pathsep) if x] + [PROFILE_DIR]:
        if (d / f"{text}.toml").is_file():
            return d / f"{text}.toml"
    raise ProfileError(
        f"unknown profile {text!r} (known: {', '.join(list_profiles()) or 'none'}; "
        "or give a path to a .toml file)"
    )


def list_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml")) if PROFILE_DIR.is_dir() else []


def load_profile(name_or_path: str | Path = DEFAULT_PROFILE) -> Profile:
    path = profile_path(name_or_path)
    where = str(path)
    try:
        raw = tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise ProfileError(f"{where}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ProfileError(
            f"{where}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
            "a profile is a TOML file in UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{where}: not valid TOML ({e})") from None
    top = ("name", "description", "device", "engine", "control", "serial", "power", "robot", "cameras")
    unknown = [k for k in raw if k not in top]
    if unknown:
        raise ProfileError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(top)})")
    required = ("device", "engine", "control", "serial", "robot")
    for k in required:
        if k not in raw:
            raise ProfileError(f"{where}: missing table [{k}] (required: {', '.join(required)})")
    for k in ("name", "description"):
        if k in raw and not isinstance(raw[k], str):
            raise ProfileError(f"{where}: key {k!r} must be a string")
    tables = {k: _table(cls, raw.get(k, {}), req, f"{where} [{k}]") for k, (cls, req) in _TABLES.items()}
    eng_raw = raw["engine"]
    if not isinstance(eng_raw, dict):
        raise ProfileError(f"{where}: [engine] must hold tables [engine.prefix] and [engine.flow_head]")
    unknown = [k for k in eng_raw if k not in ENGINE_GRAPHS]
    if unknown:
        raise ProfileError(
            f"{where}: unknown key 'engine.{unknown[0]}' (allowed: {', '.join(ENGINE_GRAPHS)})"
        )
    for g in ("prefix", "flow_head"):
        if g not in eng_raw:
            raise ProfileError(f"{where}: missing table [engine.{g}]")
    engines = {
        g: _table(EngineSettings, v, _ENGINE_REQUIRED, f"{where} [engine.{g}]") for g, v in eng_raw.items()
    }
    prof = Profile(
        name=str(raw.get("name", path.stem)),
        path=path,
        description=str(raw.get("description", "")),
        device=tables["device"],
        engines=engines,
        control=tables["control"],
        serial=tables["serial"],
        power=tables["power"],
        robot=_resolve_calibration(tables["robot"], path),
        cameras=_cameras(raw.get("cameras", {}), where),
    )
    _check_combinations(prof, where)
    prof = check_robot(prof, where)
    _check_bus(prof, where)
    return prof


def _cameras(raw: Any, where: str) -> dict[str, str]:
    """[cameras]: name = "source" (a V4L2 index may be an integer)."""
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: [cameras] must be a table of name = source")
    out = {}
    for name, src in raw.items():
        if not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise ProfileError(
                f"{where} [cameras]: camera name {name!r} must be letters, digits, '_', '-', '.'"
            )
        if (
            isinstance(src, bool)
            or not isinstance(src, str | int)
            or (isinstance(src, str) and not src.strip())
        ):
            raise ProfileError(f"{where} [cameras] {name}: the source must be a V4L2 index, a GStreamer "
                               f"pipeline or a video file path, got {src!r}")  # fmt: skip
        if isinstance(src, int) and src < 0:
            raise ProfileError(f"{where} [cameras] {name}: V4L2 index {src} must be >= 0")
        out[name] = str(src)
    return out


def _resolve_calibration(robot: RobotSettings, profile: Path) -> RobotSettings:
    """The calibration path relative to the profile's folder (``~`` expanded), made absolute."""
    if robot.calibration is None:
        return robot
    p = Path(os.path.expanduser(robot.calibration))
    return replace(robot, calibration=str(p if p.is_absolute() else (profile.parent / p).resolve()))


def check_robot(p: Profile, where: str | None = None) -> Profile:
    """Refuse a [robot] table that does not describe one arm: lengths that differ from the joint
    count, limits that are not finite or not ordered, no speed limit, a calibration that is not
    for these joints and servo ids, servo ids that are not one per joint. Returns the profile with
    one-number speed limits expanded per joint. Run on load and on the profile ``--sim`` writes
    its arm into."""
    where = where or str(p.path)
    r, at = p.robot, f"{where}: key 'robot."
    n = r.n_joints
    if n == 0 or len(set(r.joints)) != n or not all(r.joints):
        raise ProfileError(f"{at}joints' = {list(r.joints)} must name each joint once (non-empty names)")
    for key in ("q_min", "q_max", "max_velocity", "max_step"):
        v = getattr(r, key)
        if v is None:
            continue
        if key in ("max_velocity", "max_step") and len(v) == 1 and n > 1:
            v = v * n
            r = replace(r, **{key: v})
        if len(v) != n:
            raise ProfileError(f"{at}{key}' has {len(v)} values for {n} joints {list(r.joints)} "
                               "(allowed: one per joint, in action order)")  # fmt: skip
        positive = key.startswith("max_")
        if any(not math.isfinite(x) or (positive and x <= 0) for x in v):
            allowed = "finite numbers > 0" if positive else "finite numbers"
            raise ProfileError(f"{at}{key}' = {list(v)} (allowed: {allowed})")
    for j, (lo, hi) in enumerate(zip(r.q_min, r.q_max, strict=True)):
        if not lo < hi:
            raise ProfileError(f"{at}q_min' = {lo} is not below 'robot.q_max' = {hi} for joint "
                               f"{r.joints[j]!r}")  # fmt: skip
    if r.max_velocity is None and r.max_step is None:
        raise ProfileError(f"{where}: [robot] needs max_velocity (rad/s) or max_step (rad per tick)")
    p = replace(p, robot=r)
    servo = p.serial.protocol in ("feetech", "dynamixel")
    if servo and len(p.serial.ids) != n:
        raise ProfileError(f"{where}: key 'serial.ids' = {list(p.serial.ids)} names {len(p.serial.ids)} "
                           f"servos but [robot] has {n} joints {list(r.joints)}")  # fmt: skip
    if r.calibration is not None and not servo:
        raise ProfileError(f"{at}calibration' applies to servo buses (feetech, dynamixel); "
                           f"protocol {p.serial.protocol!r} calibrates on the controller (remove the "
                           "key)")  # fmt: skip
    if p.serial.setup_timeout_ms is not None and not servo:
        raise ProfileError(f"{where}: key 'serial.setup_timeout_ms' applies to servo buses (feetech, "
                           f"dynamixel); protocol {p.serial.protocol!r} has its own handshake (remove "
                           "the key)")  # fmt: skip
    robot_calibration(p, where)
    return p


def robot_calibration(p: Profile, where: str | None = None) -> Any:
    """The [robot] calibration as a ``firmware_bridge.calibration.Calibration`` in joint order
    (LeRobot's motor names matched to the joint names), or None without one. A file that is
    missing, unreadable, not LeRobot's format, or for other joints or servo ids is one line."""
    r = p.robot
    if r.calibration is None:
        return None
    from firmware_bridge.calibration import Calibration

    what = f"{where or p.path}: key 'robot.calibration' = {r.calibration}"
    try:
        cal = Calibration.from_lerobot(r.calibration)
    except FileNotFoundError:
        raise ProfileError(f"{what}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ProfileError(f"{what}: cannot read ({e})") from None
    except (ValueError, TypeError) as e:  # json.JSONDecodeError is a ValueError
        raise ProfileError(f"{what}: not a LeRobot calibration ({e})") from None
    if set(cal.names) != set(r.joints):
        raise ProfileError(f"{what} names motors {list(cal.names)}; [robot] joints are {list(r.joints)}")
    order = [cal.names.index(j) for j in r.joints]
    cal = Calibration(tuple(cal.motors[i] for i in order), cal.ticks_per_rev, r.joints)
    if cal.ids != tuple(p.serial.ids):
        raise ProfileError(f"{what} gives servo ids {list(cal.ids)} for joints {list(r.joints)}; "
                           f"'serial.ids' = {list(p.serial.ids)}")  # fmt: skip
    return cal

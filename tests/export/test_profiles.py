"""Device profiles: every bundled profile loads; every invalid example is refused naming the key."""

from __future__ import annotations

from dataclasses import replace

import pytest

from edge.errors import ProfileError
from edge.profiles import PROFILE_DIR, list_profiles, load_profile, setpoint_bytes

NAMES = [
    "jetson-agx-orin-64gb",
    "jetson-orin-nano-8gb",
    "jetson-orin-nx-16gb",
    "jetson-thor",
    "so101-follower",
    "x86-cpu",
    "x86-cpu-feetech",
    "x86-cuda",
]


def test_every_profile_loads():
    assert list_profiles() == NAMES
    for name in NAMES:
        p = load_profile(name)
        assert p.name == name
        assert p.control.horizon is None and p.control.num_steps is None  # the bundle's
        assert {"prefix", "flow_head"} <= set(p.engines)
    orin = load_profile("jetson-agx-orin-64gb")
    assert orin.device.compute_capability == "8.7" and not orin.device.fp8
    assert orin.engine("prefix").dla_core == 0 and orin.engine("flow_head").dla_core is None
    assert load_profile("jetson-thor").device.fp8
    cpu = load_profile("x86-cpu")
    assert cpu.engine("prefix").backend == "onnxruntime" and not cpu.uses_tensorrt
    assert load_profile("jetson-orin-nano-8gb").serial.protocol == "feetech"
    assert load_profile("x86-cpu-feetech").serial.protocol == "feetech"


def _with_calibration(folder):
    """Profiles name their calibration relative to themselves: copies travel with it."""
    import shutil

    for cal in PROFILE_DIR.glob("reference-arm.*.json"):
        shutil.copy(cal, folder)


def _variant(tmp_path, base: str, old: str, new: str):
    _with_calibration(tmp_path)
    text = (PROFILE_DIR / f"{base}.toml").read_text()
    assert old in text, old
    path = tmp_path / f"my-{base}.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_user_profile_by_path(tmp_path):
    path = _variant(tmp_path, "x86-cpu", 'port = "/dev/ttyUSB0"', 'port = "/dev/ttyACM3"')
    assert load_profile(path).serial.port == "/dev/ttyACM3"
    assert load_profile(str(path)).path == path


INVALID = [
    # (base, old, new, words the one-line error must contain)
    ("x86-cpu", "memory_gb = 8.0", "memory_gb = 8.0\nmemroy = 1", ["memroy", "allowed"]),
    ("x86-cpu", "baud = 1000000", 'baud = "fast"', ["'baud'", "integer"]),
    (
        "x86-cpu",
        'protocol = "firmware"',
        'protocol = "canbus"',
        ["'protocol'", "firmware, feetech, dynamixel"],
    ),
    ("jetson-orin-nx-16gb", "fp8 = false", "fp8 = true", ["'device.fp8'", "Orin"]),
    (
        "jetson-orin-nx-16gb",
        'precisions = ["fp32", "fp16", "int8"]',
        'precisions = ["fp32", "fp16", "int8", "fp8"]',
        ["precisions", "fp8"],
    ),
    ("jetson-orin-nx-16gb", 'precision = "fp16"', 'precision = "fp8"', ["engine.prefix.precision", "fp8"]),
    (
        "jetson-thor",
        "workspace_mb = 4096",
        "workspace_mb = 4096\ndla_core = 0",
        ["engine.prefix.dla_core", "no DLA"],
    ),
    ("jetson-agx-orin-64gb", "dla_core = 0", "dla_core = 2", ["dla_core", "0 to 1"]),
    ("x86-cpu", 'backend = "onnxruntime"', 'backend = "tensorrt"', ["engine.prefix.backend", "onnxruntime"]),
    ("x86-cpu", "baud = 1000000", "baud = 115200", ["'serial.baud'", "setpoint frames", "500 Hz"]),
    ("jetson-orin-nano-8gb", "baud = 1000000", "baud = 9600", ["'serial.baud'", "feetech"]),
    # with H pinned in the profile the geometry is checked at load (otherwise per bundle)
    ("x86-cpu", "ramp = 4", "ramp = 6\nhorizon = 16", ["'control.ramp'", "overlap"]),
    (
        "x86-cpu",
        "execution_horizon = 8",
        "execution_horizon = 14\nhorizon = 16",
        ["control.execution_horizon", "d <= s <= H - d"],
    ),
    ("x86-cpu", "execution_horizon = 8", "execution_horizon = 2", ["control.execution_horizon", "d <= s"]),
    ("x86-cpu", "execution_horizon = 8", "execution_horizon = 8.5", ["execution_horizon", "fraction"]),
    ("x86-cpu", "watchdog_ms = 100", "watchdog_ms = 3", ["watchdog_ms"]),
    ("x86-cpu", "rate_hz = 50.0", "rate_hz = 0.0", ["'rate_hz'", "out of range"]),
    ("x86-cpu", "[power]", "[powr]", ["powr"]),
    ("x86-cpu", "jetson_clocks = false", "cpu_wake_latency_us = -2", ["'cpu_wake_latency_us'", "range"]),
    ("x86-cpu", 'soc = "x86"', 'soc = "riscv"', ["'soc'", "x86, orin, thor"]),
    ("x86-cpu", 'precisions = ["fp32", "int8"]', 'precisions = ["fp32", "int4"]', ["precisions", "int4"]),
    ("x86-cpu", 'precision = "fp32"', 'precision = "fp16"', ["engine.prefix.precision", "fp32, int8"]),
    # what the protocol and the buses enforce (firmware_bridge), refused at load time
    ("x86-cpu", "ids = [1, 2, 3]", "ids = [1, 2, 2]", ["'serial.ids'", "repeats id 2"]),
    ("x86-cpu-feetech", "ids = [1, 2, 3]", "ids = [1, 2, 253]", ["'serial.ids'", "253", "0..252", "feetech"]),
    ("x86-cpu", "ids = [1, 2, 3]", "ids = []", ["'serial.ids'", "1 to 32"]),
    ("x86-cpu", "ids = [1, 2, 3]", f"ids = {list(range(33))}", ["'serial.ids'", "33 entries", "1 to 32"]),
    ("x86-cpu", "watchdog_ms = 100", "watchdog_ms = 4", ["'serial.watchdog_ms'", "5 to 60000"]),
    ("x86-cpu", "watchdog_ms = 100", "watchdog_ms = 0", ["'serial.watchdog_ms'", "5 to 60000"]),
    (
        "jetson-agx-orin-64gb",
        "watchdog_ms = 100",
        "watchdog_ms = 3000",
        ["watchdog_ms'", "2540", "dynamixel"],
    ),
    (
        "jetson-agx-orin-64gb",
        "watchdog_ms = 100",
        "watchdog_ms = 30",
        ["watchdog_ms'", "two control periods"],
    ),
    ("x86-cpu", 'port = "/dev/ttyUSB0"', 'port = ""', ["'serial.port'", "empty"]),
    ("jetson-thor", 'compute_capability = "11.0"', 'compute_capability = "11.0+"', ["capability", "one"]),
    ("x86-cuda", 'compute_capability = "8.6+', 'compute_capability = "sm86', ["compute_capability", "8.6+"]),
    ("jetson-orin-nx-16gb", 'tensorrt = "10.3.0"', 'tensorrt = "8.5.2"', ["JetPack 5 / TensorRT 8.5 is not"]),
    ("jetson-orin-nx-16gb", 'l4t = "36.4.3"', 'l4t = "35.4.1"', ["JetPack 5 / TensorRT 8.5 is not"]),
    ("jetson-agx-orin-64gb", 'precision = "fp16"', 'precision = "fp32"', ["dla_core", "fp16 and int8 only"]),
    (
        "jetson-orin-nano-8gb",
        "memory_gb = 8.0",
        "memory_gb = 8.0\nmemory_reserve_gb = 9",
        ["memory_reserve_gb"],
    ),
]


@pytest.mark.parametrize(
    "base,old,new,words", INVALID, ids=[f"{i}-{x[2][:18]}" for i, x in enumerate(INVALID)]
)
def test_invalid_profiles_are_refused_naming_the_key(tmp_path, base, old, new, words):
    path = _variant(tmp_path, base, old, new)
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    for w in words:
        assert w in msg, (w, msg)


def test_missing_table_and_bad_toml(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text('name = "x"\n[device]\nsoc = "x86"\n')
    with pytest.raises(ProfileError, match="missing table"):
        load_profile(p)
    p.write_text("name = \n")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(p)


def test_unknown_profile_names_the_known_ones():
    with pytest.raises(ProfileError, match="unknown profile 'jetson-nano'.*x86-cpu"):
        load_profile("jetson-nano")
    with pytest.raises(ProfileError, match="no such profile file"):
        load_profile("/nonexistent/p.toml")


def test_setpoint_bytes_by_hand():
    # firmware SETPOINT for 3 joints: 8 header + 1 + 12 payload + 4 CRC + COBS overhead + delimiter
    assert setpoint_bytes("firmware", 3) == 27
    # Feetech: sync write 7 + 3*3, sync read 8 + 3, three 8-byte replies
    assert setpoint_bytes("feetech", 3) == 16 + 11 + 24


def test_chunk_geometry_comes_from_the_bundle():
    """H and N are the bundle's; s explicit or a fraction of H; the profile's d_max and ramp are
    checked against the bundle's H in one line; a profile may pin H or N."""
    from edge.errors import MethodError
    from edge.profiles import chunk_geometry

    c = load_profile("x86-cpu").control  # s = 8, d_max = 4, ramp = 4, no H or N
    smolvla = chunk_geometry(c, 50, 10, 4, "profile x86-cpu")
    assert (smolvla.horizon, smolvla.num_steps, smolvla.execution_horizon) == (50, 10, 8)
    assert chunk_geometry(c, 16, 5, 4, "p").execution_horizon == 8
    half = replace(c, execution_horizon=0.5)
    assert chunk_geometry(half, 50, 10, 4, "p").execution_horizon == 25
    assert chunk_geometry(half, 16, 5, 4, "p").execution_horizon == 8
    for bad, words in (
        ((c, 10, 10, 4), ["d <= s <= H - d", "H = 10"]),  # s = 8 > H - d_max = 6
        ((c, 16, 5, 2), ["d_max=4", "d_max=2"]),  # the model was trained for smaller delays
        ((replace(c, ramp=6), 16, 5, 4), ["'control.ramp' = 6", "overlap"]),
        ((replace(c, horizon=16), 50, 10, 4), ["H=16", "H=50"]),
        ((replace(c, num_steps=5), 50, 10, 4), ["N=5", "N=10"]),
    ):
        with pytest.raises(MethodError) as e:
            chunk_geometry(*bad, "profile x86-cpu")
        assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), (words, str(e.value))


def test_a_non_utf8_profile_is_one_line(tmp_path):
    p = tmp_path / "latin1.toml"
    p.write_bytes((PROFILE_DIR / "x86-cpu.toml").read_bytes().replace(b"Any x86-64", b"Caf\xe9 x86-64"))
    with pytest.raises(ProfileError) as e:
        load_profile(p)
    assert "\n" not in str(e.value) and "not UTF-8" in str(e.value) and "0xe9" in str(e.value)


def test_servo_watchdog_may_be_off():
    import tempfile
    from pathlib import Path

    text = (PROFILE_DIR / "jetson-agx-orin-64gb.toml").read_text()
    text = text.replace("watchdog_ms = 100", "watchdog_ms = 0")
    with tempfile.TemporaryDirectory() as d:
        _with_calibration(d)
        (Path(d) / "p.toml").write_text(text)
        assert load_profile(Path(d) / "p.toml").serial.watchdog_ms == 0


@pytest.mark.parametrize("protocol", ["firmware", "feetech", "dynamixel"])
def test_what_the_loader_accepts_the_bus_accepts(tmp_path, protocol):
    """Nothing `legato profiles show` accepts dies later: over a grid of [serial] and rate values,
    every profile that loads yields the bus configuration the runtime builds from it (edge.rig
    bus_spec, then the bus's own config as firmware_bridge.factory.open_bus makes it)."""
    from edge.rig import bus_spec
    from firmware_bridge.config import BridgeConfig, LinkConfig
    from firmware_bridge.servo_bus import ServoBusConfig

    _with_calibration(tmp_path)
    base = (PROFILE_DIR / f"{'x86-cpu' if protocol == 'firmware' else 'x86-cpu-feetech'}.toml").read_text()
    base = base.replace('protocol = "feetech"', 'protocol = "firmware"')
    loaded = refused = 0
    for rate, stream in ((10.0, ""), (50.0, ""), (50.0, "stream_hz = 500.0"), (200.0, "")):
        for wd in (0, 3, 5, 20, 40, 100, 2540, 2541, 60000, 60001):
            for ids in ("[1, 2, 3]", "[0, 1, 252]", "[1, 1, 2]", "[1, 2, 253]", "[4, 5, 6]"):
                text = (base.replace('protocol = "firmware"', f'protocol = "{protocol}"')
                        .replace("stream_hz = 500.0", stream)
                        .replace("watchdog_ms = 100", f"watchdog_ms = {wd}")
                        .replace("ids = [1, 2, 3]", f"ids = {ids}")
                        .replace("rate_hz = 50.0", f"rate_hz = {rate}"))  # fmt: skip
                path = tmp_path / "p.toml"
                path.write_text(text)
                try:
                    p = load_profile(path)
                except ProfileError:
                    refused += 1
                    continue
                loaded += 1
                spec = bus_spec(p)
                settings = dict(spec.settings)
                if spec.kind == "firmware":
                    LinkConfig(settings.pop("port"), settings.pop("baudrate"))
                    BridgeConfig(**settings)
                else:
                    ServoBusConfig(**settings)
    assert loaded > 10 and refused > 10  # both sides of every rule were visited


def test_the_cpu_idle_states_are_left_alone_unless_the_profile_asks(tmp_path):
    assert load_profile("x86-cpu").power.cpu_wake_latency_us == -1
    path = _variant(tmp_path, "x86-cpu", "jetson_clocks = false", "cpu_wake_latency_us = 0")
    assert load_profile(path).power.cpu_wake_latency_us == 0

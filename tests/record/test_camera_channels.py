"""A policy with several cameras, recorded: `legato run --port --camera top=... --camera wrist=...
--record F` with LeRobot's SmolVLA fixture policy (two cameras of different sizes, exported by
`legato export` for an SO-101 profile) on six emulated Feetech servos. Every camera has its own
channel named for it (/camera/top, /camera/wrist), `legato replay` through the same bundle feeds
both back and reproduces every chunk bit for bit, `legato view` shows each camera."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
CALIBRATION = ROOT / "tests" / "firmware_bridge" / "fixtures" / "so101_lerobot_calibration.json"
CAMERAS = {"top": (96, 128), "wrist": (50, 40)}  # the fixture's observation.images.<name> (H, W)


def _profile(root: Path) -> Path:
    """so101-follower with the fixture policy's H = 10, N = 10, plain sampling (d_max 0), its
    calibration beside it, a generous setup reply wait (the emulator shares a loaded machine)."""
    (root / CALIBRATION.name).write_bytes(CALIBRATION.read_bytes())
    text = (ROOT / "profiles" / "so101-follower.toml").read_text()
    for key, value in (("horizon", "10"), ("execution_horizon", "5"), ("num_steps", "10"), ("d_max", "0"),
                       ("ramp", "0"), ("graph", '"stepwise"')):  # fmt: skip
        text = re.sub(rf"^{key} = \S+", f"{key} = {value}", text, flags=re.M)
    text = text.replace(
        'calibration = "so101-follower.calibration.json"', f'calibration = "{CALIBRATION.name}"'
    )
    path = root / "so101-smolvla.toml"
    path.write_text(text.replace("[serial]\n", "[serial]\nsetup_timeout_ms = 2000\n"))
    return path


@pytest.fixture(scope="module")
def smolvla(tmp_path_factory) -> tuple[Path, Path]:
    """(bundle, profile): LeRobot's SmolVLA fixture exported for the SO-101 (~7 s)."""
    pytest.importorskip("transformers", reason="the vla extra (transformers) exports the SmolVLA fixture")
    sys.path.insert(0, str(ROOT / "tests" / "adapters"))
    from lerobot_fixtures import FIXTURES, offline_hf_home

    from legato.cli import main

    root = tmp_path_factory.mktemp("smolvla")
    prof = _profile(root)
    with pytest.MonkeyPatch.context() as mp:  # nothing can be downloaded
        mp.setenv("HF_HOME", str(offline_hf_home(root / "hf")))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        args = ["export", "--checkpoint", str(FIXTURES / "smolvla"), "--profile", str(prof), "--out",
                str(root / "bundle")]  # fmt: skip
        assert main(args) == 0
    man = json.loads((root / "bundle" / "manifest.json").read_text())
    assert [c["name"] for c in man["adapter"]["observation"]["cameras"]] == list(CAMERAS)
    return root / "bundle", prof


def _videos(root: Path) -> dict[str, str]:
    """Each camera a short MJPG file (OpenCV plays files like a device): top red, wrist green, each
    frame brighter than the last, so frames of different chunks differ."""
    cv2 = pytest.importorskip("cv2")
    out = {}
    for name, channel in (("top", 2), ("wrist", 1)):  # BGR
        path = root / f"{name}.avi"
        w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
        for k in range(6):
            frame = np.zeros((120, 160, 3), np.uint8)
            frame[..., channel] = 40 + 35 * k
            w.write(frame)
        w.release()
        out[name] = str(path)
    return out


@pytest.fixture(scope="module")
def two_camera_run(smolvla, tmp_path_factory):
    """`legato run --port (emulated SO-101) --camera top=... --camera wrist=... --record F`:
    (recording, the run's summary)."""
    from legato.cli import main

    bundle, prof = smolvla
    root = tmp_path_factory.mktemp("two-cams")
    videos = _videos(root)
    emu = subprocess.Popen([sys.executable, "-m", "legato.cli", "firmware", "emulate", "--bus", "feetech",
                            "--calibration", str(CALIBRATION), "--duration", "120"],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert emu.stdout is not None
        port = emu.stdout.readline().strip()
        assert port.startswith("/dev/pts/"), emu.stderr.read() if emu.poll() is not None else port
        rec, summ = root / "run.mcap", root / "summary.json"
        args = ["run", "--bundle", str(bundle), "--profile", str(prof), "--port", port,
                "--camera", f"top={videos['top']}", "--camera", f"wrist={videos['wrist']}",
                "--seconds", "1.5", "--quiet", "--record", str(rec), "--summary-json", str(summ)]  # fmt: skip
        assert main(args) == 0
    finally:
        emu.terminate()
        emu.communicate(timeout=30)
    return rec, json.loads(summ.read_text())


def test_each_camera_is_recorded_on_its_own_channel_named_for_it(two_camera_run):
    from mcap.reader import make_reader

    from edge.recording import read_recording

    path, s = two_camera_run
    assert s["shutdown"] == "completed" and s["chunks"] >= 3
    assert s["record.stopped"] is None and s["record.errors"] == 0 and s["record.dropped_chunks"] == 0
    assert s["record.cameras"] == ["top", "wrist"] and s["record.frames"] == 2 * s["record.chunks"]
    counts: dict[str, int] = {}
    ids: dict[str, set[str]] = {}
    with open(path, "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        assert summary is not None
        topics = {c.topic: c for c in summary.channels.values()}
        assert "/camera" not in topics and {"/camera/top", "/camera/wrist"} <= set(topics)
        for name in CAMERAS:
            ch = topics[f"/camera/{name}"]
            assert summary.schemas[ch.schema_id].name == "foxglove.CompressedImage"
            assert ch.metadata == {"camera": name}
        for _, channel, message in reader.iter_messages():
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
            if channel.topic.startswith("/camera/"):
                ids.setdefault(channel.topic, set()).add(json.loads(message.data)["frame_id"])
    assert counts["/camera/top"] == counts["/camera/wrist"] == counts["/legato/chunk"] == s["chunks"]
    assert ids == {"/camera/top": {"top"}, "/camera/wrist": {"wrist"}}
    r = read_recording(path)
    assert r.cameras == ["top", "wrist"] and len(r.chunks) == s["chunks"]
    assert [c["name"] for c in r.meta["cameras"]] == ["top", "wrist"]
    for c in r.chunks:
        frames = c.frame()
        assert isinstance(frames, dict) and list(frames) == ["top", "wrist"]
        assert {k: v.shape[:2] for k, v in frames.items()} == CAMERAS
        # top is red, wrist green (RGB): each camera's frame went to its own channel
        assert frames["top"][..., 0].mean() > frames["top"][..., 1].mean() + 30
        assert frames["wrist"][..., 1].mean() > frames["wrist"][..., 0].mean() + 30
    assert len({c.images["top"] for c in r.chunks}) > 1  # the frames follow the video


def test_replay_feeds_every_camera_back_and_reproduces_the_chunks(two_camera_run, smolvla, tmp_path, capsys):
    from legato.cli import main

    path, s = two_camera_run
    bundle, prof = smolvla
    out = tmp_path / "rep"
    assert (
        main(["replay", str(path), "--bundle", str(bundle), "--profile", str(prof), "--out", str(out)]) == 0
    )
    assert "identical: every replayed chunk equals the recorded one, bit for bit" in capsys.readouterr().out
    rep = json.loads((out / "replay.json").read_text())
    assert rep["identical"] and rep["chunks"] == s["chunks"] and rep["max_abs_rad"] == 0.0
    # a bundle with other cameras cannot replay it: one line, before any chunk
    ref = ROOT / "models" / "legato-x86-cpu"
    assert main(["replay", str(path), "--bundle", str(ref), "--profile", "x86-cpu", "--mode", "legato"]) == 2
    err = capsys.readouterr().err
    assert "has cameras top 48x64, the recording" in err and "top 96x128, wrist 50x40" in err
    assert err.count("\n") == 1


def test_view_shows_each_camera(two_camera_run, tmp_path):
    from edge.recording import read_recording
    from legato.cli import main

    path, s = two_camera_run
    out = tmp_path / "view"
    assert main(["view", str(path), "--out", str(out), "--frames", "4"]) == 0
    page = (out / "view.html").read_text()
    assert page.count("<figure>") == s["chunks"]
    assert page.count('title="top"') == page.count('title="wrist"') == s["chunks"]
    assert "(each chunk: top, wrist)" in page
    assert (out / "view.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(read_recording(path).chunks[0].frames()) == 2

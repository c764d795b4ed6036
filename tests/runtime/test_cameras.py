"""Several cameras by name: the profile's [cameras] table, --camera NAME=SPEC, CameraSet frames."""

from types import SimpleNamespace

import numpy as np
import pytest

from edge.errors import ProfileError, UsageError
from edge.launch import camera_sources


def _man(*names, hw=(48, 64)):
    cams = tuple(SimpleNamespace(name=n, input=f"image_{n}", height=hw[0], width=hw[1]) for n in names)
    return SimpleNamespace(adapter=SimpleNamespace(observation=SimpleNamespace(cameras=cams)),
                           spec=SimpleNamespace(state_dim=6))  # fmt: skip


def test_sources_come_from_the_profile_and_the_command_line():
    man = _man("top", "wrist")
    assert camera_sources(None, man, {"top": "0", "wrist": "2"}) == {"top": "0", "wrist": "2"}
    got = camera_sources(["wrist=v4l2src device=/dev/video4 ! appsink"], man, {"top": "0", "wrist": "2"})
    assert got == {"top": "0", "wrist": "v4l2src device=/dev/video4 ! appsink"}
    one = _man("top")
    assert camera_sources("v4l2src device=/dev/video0 ! appsink", one) == {
        "top": "v4l2src device=/dev/video0 ! appsink"
    }
    with pytest.raises(UsageError, match="needs a source for camera 'wrist'"):
        camera_sources(["top=0"], man)
    with pytest.raises(UsageError, match="name the camera, --camera NAME=SPEC"):
        camera_sources(["0"], man)
    with pytest.raises(UsageError, match="profile \\[cameras\\] names 'wirst'"):
        camera_sources(None, man, {"top": "0", "wirst": "2"})


def test_profile_cameras_table(tmp_path):
    from edge.profiles import load_profile, profile_path

    text = profile_path("x86-cpu").read_text()
    p = tmp_path / "two-cams.toml"
    p.write_text(text + '\n[cameras]\ntop = 0\nwrist = "/dev/video2"\n')
    prof = load_profile(p)
    assert prof.cameras == {"top": "0", "wrist": "/dev/video2"} and prof.to_dict()["cameras"] == prof.cameras
    assert load_profile("x86-cpu").cameras == {}
    p.write_text(text + "\n[cameras]\ntop = true\n")
    with pytest.raises(ProfileError, match="\\[cameras\\] top: the source must be"):
        load_profile(p)
    p.write_text(text + '\n[cameras]\n"top cam" = "0"\n')
    with pytest.raises(ProfileError, match="camera name 'top cam'"):
        load_profile(p)


def test_camera_set_frames_hold_every_camera_by_name(tmp_path):
    cv2 = pytest.importorskip("cv2")
    from edge.sources import CameraSet, OpenCVCamera

    paths = {}
    for name, channel in (("top", 2), ("wrist", 1)):  # red / green in BGR
        path = str(tmp_path / f"{name}.avi")
        w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
        for _ in range(2):
            frame = np.zeros((120, 160, 3), np.uint8)
            frame[..., channel] = 220
            w.write(frame)
        w.release()
        paths[name] = path
    cams = {"top": OpenCVCamera(paths["top"], (48, 64), name="top"),
            "wrist": OpenCVCamera(paths["wrist"], (24, 32), name="wrist")}  # fmt: skip
    src = CameraSet(cams, np.array([2, 5, 0]), None, 6)
    frames = [src.read() for _ in range(3)]  # the files loop
    src.close()
    f = frames[0]
    assert set(f.image) == {"top", "wrist"} and f.image["top"].shape == (48, 64, 3)
    assert f.image["wrist"].shape == (24, 32, 3)
    assert f.image["top"][..., 0].mean() > 150 and f.image["wrist"][..., 1].mean() > 150  # RGB
    assert f.preprocess_s > 0 and f.state.shape == (6,)


def test_the_state_from_the_bus_is_what_the_policy_takes():
    """Positions and velocities for a state of 2 x joints (the reference policy), the positions
    alone for one of joints (LeRobot's SO-101 observation.state: SmolVLA, pi0.5); else one line."""
    from edge.sources import TelemetryState

    tel = SimpleNamespace(positions=np.array([0.1, 0.2, 0.3]), velocities=np.array([1.0, 2.0, 3.0]),
                          sent_at=None, received_at=5.0)  # fmt: skip
    bus = SimpleNamespace(latest_telemetry=lambda: tel)
    both = TelemetryState(bus, 3, extrapolate=False).read(5.0)
    np.testing.assert_allclose(both, [0.1, 0.2, 0.3, 1.0, 2.0, 3.0], rtol=1e-6)
    alone = TelemetryState(bus, 3, state_dim=3, max_age_s=0.02).read(5.01)  # 10 ms along v
    np.testing.assert_allclose(alone, [0.11, 0.22, 0.33], rtol=1e-5)
    with pytest.raises(UsageError, match="state has 4 values; the robot's 3 joints give"):
        TelemetryState(bus, 3, state_dim=4)

"""Observation sources behind one interface: ``read() -> Frame`` (image, tokens, state, capture time).

- :class:`SimSource`: the simulator's camera (rendered where the plant's arm is) and the joint
  state from the bus telemetry, for the demo and the tests.
- :class:`OpenCVSource` (optional extra ``camera``: opencv-python-headless): a V4L2 device
  index, a GStreamer pipeline string (Jetson CSI cameras) or a video file (how the tests drive
  the real OpenCV path). Frames are BGR from OpenCV, converted to RGB and resized to the model's
  (H, W) here: preprocessing, timed as its own stage (``preprocess_s``).
- :class:`CameraSet`: several of them by the bundle's camera names (the profile's [cameras]
  table, `--camera NAME=SPEC`); the frame's image is {name: image}.
- :class:`TelemetryState`: joint positions then velocities from ``MotorBus.latest_telemetry``.

Capture time: when the source takes the frame (the simulator's render, OpenCV's grab, or the
buffer timestamp where the backend gives one), in host ``time.monotonic()`` seconds; the loop
measures inference latency from it, so camera and preprocessing count towards the delay d.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.errors import UsageError


@dataclass
class Frame:
    image: np.ndarray  # (H, W, 3) uint8 RGB, the model's size ({camera: image} for several cameras)
    tokens: np.ndarray  # (l,) int64 instruction tokens
    state: np.ndarray  # (s,) float32 raw proprio: joint positions then velocities
    capture_time: float  # host monotonic seconds
    preprocess_s: float = 0.0  # time spent converting / resizing this frame


class TelemetryState:
    """Proprio from the bus: positions then velocities (``state_dim`` = 2 x joints, the reference
    policy's), or the positions alone (``state_dim`` = joints: LeRobot's observation.state of an
    SO-101, SmolVLA and pi0.5 bundles), written into one buffer (the worker copies it before the
    next read).

    A telemetry frame is up to one telemetry period old (plus the link) when the camera frame is
    taken; with ``extrapolate`` the positions are carried to the capture time along the measured
    velocities, q + v (t_capture - t_sample), with t_sample the controller's send time mapped to
    the host clock (its receive time before time sync), the age capped at ``max_age_s``."""

    def __init__(self, bus: Any, joints: int, extrapolate: bool = True, max_age_s: float = 0.02,
                 state_dim: int | None = None) -> None:  # fmt: skip
        n = 2 * joints if state_dim is None else state_dim
        if n not in (joints, 2 * joints):
            raise UsageError(f"the policy's state has {n} values; the robot's {joints} joints give their "
                             f"positions ({joints}) or positions and velocities ({2 * joints})")  # fmt: skip
        self.bus = bus
        self.buf = np.zeros(n, np.float32)
        self.j, self.velocities = joints, n == 2 * joints
        self.extrapolate, self.max_age_s = extrapolate, max_age_s
        self.age_s = 0.0

    def read(self, at: float | None = None) -> np.ndarray:
        tel = self.bus.latest_telemetry()
        if tel is None:
            raise RuntimeError("no telemetry from the motor controller yet")
        now = time.monotonic() if at is None else at
        t_sample = tel.sent_at if tel.sent_at is not None else tel.received_at
        self.age_s = now - t_sample
        j = self.j
        self.buf[:j] = tel.positions
        if self.extrapolate:
            age = float(min(max(self.age_s, 0.0), self.max_age_s))
            self.buf[:j] += np.asarray(tel.velocities, np.float32) * age
        if self.velocities:
            self.buf[j:] = tel.velocities
        return self.buf


class SimSource:
    """The simulated camera + bus telemetry. ``render()`` -> (H, W, 3) uint8; ``tokens()`` -> (l,)."""

    def __init__(self, render: Callable[[], np.ndarray], tokens: Callable[[], np.ndarray],
                 state: TelemetryState | Callable[[], np.ndarray],
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.render, self.tokens, self.state, self.clock = render, tokens, state, clock

    def read(self) -> Frame:
        t = self.clock()
        st = self.state.read(t) if isinstance(self.state, TelemetryState) else self.state()
        image = self.render()
        return Frame(image, self.tokens(), st, t)


class PlantSource:
    """The simulator's camera and state of one instant (``plant.observe()``), ``--sim-state plant``."""

    def __init__(self, plant: Any, clock: Callable[[], float] = time.monotonic,
                 tokens: Callable[[np.ndarray], np.ndarray] | None = None) -> None:  # fmt: skip
        self.plant, self.clock = plant, clock
        self.tokens = tokens or (lambda ids: ids)  # the plant's ids -> the bundle's (edge.simrig)

    def read(self) -> Frame:
        t = self.clock()
        image, state = self.plant.observe()
        return Frame(image, self.tokens(self.plant.tokens), state, t)


def resize_nearest(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize (H0, W0, 3) -> (H, W, 3), numpy only (OpenCV's INTER_AREA is used
    when OpenCV is there)."""
    h0, w0 = img.shape[:2]
    ys = (np.arange(hw[0]) * h0 // hw[0]).clip(0, h0 - 1)
    xs = (np.arange(hw[1]) * w0 // hw[1]).clip(0, w0 - 1)
    return img[ys][:, xs]


class OpenCVCamera:
    """One real camera through OpenCV, its frames RGB at the policy's (height, width). ``spec``: an
    integer (V4L2 index), a string containing '!' (a GStreamer pipeline ending in appsink) or a
    file path (video file, looped)."""

    def __init__(self, spec: str, image_hw: tuple[int, int], loop_file: bool = True, name: str = "") -> None:
        try:
            import cv2
        except ImportError:
            raise UsageError("--camera needs OpenCV: pip install 'legato-edge[camera]' "
                             "(opencv-python-headless)") from None  # fmt: skip
        self.cv2 = cv2
        flag = f"--camera {name + '=' if name else ''}{spec!r}"
        if spec.isdigit():
            cap = cv2.VideoCapture(int(spec), cv2.CAP_V4L2)
            self.kind = "v4l2"
        elif "!" in spec:
            cap = cv2.VideoCapture(spec, cv2.CAP_GSTREAMER)
            self.kind = "gstreamer"
        else:
            cap = cv2.VideoCapture(spec)
            self.kind = "file"
        if not cap.isOpened():
            raise UsageError(f"{flag}: OpenCV cannot open it ({self.kind})")
        self.cap, self.spec, self.hw, self.loop_file, self.name = cap, spec, image_hw, loop_file, name
        self.frames = 0

    def grab(self) -> tuple[np.ndarray, float, float]:
        """(image (H, W, 3) uint8 RGB, capture time, preprocessing seconds)."""
        cv2 = self.cv2
        t = time.monotonic()
        ok, bgr = self.cap.read()
        if not ok and self.kind == "file" and self.loop_file:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self.cap.read()
        if not ok:
            raise RuntimeError(f"camera {self.name + ' ' if self.name else ''}{self.spec!r}: no frame")
        self.frames += 1
        t_pre = time.monotonic()
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        img = cv2.resize(rgb, (self.hw[1], self.hw[0]), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(img, np.uint8), t, time.monotonic() - t_pre

    def close(self) -> None:
        self.cap.release()


class OpenCVSource:
    """A real camera through OpenCV (OpenCVCamera) with the instruction and the joint state."""

    def __init__(self, spec: str, image_hw: tuple[int, int], tokens: np.ndarray, state: TelemetryState | None,
                 state_dim: int, loop_file: bool = True) -> None:  # fmt: skip
        self.camera = OpenCVCamera(spec, image_hw, loop_file)
        self.spec, self.hw, self.kind = spec, image_hw, self.camera.kind
        self.tok = np.asarray(tokens, np.int64)
        self.state, self.state_dim = state, state_dim
        self._zeros = np.zeros(state_dim, np.float32)

    @property
    def frames(self) -> int:
        return self.camera.frames

    def read(self) -> Frame:
        img, t, pre = self.camera.grab()
        state = self.state.read() if self.state is not None else self._zeros
        return Frame(img, self.tok, state, t, pre)

    def close(self) -> None:
        self.camera.close()


class CameraSet:
    """Several cameras by name (the bundle's), each an OpenCVCamera: one Frame holds
    {name: image}; its capture time is the first camera's (the oldest frame: the delay counts
    from it), its preprocessing the sum."""

    def __init__(self, cameras: dict[str, OpenCVCamera], tokens: np.ndarray, state: TelemetryState | None,
                 state_dim: int) -> None:  # fmt: skip
        self.cameras, self.tok = cameras, np.asarray(tokens, np.int64)
        self.state, self.state_dim = state, state_dim
        self._zeros = np.zeros(state_dim, np.float32)

    def read(self) -> Frame:
        images: dict[str, np.ndarray] = {}
        t0, pre = None, 0.0
        for name, cam in self.cameras.items():
            img, t, p = cam.grab()
            images[name] = img
            t0 = t if t0 is None else t0
            pre += p
        state = self.state.read() if self.state is not None else self._zeros
        return Frame(images, self.tok, state, float(t0 or time.monotonic()), pre)  # type: ignore[arg-type]

    def close(self) -> None:
        for cam in self.cameras.values():
            cam.close()

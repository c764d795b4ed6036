"""Launching the robot program: every input checked, then the rig started, then the session.

Order, so that nothing talks to the motors (no handshake, no torque) before every other part has
been checked: the bundle verified and the profile loaded and checked against it (edge.assembly),
the instruction tokens, the rig built from the profile (the bundle must fit the robot; the bus
constructed, its port not opened: edge.rig), the camera opened and one frame read; only then
:meth:`edge.rig.Rig.start` (handshake, torque, the first telemetry within a deadline). Used by
`legato run` / `legato profile` (edge/cli.py), the demo and the benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edge.errors import UsageError

PAD_ID = 0  # the instruction tokenizer's <pad> id (sim/language.py: VOCAB[0])


def parse_tokens(text: str | None, max_tokens: int, vocab_size: int | None) -> np.ndarray:
    """``--tokens`` as the model's (max_tokens,) int64 ids, padded with PAD_ID. A value that is not
    an integer, an id outside the vocabulary, or more ids than fit is a UsageError (one line)."""
    parts = [x.strip() for x in text.split(",")] if text else []
    ids = []
    for x in parts:
        try:
            ids.append(int(x))
        except ValueError:
            raise UsageError(f"--tokens {text!r}: {x!r} is not an integer token id "
                             "(expected comma-separated integers, e.g. 2,5,13)") from None  # fmt: skip
    if len(ids) > max_tokens:
        raise UsageError(f"--tokens has {len(ids)} ids; the bundle's model takes at most {max_tokens}")
    hi = vocab_size - 1 if vocab_size else None
    bad = [i for i in ids if i < 0 or (hi is not None and i > hi)]
    if bad:
        rng = f"0..{hi}" if hi is not None else ">= 0"
        raise UsageError(f"--tokens id {bad[0]} is outside the bundle's vocabulary ({rng})")
    out = np.full(max_tokens, PAD_ID, np.int64)
    out[: len(ids)] = ids
    return out


def open_camera(spec: str | None, man: Any, tokens: np.ndarray) -> Any:
    """The robot's camera (edge.sources.OpenCVSource), opened and one frame read."""
    from edge.sources import OpenCVSource

    if spec is None:
        raise UsageError("--port needs --camera (V4L2 index, GStreamer pipeline or video file)")
    cam = OpenCVSource(spec, man.spec.image_hw, tokens, None, man.spec.state_dim)
    try:
        cam.read()
    except RuntimeError as e:
        cam.close()
        raise UsageError(f"--camera {spec!r}: opened, but {e}") from None
    return cam


def launch(bundle: str, profile: str, *, port: str | None = None, sim: bool = False,
           episodes: int | None = None, mode: str | None = None, fused: bool | None = None,
           latency_ms: float = 0.0, ramp: int | None = None, max_step: float | None = None, seed: int = 1000,
           camera: str | None = None, tokens: str | None = None, sim_state: str = "telemetry",
           reconnect_s: float = 5.0, status: Callable[[str], None] | None = None,
           record: Callable[..., Any] | None = None) -> Any:  # fmt: skip
    """A started session (edge.session.Session) on ``port`` or, with ``sim``, on the simulated arm
    (``episodes`` held-out episodes of ``seed``); the caller closes ``session.rig``. ``record``:
    ``record(man, prof, cfg, den)`` -> the session's recorder (--record), made before the rig
    starts (a refused file stops the launch first)."""
    from edge.assembly import load
    from edge.rig import build_rig, loop_config
    from edge.session import Session
    from edge.sources import PlantSource, SimSource, TelemetryState

    if sim == (port is not None):
        raise UsageError("give one of --port and --sim")
    if sim and (tokens is not None or camera is not None):
        raise UsageError("--tokens and --camera apply to --port (--sim gives each episode's camera and "
                         "instruction)")  # fmt: skip
    man, prof, den = load(bundle, profile, mode, fused)
    a = man.spec.action_dim
    if sim:
        from edge.simrig import SimRig
        from sim.task import TaskConfig

        task = TaskConfig.from_dict(man.data["model"]["task"])
        world = SimRig(task, prof, episodes=episodes or 1, seed=seed)
        try:
            rig = build_rig(man, prof, sim=world)
        except BaseException:
            world.close()
            raise
    else:
        vocab = man.data["model"]["policy"].get("vocab_size")
        ids = parse_tokens(tokens, man.spec.max_tokens, int(vocab) if vocab else None)
        rig = build_rig(man, prof, port=port)  # the bus is built, its port not opened
    recorder = None
    try:
        cfg = loop_config(man, rig.prof, latency_ms, ramp, max_step, seed)
        if not sim:
            rig.camera = open_camera(camera, man, ids)
        recorder = record(man, rig.prof, cfg, den) if record is not None else None
        rig.start()  # handshake and torque: everything else has been checked
    except BaseException:
        if recorder is not None:
            recorder.close()
        rig.close()
        raise
    if rig.camera is not None:
        rig.camera.state = TelemetryState(rig.bus, a)
        cam = rig.camera

        def make_source() -> Any:
            return cam

    else:
        plant, bus = rig.plant, rig.bus
        from_plant = sim_state == "plant"

        def make_source() -> Any:
            if from_plant:  # image and state of one instant, straight from the simulator
                return PlantSource(plant)
            # no extrapolation: the lockstep plant stands still between two setpoints
            return SimSource(plant.render, lambda: plant.tokens, TelemetryState(bus, a, extrapolate=False))

    return Session(man, rig.prof, den, cfg, rig=rig, make_source=make_source, status=status,
                   reconnect_s=reconnect_s, recorder=recorder)  # fmt: skip

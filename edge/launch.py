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
    from edge.language import pad_ids, parse_token_list

    if not text:
        return pad_ids([], max_tokens, vocab_size, PAD_ID)[0]
    return parse_token_list(text, max_tokens, vocab_size, PAD_ID)[0]


def policy_cameras(man: Any) -> tuple[Any, ...]:
    """The policy's cameras (edge.adapter.CameraSpec: name, size), a bundle's or a policy server's."""
    return tuple(man.cameras) if getattr(man, "remote", False) else man.adapter.observation.cameras


def camera_sources(
    cli: str | list[str] | None, man: Any, table: dict[str, str] | None = None
) -> dict[str, str]:
    """Each of the bundle's cameras (its adapter's names) -> its source: the profile's [cameras]
    table, overridden by ``--camera NAME=SPEC`` (or ``--camera SPEC`` for a one-camera policy).
    A camera without a source, or a name the bundle does not have, is one line."""
    names = [c.name for c in policy_cameras(man)]
    table = dict(table or {})
    unknown = [n for n in table if n not in names]
    if unknown:
        raise UsageError(
            f"profile [cameras] names {unknown[0]!r}; the bundle's cameras are {', '.join(names)}"
        )
    out = dict(table)
    for item in [cli] if isinstance(cli, str) else list(cli or []):
        name, _, rest = item.partition("=")
        if rest and name in names:
            out[name] = rest
        elif len(names) == 1:
            out[names[0]] = item
        else:
            raise UsageError(f"--camera {item!r}: name the camera, --camera NAME=SPEC (the bundle's cameras: "
                             f"{', '.join(names)})")  # fmt: skip
    missing = [n for n in names if n not in out]
    if missing:
        raise UsageError(f"--port needs a source for camera {missing[0]!r}: the profile's [cameras] table "
                         f"or --camera {missing[0]}=SPEC (V4L2 index, GStreamer pipeline or video "
                         "file)")  # fmt: skip
    return out


def open_camera(spec: str | list[str] | None, man: Any, tokens: np.ndarray,
                table: dict[str, str] | None = None) -> Any:  # fmt: skip
    """The robot's cameras (edge.sources: OpenCVSource for one, CameraSet for several), each
    opened and one frame read."""
    from edge.sources import CameraSet, OpenCVCamera, OpenCVSource

    srcs = camera_sources(spec, man, table)
    cams = policy_cameras(man)
    state_dim = man.spec.state_dim
    if len(cams) == 1:
        c = cams[0]
        src: Any = OpenCVSource(srcs[c.name], (c.height, c.width), tokens, None, state_dim)
    else:
        opened: dict[str, Any] = {}
        try:
            for c in cams:
                opened[c.name] = OpenCVCamera(srcs[c.name], (c.height, c.width), name=c.name)
        except BaseException:
            for x in opened.values():
                x.close()
            raise
        src = CameraSet(opened, tokens, None, state_dim)
    try:
        src.read()
    except RuntimeError as e:
        src.close()
        raise UsageError(f"--camera: opened, but {e}") from None
    return src


def launch(bundle: str, profile: str, *, port: str | None = None, sim: bool = False,
           episodes: int | None = None, mode: str | None = None, fused: bool | None = None,
           latency_ms: float = 0.0, ramp: int | None = None, max_step: float | None = None, seed: int = 1000,
           camera: str | list[str] | None = None, tokens: str | None = None, prompt: str | None = None,
           sim_state: str = "telemetry", reconnect_s: float = 5.0,
           status: Callable[[str], None] | None = None, clock: str = "process",
           loaded: tuple[Any, Any, Any] | None = None,
           record: Callable[..., Any] | None = None) -> Any:  # fmt: skip
    """A started session (edge.session.Session) on ``port`` or, with ``sim``, on the simulated arm
    (``episodes`` held-out episodes of ``seed``); the caller closes ``session.rig``. ``clock``:
    where the control clock and the bus run (edge.rig.Rig: "process", or "thread" to compare).
    ``loaded``: a (model, profile, denoiser) already made (`legato run --remote`:
    edge.remote.client.load_remote) instead of loading ``bundle``. ``record``: ``record(man, prof,
    cfg, den)`` -> the session's recorder (--record), made before the rig starts (a refused file
    stops the launch first)."""
    from edge.assembly import load
    from edge.language import PromptedSource, state_prompter
    from edge.rig import build_rig, loop_config
    from edge.session import Session
    from edge.sources import PlantSource, SimSource, TelemetryState

    if sim == (port is not None):
        raise UsageError("give one of --port and --sim")
    if sim and (tokens is not None or camera is not None or prompt is not None):
        raise UsageError("--tokens, --prompt and --camera apply to --port (--sim gives each episode's camera "
                         "and instruction)")  # fmt: skip
    man, prof, den = loaded if loaded is not None else load(bundle, profile, mode, fused)
    a = man.spec.action_dim
    remote = getattr(man, "remote", False)
    if sim:
        from edge.simrig import SimRig
        from sim.task import TaskConfig

        task = TaskConfig.from_dict(man.data["model"]["task"])
        world = SimRig(task, prof, episodes=episodes or 1, seed=seed)
        try:
            from edge.simrig import sim_instruction
            from sim.language import detokenize

            # each episode's instruction as the bundle takes it (a prompt through its tokenizer)
            to_bundle = sim_instruction(man, world.plant.tokens_all)
            tasks = [detokenize(ids) for ids in world.plant.tokens_all]
            prompter = state_prompter(man, tasks)
            plant_ = world.plant
            task_of: Callable[[], str] = lambda: detokenize(plant_.tokens)  # noqa: E731 (this episode's)
            rig = build_rig(man, prof, sim=world, clock=clock)
        except BaseException:
            world.close()
            raise
    else:
        from edge.language import instruction

        if remote:  # the server's policy: ids as it takes them, or the prompt sent as text
            ids = man.instruction(tokens, prompt)
        else:
            ids, _ = instruction(man, tokens, prompt)  # the adapter's language: ids, vocabulary, tokenizer
        tasks = [prompt] if prompt is not None else []
        prompter = state_prompter(man, tasks)
        task_of = lambda: str(prompt)  # noqa: E731
        rig = build_rig(man, prof, port=port, clock=clock)  # nothing opened yet
    recorder = None
    try:
        cfg = loop_config(man, rig.prof, latency_ms, ramp, max_step, seed)
        rden: Any = den  # edge.remote.client.RemoteDenoiser where remote
        if remote and (prompt is not None or (sim and not rden.sim_ids)):
            # the task as text, tokenized by the server (pi0.5: with the state); a task the server's
            # model cannot take stops here, in one line
            rden.set_task(task_of, tasks)
        if not sim:
            rig.camera = open_camera(camera, man, ids, rig.prof.cameras)
        recorder = record(man, rig.prof, cfg, den) if record is not None else None
        rig.start()  # handshake and torque: everything else has been checked
    except BaseException:
        if recorder is not None:
            recorder.close()
        rig.close()
        raise
    if rig.camera is not None:
        rig.camera.state = TelemetryState(rig.bus, a, state_dim=man.spec.state_dim)
        cam = rig.camera

        def make_source() -> Any:
            return cam

    else:
        plant, bus = rig.plant, rig.bus
        from_plant = sim_state == "plant"

        def make_source() -> Any:
            if from_plant:  # image and state of one instant, straight from the simulator
                return PlantSource(plant, tokens=to_bundle)
            # no extrapolation: the lockstep plant stands still between two setpoints
            return SimSource(plant.render, lambda: to_bundle(plant.tokens),
                             TelemetryState(bus, a, extrapolate=False))  # fmt: skip

    if prompter is not None:  # pi0.5: each frame's prompt from its own state
        make_plain, build = make_source, prompter

        def make_source() -> Any:
            return PromptedSource(make_plain(), build, task_of)

    return Session(man, rig.prof, den, cfg, rig=rig, make_source=make_source, status=status,
                   reconnect_s=reconnect_s, recorder=recorder)  # fmt: skip

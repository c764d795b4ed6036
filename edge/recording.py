"""The recording format of `legato run --record FILE`: MCAP with JSON messages (Foxglove opens it),
and the reader that `legato replay` and `legato view` use (robot side, no torch).

One MCAP file per run. Every message's log time is its capture time on the robot's monotonic
clock (``time.monotonic()``, nanoseconds; Foxglove shows it as a time since boot, 1970-01-01 +
uptime; the metadata's ``wall_minus_monotonic_s`` turns it into wall-clock time). Topics:

- /camera (foxglove.CompressedImage, one per chunk): the frame the policy consumed, PNG
  (lossless) or JPEG, for a policy with one camera; a policy with several has one channel per
  camera, /camera/<name> (the bundle's camera names, LeRobot's observation.images.<name>), each
  frame's ``frame_id`` its camera's name;
- /legato/observation (one per chunk): state (raw proprio), tokens (the prompt);
- /legato/chunk (one per chunk): the plan (H, a), d, s, r, omega (H,), the reference it
  continued (k, a) or null, the noise (H, a), stage times, latency;
- /legato/setpoint (one per tick): the commanded setpoint, mode (run, hold, underrun), chunk
  and index, fault;
- /legato/telemetry (one per drain): executed joints, velocities, efforts, faults, holding,
  stale flags;
- /legato/events (foxglove.Log): underruns, faults, recording notes.

Metadata records: ``legato.run`` at the start (bundle manifest hash, profile, device identity,
model spec, loop settings, clock offset), ``legato.summary`` at a clean close (counts, drops, the
run's summary). Arrays are JSON numbers: float32 values round-trip exactly (float32 -> float64
-> shortest repr -> float64 -> float32), so a replay feeds the engines the recorded bits.

Crash safety: the recorder closes an MCAP chunk after each policy chunk's messages (writer
``flush``), so a recording cut off by SIGKILL keeps every chunk whose MCAP chunk reached the
file; :func:`read_recording` streams the records, stops at the cut and keeps the policy chunks
that arrived whole (every camera's frame, the observation and the chunk message).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import UsageError

MCAP_MAGIC = b"\x89MCAP0\r\n"
PROFILE = "legato"  # the MCAP header's profile field
FORMAT_VERSION = 1
CAMERA, OBSERVATION, CHUNK = "/camera", "/legato/observation", "/legato/chunk"  # CAMERA: a one-camera policy
SETPOINT, TELEMETRY, EVENTS = "/legato/setpoint", "/legato/telemetry", "/legato/events"
MODE_NAMES = {0: "run", 1: "hold-start", 2: "underrun", 3: "hold-stop"}
MODE_IDS = {v: k for k, v in MODE_NAMES.items()}
RECORD_EXTRA = "mcap"  # the package the format needs (a core dependency: docs/record.md says why)

_TIME = {
    "type": "object",
    "title": "time",
    "properties": {
        "sec": {"type": "integer", "minimum": 0},
        "nsec": {"type": "integer", "minimum": 0, "maximum": 999999999},
    },
}
_NUMS = {"type": "array", "items": {"type": "number"}}
_MATRIX = {"type": "array", "items": _NUMS}


def _schema(title: str, description: str, props: dict[str, Any]) -> dict[str, Any]:
    return {
        "title": title,
        "description": description,
        "type": "object",
        "properties": {"timestamp": _TIME, **props},
    }


SCHEMAS: dict[str, dict[str, Any]] = {
    # Foxglove's own schemas (foxglove/schemas, jsonschema): the Image and Log panels read them
    CAMERA: _schema(
        "foxglove.CompressedImage",
        "A compressed image",
        {
            "frame_id": {"type": "string"},
            "data": {"type": "string", "contentEncoding": "base64", "description": "Compressed image data"},
            "format": {"type": "string", "description": "Image format"},
        },
    ),
    EVENTS: _schema(
        "foxglove.Log",
        "A log message",
        {
            "level": {"type": "integer", "description": "1 debug, 2 info, 3 warning, 4 error, 5 fatal"},
            "message": {"type": "string"},
            "name": {"type": "string"},
            "file": {"type": "string"},
            "line": {"type": "integer", "minimum": 0},
        },
    ),
    OBSERVATION: _schema(
        "legato.Observation",
        "What the policy saw besides the frame",
        {
            "seq": {"type": "integer"},
            "chunk": {"type": "integer"},
            "state": _NUMS,
            "tokens": {"type": "array", "items": {"type": "integer"}},
        },
    ),
    CHUNK: _schema(
        "legato.Chunk",
        "One chunk: its inputs besides the observation, its plan, its times",
        {
            "seq": {"type": "integer"},
            "chunk": {"type": "integer"},
            "d": {"type": "integer"},
            "s": {"type": "integer"},
            "r": {"type": "integer"},
            "omega": _NUMS,
            "reference": {"type": ["array", "null"], "items": _NUMS},
            "noise": _MATRIX,
            "plan": _MATRIX,
            "latency_ms": {"type": "number"},
            "preprocess_ms": {"type": "number"},
            "request_time": {"type": "number"},
            "capture_time": {"type": "number"},
            "ready_time": {"type": "number"},
            "d_est": {"type": "integer"},
            "start_index": {"type": "integer"},
            "stages_ms": {"type": "object", "additionalProperties": {"type": "number"}},
            "cameras": {"type": "array", "items": {"type": "string"}},
        },
    ),
    SETPOINT: _schema(
        "legato.Setpoint",
        "One control tick: the setpoint sent",
        {
            "tick": {"type": "integer"},
            "mode": {"type": "string", "enum": list(MODE_NAMES.values())},
            "chunk": {"type": "integer"},
            "index": {"type": "integer"},
            "fault": {"type": "integer"},
            "deadline": {"type": "number"},
            "start": {"type": "number"},
            "end": {"type": "number"},
            "write_ms": {"type": "number"},
            "positions": _NUMS,
        },
    ),
    TELEMETRY: _schema(
        "legato.Telemetry",
        "What the controller sent back",
        {
            "positions": _NUMS,
            "velocities": _NUMS,
            "efforts": _NUMS,
            "faults": {"type": "integer"},
            "holding": {"type": "boolean"},
            "torque_enabled": {"type": "boolean"},
            "stale": {"type": ["array", "null"], "items": {"type": "boolean"}},
            "received_at": {"type": "number"},
            "sent_at": {"type": ["number", "null"]},
            "last_applied_seq": {"type": ["integer", "null"]},
        },
    ),
}


def camera_topic(name: str, cameras: int) -> str:
    """The channel of camera `name` of a policy with `cameras` cameras: /camera for one (the layout
    of every one-camera recording), /camera/<name> for several."""
    return CAMERA if cameras <= 1 else f"{CAMERA}/{name}"


def is_camera_topic(topic: str) -> bool:
    return topic == CAMERA or topic.startswith(CAMERA + "/")


def stamp(t_s: float) -> dict[str, int]:
    """Monotonic seconds -> Foxglove's {sec, nsec}."""
    ns = max(0, int(round(t_s * 1e9)))
    return {"sec": ns // 1_000_000_000, "nsec": ns % 1_000_000_000}


def image_message(t_s: float, seq: int, data: bytes, fmt: str, camera: str = "camera") -> dict[str, Any]:
    """foxglove.CompressedImage (frame_id: the camera's name), plus the sequence number of the chunk
    it fed (Foxglove ignores it)."""
    return {
        "timestamp": stamp(t_s),
        "frame_id": camera,
        "data": base64.b64encode(data).decode("ascii"),
        "format": fmt,
        "seq": seq,
    }


@dataclass
class RecordedChunk:
    """One chunk as recorded: what the sampler was given and what it returned."""

    seq: int  # its place in the recording (0, 1, ...)
    chunk: int  # the loop's chunk id (restarts with each --sim episode)
    images: dict[str, bytes]  # camera name -> its compressed frame, in the policy's camera order
    image_format: str  # png | jpeg
    state: np.ndarray  # (s,) float32 raw proprio
    tokens: np.ndarray  # (l,) int64
    d: int
    s: int
    r: int
    omega: np.ndarray  # (H,) float32
    reference: np.ndarray | None  # (k, a) float32 raw: the executing chunk from index s on
    noise: np.ndarray  # (H, a) float32
    plan: np.ndarray  # (H, a) float32 raw joint targets
    capture_time: float
    ready_time: float
    latency_ms: float
    stages_ms: dict[str, float]
    msg: dict[str, Any] = field(repr=False, default_factory=dict)
    single: bool = True  # recorded on /camera (one camera): frame() is the array the policy took

    @property
    def image(self) -> bytes:
        """The first camera's compressed frame (b"" for a policy without a camera)."""
        return next(iter(self.images.values()), b"")

    def frames(self) -> dict[str, np.ndarray]:
        """Every camera's frame by name, decoded: (H, W, 3) uint8 RGB each."""
        from edge.images import decode_image

        return {name: decode_image(data, self.image_format) for name, data in self.images.items()}

    def frame(self) -> np.ndarray | dict[str, np.ndarray]:
        """The image as the policy took it (``set_observation``): the (H, W, 3) array of a one-camera
        policy, {camera: image} for several, an empty array for a policy without a camera."""
        frames = self.frames()
        if not frames:
            return np.zeros((0,), np.uint8)
        return next(iter(frames.values())) if self.single else frames


@dataclass
class Recording:
    """A recording as read back: ``meta`` (legato.run), ``summary`` (legato.summary; None when the
    run was cut off), whole chunks in order, ticks and telemetry as arrays, events, and the counts
    of every topic."""

    path: Path
    meta: dict[str, Any]
    summary: dict[str, Any] | None
    chunks: list[RecordedChunk]
    ticks: np.ndarray  # (n, 9 + a): tick, deadline, start, end, mode, chunk, index, fault, write_s, setpoint
    telemetry: dict[str, np.ndarray]  # received_at (n,), positions (n, a), velocities, faults, holding
    events: list[dict[str, Any]]
    counts: dict[str, int]
    complete: bool  # the file ends with MCAP's footer (a clean close)
    cut: str | None = None  # why reading stopped early (a truncated record), None for a whole file

    @property
    def cameras(self) -> list[str]:
        """The camera names the policy consumed, in its order (the bundle's; "camera" for a
        recording made before the names were recorded)."""
        named = [c["name"] for c in self.meta.get("cameras") or ()]
        return named or (list(self.chunks[0].images) if self.chunks else [])


def _arr(x: Any, dtype: Any = np.float32) -> np.ndarray:
    return np.asarray(x, dtype)


def read_recording(path: str | Path) -> Recording:
    """Read every record of a recording, whole or cut off; one-line UsageError for what is not one."""
    try:
        from mcap.stream_reader import StreamReader
    except ImportError:
        raise UsageError(f"reading recordings needs the mcap package: pip install {RECORD_EXTRA}") from None
    from mcap.records import Channel, Footer, Message, Metadata

    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise UsageError(f"cannot read recording {p}: {e.strerror or e}") from None
    if head != MCAP_MAGIC:
        raise UsageError(f"{p} is not an MCAP recording (no MCAP magic at the start)")
    topics: dict[int, str] = {}
    meta: dict[str, Any] = {}
    summary: dict[str, Any] | None = None
    msgs: dict[str, list[tuple[int, dict[str, Any]]]] = {t: [] for t in SCHEMAS if t != CAMERA}
    frames: dict[tuple[str, int], tuple[str, dict[str, Any]]] = {}  # (camera, seq) -> (topic, image message)
    counts: dict[str, int] = {}
    complete, cut = False, None
    with open(p, "rb") as f:
        it = iter(StreamReader(f, validate_crcs=True).records)
        while True:
            try:
                rec = next(it)
            except StopIteration:
                break
            except Exception as e:  # the record the kill cut through (or a corrupted tail)
                cut = f"{type(e).__name__}: {e}"[:200]
                break
            if isinstance(rec, Channel):
                topics[rec.id] = rec.topic
            elif isinstance(rec, Message):
                topic = topics.get(rec.channel_id, "?")
                counts[topic] = counts.get(topic, 0) + 1
                if is_camera_topic(topic):
                    m = json.loads(rec.data)
                    name = topic[len(CAMERA) + 1 :] or m.get("frame_id", "camera")
                    frames[(name, int(m["seq"]))] = (topic, m)
                elif topic in msgs:
                    msgs[topic].append((rec.log_time, json.loads(rec.data)))
            elif isinstance(rec, Metadata):
                body = json.loads(rec.metadata.get("json", "{}"))
                if rec.name == "legato.run":
                    meta = body
                elif rec.name == "legato.summary":
                    summary = body
            elif isinstance(rec, Footer):
                complete = True
    if not meta:
        raise UsageError(f"{p} is an MCAP file but not a legato recording (no legato.run metadata)")
    obs = {m["seq"]: m for _, m in msgs[OBSERVATION]}
    by_seq: dict[int, dict[str, tuple[str, dict[str, Any]]]] = {}
    for (name, q), tm in frames.items():
        by_seq.setdefault(q, {})[name] = tm
    chunks = []
    for _, m in sorted(msgs[CHUNK], key=lambda x: x[1]["seq"]):
        q = m["seq"]
        got = by_seq.get(q, {})
        # the cameras this chunk's frames came from (recordings before several cameras: one, /camera)
        names = m.get("cameras", list(got)[:1] or ["camera"])
        if q not in obs or any(n not in got for n in names):
            continue  # not whole: its MCAP chunk was cut
        ob = obs[q]
        ref = m.get("reference")
        fmts = [got[n][1]["format"] for n in names] or ["png"]
        chunks.append(
            RecordedChunk(
                seq=q,
                chunk=int(m["chunk"]),
                images={n: base64.b64decode(got[n][1]["data"]) for n in names},
                image_format=fmts[0],
                state=_arr(ob["state"]),
                tokens=_arr(ob["tokens"], np.int64),
                d=int(m["d"]),
                s=int(m["s"]),
                r=int(m["r"]),
                omega=_arr(m["omega"]),
                reference=None if ref is None else _arr(ref),
                noise=_arr(m["noise"]),
                plan=_arr(m["plan"]),
                capture_time=float(m["capture_time"]),
                ready_time=float(m["ready_time"]),
                latency_ms=float(m["latency_ms"]),
                stages_ms=dict(m.get("stages_ms", {})),
                msg=m,
                single=all(got[n][0] == CAMERA for n in names),
            )
        )
    sp = [m for _, m in msgs[SETPOINT]]
    a = len(sp[0]["positions"]) if sp else 0
    ticks = np.zeros((len(sp), 9 + a))
    for i, m in enumerate(sp):
        ticks[i, :9] = (
            m["tick"],
            m["deadline"],
            m["start"],
            m["end"],
            MODE_IDS.get(m["mode"], 0),
            m["chunk"],
            m["index"],
            m["fault"],
            m["write_ms"] / 1e3,
        )
        ticks[i, 9:] = m["positions"]
    tel = [m for _, m in msgs[TELEMETRY]]
    a = len(tel[0]["positions"]) if tel else a
    telemetry = {
        "received_at": np.array([m["received_at"] for m in tel], float),
        "positions": np.array([m["positions"] for m in tel], float).reshape(len(tel), a),
        "velocities": np.array([m["velocities"] for m in tel], float).reshape(len(tel), a),
        "faults": np.array([m["faults"] for m in tel], np.int64),
        "holding": np.array([m["holding"] for m in tel], bool),
        "stale": np.array([any(m["stale"] or ()) for m in tel], bool),
    }
    events = [m for _, m in msgs[EVENTS]]
    return Recording(p, meta, summary, chunks, ticks, telemetry, events, counts, complete, cut)

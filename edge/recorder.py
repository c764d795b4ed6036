"""`--record FILE`: what the robot saw and did, written to MCAP while it runs (edge/recording.py
has the format). Robot side, no torch.

The loop never waits for the disk. Two hooks hand copies to a bounded queue and return:
- :meth:`Recorder.on_chunk` from the inference worker after each chunk (observation: every
  camera's frame, tokens, state; request, omega, reference, noise, the chunk, its timing row);
- :meth:`Recorder.on_ticks` from the session's drain (tick rows with the setpoint sent, the
  latest telemetry).
The clock calls neither. A full queue drops the item and counts it (``dropped``); one writer
thread encodes (PNG / JPEG, JSON) and writes. A frame the hook cannot take (a shape or type no
policy gives) is a bug and raises in the worker, like any other worker bug: the run stops and
says why, rather than going on without its recording. After each chunk's messages it closes the
MCAP chunk (so a kill loses at most the chunk being written).

Bounded disk use: the writer stops before the file would pass ``max_mb`` (it finishes the file
cleanly, with a note). A write error (a full disk, a pulled card) stops the recording, never the
robot: the file keeps what reached it, and the reason is in the run's summary. Only write errors
(OSError) and the size cap are expected; anything else the writer raises is a recorder bug: it
stops the recording too, is counted (``record.errors``) and named in the summary.
"""

from __future__ import annotations

import contextlib
import errno
import json
import platform
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from edge.errors import UsageError
from edge.loop import CHUNK_BASE_COLS, TICK_COLS, UNDERRUN
from edge.recording import (
    CAMERA,
    CHUNK,
    EVENTS,
    MCAP_MAGIC,
    MODE_NAMES,
    OBSERVATION,
    PROFILE,
    RECORD_EXTRA,
    SCHEMAS,
    SETPOINT,
    TELEMETRY,
    camera_topic,
    image_message,
    stamp,
)

IMAGE_FORMATS = ("png", "jpeg")
_C = {c: i for i, c in enumerate(CHUNK_BASE_COLS)}
_T = {c: i for i, c in enumerate(TICK_COLS)}


@dataclass(frozen=True)
class RecordOptions:
    path: str
    image_format: str = "png"  # png: lossless (a replay feeds the engines the same pixels); jpeg: smaller
    jpeg_quality: int = 90
    max_mb: float = 1024.0  # stop recording before the file passes this size
    queue: int = 1024  # items (a chunk, or one drain's tick rows) waiting for the writer
    overwrite: bool = False  # replace an existing legato recording at path


def is_recording(path: Path) -> bool:
    """True for an MCAP file (the only kind of file --record-overwrite may replace)."""
    try:
        with open(path, "rb") as f:
            return f.read(8) == MCAP_MAGIC
    except OSError:
        return False


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("legato-edge")
    except PackageNotFoundError:
        return "unknown"


def camera_records(man: Any) -> list[dict[str, Any]] | None:
    """The policy's cameras (edge.launch.policy_cameras) as a recording's metadata writes them:
    name, height, width in its order; None for a model that declares none."""
    from edge.launch import policy_cameras

    if not (getattr(man, "remote", False) or hasattr(man, "adapter")):
        return None
    return [{"name": c.name, "height": int(c.height), "width": int(c.width)} for c in policy_cameras(man)]


def run_metadata(
    man: Any, prof: Any, cfg: Any, den: Any, opts: RecordOptions, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """legato.run: which bundle (manifest sha256), profile, device and settings made this run."""
    from edge.device import identify
    from edge.outputs import sha256_file

    path = Path(getattr(man, "path", "") or ".")
    digest = None  # a remote policy (--remote) has no local manifest
    with contextlib.suppress(OSError, TypeError):
        digest = sha256_file(path / "manifest.json")
    prof_text = None
    with contextlib.suppress(OSError, AttributeError, UnicodeDecodeError):
        prof_text = Path(prof.path).read_text()
    return {
        "format": "legato-recording",
        "format_version": 1,
        "tool": f"legato-edge {_version()}",
        "clock": "time.monotonic",
        "wall_minus_monotonic_s": time.time() - time.monotonic(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "bundle": {
            "path": str(path),
            "name": getattr(man, "name", None),
            "precision": getattr(man, "precision", None),
            "manifest_sha256": digest,
        },
        "profile": {"name": prof.name, "toml": prof_text, "settings": prof.to_dict()},
        "device": {
            "host": platform.node(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            **identify().to_dict(),
        },
        "spec": {**asdict(man.spec), "image_hw": list(man.spec.image_hw)},
        "cameras": camera_records(man),
        "loop": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        # a remote policy (--remote) has no local graphs: fused null, the server's stage names
        "denoiser": {
            "mode": den.mode,
            "fused": None if not hasattr(den, "fused") else den.fused is not None,
            "stages": list(den.stage_names),
            "remote": bool(getattr(man, "remote", False)),
        },
        "record": {"image_format": opts.image_format, "max_mb": opts.max_mb, "queue": opts.queue},
        **(extra or {}),
    }


def omega_fed(den: Any, req: Any, h: int, first: bool) -> np.ndarray:
    """The (H,) omega the denoiser fed its graphs for the last chunk: its graph input where it has
    one, else the schedule's (a remote denoiser has no local graphs)."""
    omega = getattr(den, "omega", None)  # ChunkDenoiser's (b, h) buffer (its graph input)
    if isinstance(omega, np.ndarray) and omega.size == h:
        return np.array(omega, np.float32).reshape(h)
    from edge.schedule import omega_schedule

    if first:
        return np.zeros(h, np.float32)
    return np.asarray(omega_schedule(req.d, req.r, h), np.float32).reshape(h)


class Recorder:
    """Open with the run's metadata; feed it with the two hooks; :meth:`close` with the summary."""

    def __init__(self, opts: RecordOptions, meta: dict[str, Any], *, stream: BinaryIO | None = None) -> None:
        try:
            from mcap.writer import CompressionType, Writer
        except ImportError:
            raise UsageError(f"--record needs the mcap package: pip install {RECORD_EXTRA}") from None
        from edge.images import JPEG_MISSING, jpeg_available

        if opts.image_format not in IMAGE_FORMATS:
            raise UsageError(f"--record-image {opts.image_format!r}: choose png or jpeg")
        if opts.image_format == "jpeg" and not jpeg_available():
            raise UsageError(JPEG_MISSING)
        self.opts = opts
        self.max_bytes = int(opts.max_mb * 1024 * 1024)
        if stream is None:
            from edge.outputs import open_stream_file

            stream = open_stream_file(
                opts.path,
                replace=opts.overwrite,
                flag="--record-overwrite",
                what="legato recording",
                own=is_recording,
            )
        self.f = stream
        # chunks are closed by hand after each policy chunk; the size is only a backstop
        self.w = Writer(stream, chunk_size=16 << 20, compression=CompressionType.ZSTD)
        self.w.start(profile=PROFILE, library=f"legato-edge {_version()}")
        self.ch: dict[str, int] = {}
        self._sid: dict[str, int] = {}
        for topic, schema in SCHEMAS.items():
            body = json.dumps(schema).encode()
            self._sid[topic] = self.w.register_schema(schema["title"], "jsonschema", body)
            if topic != CAMERA:
                self.ch[topic] = self.w.register_channel(topic, "json", self._sid[topic])
        # one channel per camera, named for it (/camera for a one-camera policy): registered now
        # where the run's metadata names the policy's cameras, else with the first frame
        known = meta.get("cameras")
        self.cameras: list[str] | None = None if known is None else [str(c["name"]) for c in known]
        for name in self.cameras or ():
            self._camera_channel(name, len(self.cameras or ()))
        self.w.add_metadata(
            "legato.run",
            {
                "json": json.dumps(meta),
                "bundle": str(meta.get("bundle", {})),
                "profile": str(meta.get("profile", {}).get("name")),
            },
        )
        self.w.flush()
        self.q: queue.Queue[Any] = queue.Queue(max(1, opts.queue))
        self.counts = {"frames": 0, "chunks": 0, "ticks": 0, "telemetry": 0, "events": 0}
        self.errors = 0  # recorder bugs the writer met (each stops the recording; the first is named)
        self.dropped = {"chunks": 0, "ticks": 0}  # full queue
        self.discarded = 0  # items that came after the recording stopped
        self.stopped: str | None = None  # why the recording stopped early (max-mb, a disk error)
        self.failed = False  # the file could not be finished (a write error)
        self._pending = 0  # bytes added since the last MCAP chunk was closed (uncompressed)
        self._last_tel = -1.0
        self._last_mode = 0
        self._seq = -1
        self._closed = False
        self.thread = threading.Thread(target=self._run, name="legato-record", daemon=True)
        self.thread.start()

    # ---- hooks (any thread but the clock; never block) -------------------------------------------
    def on_chunk(
        self,
        chunk_id: int,
        frame: Any,
        req: Any,
        den: Any,
        reference: np.ndarray | None,
        noise: np.ndarray,
        plan: np.ndarray,
        row: np.ndarray,
        stage_names: tuple[str, ...],
    ) -> None:
        """After a chunk is posted (the worker): copies of its inputs (every camera's frame, tokens,
        state, the request, the omega the denoiser fed, reference, noise), its result and its timing
        row. Raises (a bug) for a frame no policy gives; never waits."""
        if self.stopped:
            self.discarded += 1
            return
        h = plan.shape[0]
        omega = omega_fed(den, req, h, first=reference is None)
        images = self._images(frame.image)
        self._seq += 1  # chunk ids restart with each episode's loop; seq numbers the recording's chunks
        item = (
            "chunk",
            self._seq,
            int(chunk_id),
            images,
            np.array(frame.tokens if frame.tokens is not None else [], np.int64),
            np.array(frame.state, np.float32),
            int(req.d),
            int(req.s),
            int(req.r),
            np.array(omega, np.float32).reshape(h),
            None if reference is None else np.array(reference, np.float32),
            np.array(noise, np.float32).reshape(h, -1),
            np.array(plan, np.float32),
            np.array(row, float),
            tuple(stage_names),
        )
        try:
            self.q.put_nowait(item)
        except queue.Full:
            self.dropped["chunks"] += 1

    def _images(self, image: Any) -> list[tuple[str, np.ndarray]]:
        """(camera name, a copy of its frame) for each camera the policy consumed, in its order:
        {camera: image} for several, one (H, W, 3) array for one, an empty array for none."""
        if isinstance(image, Mapping):
            names = self.cameras or list(image)
            missing = [n for n in names if n not in image]
            if missing:
                have = ", ".join(names)
                raise ValueError(f"--record: the frame lacks camera {missing[0]!r} (the policy's: {have})")
            return [(n, _frame(image[n], n)) for n in names]
        if np.size(image) == 0:  # a policy without a camera
            return []
        names = self.cameras or ["camera"]
        if len(names) != 1:
            raise ValueError(f"--record: one image for a policy with cameras {', '.join(names)}")
        return [(names[0], _frame(image, names[0]))]

    def _camera_channel(self, name: str, cameras: int) -> int:
        topic = camera_topic(name, cameras)
        if topic not in self.ch:
            self.ch[topic] = self.w.register_channel(topic, "json", self._sid[CAMERA], {"camera": name})
        return self.ch[topic]

    def on_ticks(self, rows: np.ndarray, telemetry: Any = None) -> None:
        """Tick rows the session drained (TICK_COLS, then the setpoint sent) and the latest telemetry."""
        if self.stopped:
            self.discarded += 1
            return
        if len(rows) == 0 and telemetry is None:
            return
        try:
            self.q.put_nowait(("ticks", rows, telemetry))
        except queue.Full:
            self.dropped["ticks"] += len(rows)

    # ---- writer thread -------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            if self.stopped:
                self.discarded += 1
                continue
            try:
                if item[0] == "chunk":
                    self._write_chunk(*item[1:])
                else:
                    self._write_ticks(item[1], item[2])
            except OSError as e:  # a full disk, a pulled card: the recording stops, the robot does not
                why = "disk full" if e.errno == errno.ENOSPC else "write error"
                self._fail(f"{why}: {e.strerror or e}")
            except Exception as e:  # a recorder bug: the writer thread is no place to end the run,
                self.errors += 1  # so it stops the recording, is counted and named in the summary
                self._fail(f"recorder error (a bug): {type(e).__name__}: {e}"[:300])

    def _fail(self, why: str) -> None:
        self.stopped, self.failed = why, True
        with contextlib.suppress(OSError):
            self.f.close()

    def _add(self, topic: str, t_s: float, msg: dict[str, Any], publish_s: float | None = None) -> None:
        data = json.dumps(msg, separators=(",", ":")).encode()
        self._pending += len(data) + 32
        self.w.add_message(self.ch[topic], _ns(t_s), data, _ns(publish_s or t_s))

    def _room(self, extra: int) -> bool:
        """True if `extra` more bytes (and the index a clean finish writes) still fit in max_mb."""
        reserve = 64 * 1024 + 256 * (self.counts["chunks"] + 8)
        return self.f.tell() + self._pending + extra + reserve <= self.max_bytes

    def _stop_full(self) -> None:
        self.stopped = f"max-mb: the recording reached --record-max-mb {self.opts.max_mb:g}"
        self._event(time.monotonic(), 3, f"recording stopped: {self.stopped}")

    def _event(self, t_s: float, level: int, message: str) -> None:
        self._add(
            EVENTS,
            t_s,
            {
                "timestamp": stamp(t_s),
                "level": level,
                "message": message,
                "name": "legato",
                "file": "",
                "line": 0,
            },
        )
        self.counts["events"] += 1

    def _write_chunk(
        self,
        seq: int,
        cid: int,
        images: list[tuple[str, np.ndarray]],
        tokens: np.ndarray,
        state: np.ndarray,
        d: int,
        s: int,
        r: int,
        omega: np.ndarray,
        reference: np.ndarray | None,
        noise: np.ndarray,
        plan: np.ndarray,
        row: np.ndarray,
        stage_names: tuple[str, ...],
    ) -> None:
        from edge.images import encode_jpeg, encode_png

        fmt = self.opts.image_format
        q = self.opts.jpeg_quality
        data = [(n, encode_png(im, level=1) if fmt == "png" else encode_jpeg(im, q)) for n, im in images]
        if not self._room(sum(len(b) for _, b in data) * 4 // 3 + 8 * plan.size * 3 * 24 + 4096):
            self._stop_full()
            return
        cap, ready = float(row[_C["capture"]]), float(row[_C["ready"]])
        base = len(CHUNK_BASE_COLS)
        stages = {n: float(row[base + i]) * 1e3 for i, n in enumerate(stage_names)}
        for name, b in data:
            ch = self._camera_channel(name, len(data))
            msg = json.dumps(image_message(cap, seq, b, fmt, name), separators=(",", ":")).encode()
            self._pending += len(msg) + 32
            self.w.add_message(ch, _ns(cap), msg, _ns(ready))
        self._add(
            OBSERVATION,
            cap,
            {
                "timestamp": stamp(cap),
                "seq": seq,
                "chunk": cid,
                "state": state.tolist(),
                "tokens": tokens.tolist(),
            },
            ready,
        )
        self._add(
            CHUNK,
            cap,
            {
                "timestamp": stamp(cap),
                "seq": seq,
                "chunk": cid,
                "d": d,
                "s": s,
                "r": r,
                "omega": omega.tolist(),
                "reference": None if reference is None else reference.tolist(),
                "noise": noise.tolist(),
                "plan": plan.tolist(),
                "latency_ms": float(row[_C["latency_s"]]) * 1e3,
                "preprocess_ms": float(row[_C["preprocess_s"]]) * 1e3,
                "request_time": float(row[_C["request"]]),
                "capture_time": cap,
                "ready_time": ready,
                "d_est": int(row[_C["d_est"]]),
                "start_index": int(row[_C["start_index"]]),
                "stages_ms": stages,
                "cameras": [n for n, _ in data],
            },
            ready,
        )
        self.w.flush()  # close the MCAP chunk: this policy chunk is on disk whole
        self._pending = 0
        self.counts["frames"] += len(data)  # counted once on disk
        self.counts["chunks"] += 1

    def _write_ticks(self, rows: np.ndarray, tel: Any) -> None:
        n_base = len(TICK_COLS)
        if not self._room(len(rows) * 400 + 1024):
            self._stop_full()
            return
        for r in rows:
            mode = int(r[_T["mode"]])
            t = float(r[_T["start"]])
            self._add(
                SETPOINT,
                t,
                {
                    "timestamp": stamp(t),
                    "tick": int(r[_T["tick"]]),
                    "mode": MODE_NAMES.get(mode, "run"),
                    "chunk": int(r[_T["chunk"]]),
                    "index": int(r[_T["index"]]),
                    "fault": int(r[_T["fault"]]),
                    "deadline": float(r[_T["deadline"]]),
                    "start": t,
                    "end": float(r[_T["end"]]),
                    "write_ms": float(r[_T["write_s"]]) * 1e3,
                    "positions": r[n_base:].tolist(),
                },
            )
            self.counts["ticks"] += 1
            if mode == UNDERRUN and self._last_mode != UNDERRUN:
                self._event(t, 3, f"underrun at tick {int(r[_T['tick']])}: the arm holds its last setpoint")
            if int(r[_T["fault"]]):
                self._event(t, 4, f"fault at tick {int(r[_T['tick']])}: a non-finite setpoint was held")
            self._last_mode = mode
        if tel is not None and float(tel.received_at) > self._last_tel:
            self._last_tel = float(tel.received_at)
            stale = getattr(tel, "stale", None)
            self._add(
                TELEMETRY,
                self._last_tel,
                {
                    "timestamp": stamp(self._last_tel),
                    "positions": np.asarray(tel.positions, float).tolist(),
                    "velocities": np.asarray(tel.velocities, float).tolist(),
                    "efforts": np.asarray(tel.efforts, float).tolist(),
                    "faults": int(tel.faults),
                    "holding": bool(tel.holding),
                    "torque_enabled": bool(tel.torque_enabled),
                    "stale": None if stale is None else [bool(x) for x in stale],
                    "received_at": self._last_tel,
                    "sent_at": _opt(tel.sent_at, float),
                    "last_applied_seq": _opt(tel.last_applied_seq, int),  # None on vendor buses
                },
            )
            self.counts["telemetry"] += 1
        if self._pending > 4 << 20:  # a long hold without chunks: do not let the open chunk grow
            self.w.flush()
            self._pending = 0

    # ---- close ---------------------------------------------------------------------------------
    def close(self, summary: dict[str, Any] | None = None, timeout_s: float = 30.0) -> dict[str, Any]:
        """Drain the queue, write legato.summary and MCAP's index, close the file; the counts."""
        if not self._closed:
            self._closed = True
            try:
                self.q.put(None, timeout=timeout_s)
            except queue.Full:
                self.stopped = self.stopped or "the writer did not keep up at close"
            self.thread.join(timeout=timeout_s)
            if not self.failed and not self.thread.is_alive():
                try:
                    body = {**self.stats(), "run": summary or {}}
                    self.w.add_metadata("legato.summary", {"json": json.dumps(body, default=str)})
                    self.w.finish()
                    self.f.close()
                except OSError as e:
                    self._fail(
                        f"{'disk full' if e.errno == errno.ENOSPC else 'write error'} at close: "
                        f"{e.strerror or e}"
                    )
        return self.stats()

    def stats(self) -> dict[str, Any]:
        """record.* keys for the run's summary."""
        try:
            size = Path(self.opts.path).stat().st_size if self.opts.path else None
        except OSError:
            size = None
        return {
            "record.file": self.opts.path,
            "record.frames": self.counts["frames"],
            "record.chunks": self.counts["chunks"],
            "record.ticks": self.counts["ticks"],
            "record.telemetry": self.counts["telemetry"],
            "record.events": self.counts["events"],
            "record.cameras": list(self.cameras or ()),
            "record.errors": self.errors,
            "record.dropped_chunks": self.dropped["chunks"],
            "record.dropped_ticks": self.dropped["ticks"],
            "record.discarded_after_stop": self.discarded,
            "record.stopped": self.stopped,
            "record.bytes": size,
        }


def _ns(t_s: float) -> int:
    return max(0, int(round(t_s * 1e9)))


def _opt(x: Any, kind: Any) -> Any:
    """An optional telemetry field: None where the bus has none (None, or NaN in the shared block)."""
    if x is None or (isinstance(x, float) and x != x):
        return None
    return kind(x)


def _frame(image: Any, name: str) -> np.ndarray:
    """A copy of one camera's frame, (H, W, 3) uint8 RGB; a ValueError (a bug) for anything else."""
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"--record: camera {name!r} gave a {a.dtype} {a.shape} frame, not (H, W, 3) uint8")
    return a.copy()

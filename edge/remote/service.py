"""One served policy, transport-free: the metadata, the API key check, one request -> one reply,
and the session loop that both transports drive (edge.remote.server on the websockets package,
edge.remote.replicas on Ray Serve's proxy).

A :class:`PolicyService` owns one denoiser (engines are not re-entrant): requests from every
session run one at a time (decode, check, denoise, encode). On `legato serve`'s own transport
they run in the event loop's thread, as openpi's server runs them: handing each request to a
worker thread and the reply back costs two wake-ups of a thread that slept through the
inference (0.1-0.3 ms each on a VM: bench/bench_remote.py overhead), and with one engine the
requests queue either way; /healthz and new connections wait at most one chunk. Under Ray
Serve (``inline=False``) they run in the service's worker thread, so the replica's event loop,
which also serves Ray's own traffic, never blocks.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from edge.errors import LegatoError, UsageError
from edge.policy import ChunkRequest
from edge.remote import protocol, wire
from edge.remote.protocol import Refusal

log = logging.getLogger("legato.serve")
CLOSE_BAD_REQUEST, CLOSE_INTERNAL = 1008, 1011  # RFC 6455: policy violation, internal error


def read_api_key(path: str | None) -> str | None:
    """The API key in a file (first line, stripped); None without a file. One line on a bad file."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            key = f.readline().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise LegatoError(f"--api-key-file {path}: cannot read it ({type(e).__name__}: {e})") from None
    if not key or any(c.isspace() for c in key):
        raise LegatoError(
            f"--api-key-file {path}: the first line must be the key (no spaces), it is "
            f"{'empty' if not key else 'not one word'}"
        )
    return key


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("legato-edge")
    except PackageNotFoundError:
        return "unknown"


class PolicyService:
    """A denoiser behind the protocol. ``delay_s`` (tests, what-ifs) holds every reply back
    (run_session waits it out without blocking the other sessions)."""

    def __init__(
        self,
        man: Any,
        prof: Any,
        den: Any,
        *,
        api_key: str | None = None,
        max_message: int | None = None,
        seed: int = 0,
        delay_s: float = 0.0,
    ) -> None:
        self.man, self.prof, self.den = man, prof, den
        self.api_key = api_key
        self.server_id = f"{socket.gethostname()}:{os.getpid()}"
        self.meta = protocol.metadata(man, prof, den, self.server_id, _version(), max_message)
        self.max_message = int(self.meta["max_message_bytes"])
        self.meta_bytes = wire.packb(self.meta)
        self.schema = protocol.observation_schema(man.adapter)
        self._cams = protocol.camera_keys(man.adapter)
        self._prompt: Any = None  # the task string tokenized here (pi0.5: with each request's state)
        self._checked: set[str] = set()  # tasks already checked to fit at every state
        if protocol.PROMPT in self.schema and protocol.TOKENS not in self.schema:
            self._prompt = self._prompter()  # the prompt is the only way in: its library is needed now
        self.h, self.a = den.spec.horizon, den.spec.action_dim
        self.default_s = prof.control.execution_horizon
        self.delay_s = delay_s
        self._rng = np.random.default_rng(seed)
        self._eps = np.zeros((1, *den.noise_shape[1:]), np.float32)  # (1, H, noise_dim)
        self._lock = threading.Lock()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="legato-serve")
        # counters (read by the status line and /stats; written by the worker and the event loop)
        self.sessions_open = self.sessions_total = self.requests = self.refused = self.failed = 0
        self.auth_refused = 0

    # ---- the handshake -----------------------------------------------------------------------
    def authorized(self, header: str | None) -> bool:
        """openpi-client sends ``Authorization: Api-Key KEY``; without a key everything passes."""
        if self.api_key is None:
            return True
        ok = header is not None and hmac.compare_digest(header.encode(), f"Api-Key {self.api_key}".encode())
        self.auth_refused += int(not ok)
        return ok

    # ---- one request (the event loop's thread, or the worker under Ray Serve) ------------
    def infer(self, data: bytes | str, received: float, prev_total_s: float | None) -> bytes:
        """Decode, check and serve one request; raises Refusal for a bad one."""
        if isinstance(data, str):
            raise Refusal("expected a binary msgpack frame, got a text frame")
        try:
            msg = wire.unpackb(data, self.max_message)
        except wire.WireError as e:
            raise Refusal(str(e)) from None
        req = protocol.parse_request(msg, self.schema, self.h, self.a, self.default_s, self._eps.shape[-1])
        den, obs = self.den, req.obs
        image = obs[protocol.IMAGE] if self._cams is None else {n: obs[k] for n, k in self._cams.items()}
        tokens, mask = obs.get(protocol.TOKENS), None
        if protocol.PROMPT in obs:
            task = obs[protocol.PROMPT]
            try:
                if self._prompt is None:  # ids or a prompt: the tokenizer only once a prompt comes
                    self._prompt = self._prompter()
                if task not in self._checked:  # refused whatever the state, not at some states only
                    self._prompt.check(task)
                    if len(self._checked) < self._prompt.CACHE:
                        self._checked.add(task)
                tokens, mask = self._prompt(task, obs[protocol.STATE])
            except UsageError as e:  # a task whose prompt does not fit the model
                raise Refusal(str(e)) from None
        with self._lock:
            t0 = time.monotonic()
            den.set_observation(image, tokens, obs[protocol.STATE], mask)
            if req.noise is not None:
                self._eps[0] = req.noise
            else:
                self._rng.standard_normal(out=self._eps, dtype=np.float32)
            tail = req.prev_tail
            cr = ChunkRequest(d=req.d if tail is not None else 0, s=req.s, r=req.r if tail is not None else 0)
            try:
                chunk = np.array(den.denoise(self._eps, tail, cr), np.float32)
            except LegatoError as e:  # d / s / r the model does not allow
                raise Refusal(str(e)) from None
            stages = {n: float(v) * 1e-6 for n, v in zip(den.stage_names, den.stage_ns, strict=True)}
            t1 = time.monotonic()
        self.requests += 1
        infer_ms = (t1 - t0) * 1e3
        server_timing = {"infer_ms": infer_ms}
        if prev_total_s is not None:
            server_timing["prev_total_ms"] = prev_total_s * 1e3
        reply = {
            "actions": chunk,
            "policy_timing": {"infer_ms": stages.get("chunk", infer_ms)},
            "server_timing": server_timing,
            "legato": {
                "chunk_id": req.chunk_id,
                "d": cr.d,
                "s": cr.s,
                "r": cr.r,
                "mode": den.mode,
                "server": self.server_id,
                "queue_ms": (t0 - received) * 1e3,
                "engines_ms": stages.get("engines", infer_ms),
                "stages_ms": stages,
            },
        }
        return wire.packb(reply)

    def _prompter(self) -> Any:
        from edge.language import PromptBuilder

        return PromptBuilder(self.man.path, self.man.adapter.observation.language)

    def stats(self) -> dict[str, Any]:
        return {
            "server_id": self.server_id,
            "sessions_open": self.sessions_open,
            "sessions_total": self.sessions_total,
            "requests": self.requests,
            "refused": self.refused,
            "failed": self.failed,
            "auth_refused": self.auth_refused,
        }

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class Connection(Protocol):
    """What a session needs of a transport: recv() -> bytes | str, or None once the peer is gone."""

    async def recv(self) -> bytes | str | None: ...
    async def send(self, data: bytes | str) -> None: ...
    async def close(self, code: int, reason: str) -> None: ...


async def run_session(conn: Connection, service: PolicyService, inline: bool = True) -> None:
    """openpi's session: metadata first, then one reply per request until the peer leaves; a bad
    request gets its one line as a text frame and a close (1008), a failure the same with 1011.
    Nothing here stops the server: other sessions go on. ``inline``: infer in this thread (the
    module docstring says when not to)."""
    loop = asyncio.get_running_loop()
    service.sessions_open += 1
    service.sessions_total += 1
    try:
        await conn.send(service.meta_bytes)
        prev_total: float | None = None
        while True:
            data = await conn.recv()
            if data is None:
                return
            start = time.monotonic()
            try:
                if inline:
                    reply = service.infer(data, start, prev_total)
                else:
                    reply = await loop.run_in_executor(
                        service.executor, service.infer, data, start, prev_total
                    )
            except Refusal as e:
                service.refused += 1
                line = " ".join(str(e).split())
                log.info("refused a request: %s", line)
                await conn.send(f"legato serve: refused: {line}")
                await conn.close(CLOSE_BAD_REQUEST, "bad request (reason in the previous frame)")
                return
            except Exception as e:  # a bug or a failed engine: this session ends, the server goes on
                service.failed += 1
                line = f"{type(e).__name__}: {' '.join(str(e).split())}"
                log.exception("request failed")
                await conn.send(f"legato serve: internal error: {line}")
                await conn.close(CLOSE_INTERNAL, "internal error (reason in the previous frame)")
                return
            if service.delay_s > 0:
                await asyncio.sleep(service.delay_s)
            await conn.send(reply)
            prev_total = time.monotonic() - start
    finally:
        service.sessions_open -= 1

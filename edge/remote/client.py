"""The robot side of remote inference: :class:`RemoteDenoiser`, the chunk denoiser's interface
(``set_observation``, ``denoise``, ``stage_names``, ``stage_ns``, ``spec``, ``mode``) over a
websocket to `legato serve`, so the real-time loop, its clock and its safety run unchanged. The
websocket is edge.remote.link's, read by the thread that asks for the chunk.

Each chunk is one request (edge.remote.protocol): the observation, and the continuation (the
executing chunk's unexecuted tail, d, s, r, the loop's noise, a chunk id). The loop measures the
delay from the frame's capture to :meth:`denoise` returning, so the network is part of d.

Faults never reach the motors: each raises :class:`edge.errors.ChunkUnavailable` (the loop
counts it, holds, asks again) and is counted here:
- no reply within ``reply_timeout_s``: ``timeouts`` (two in a row drop the link);
- a reply to an older request (after a timeout): dropped, ``stale_replies``;
- a reply that is not the protocol (not msgpack, no (H, a) float32 ``actions``, a text frame):
  one line in ``errors``, ``garbage_replies`` / ``server_errors``, the link is dropped;
- a link the server closed while the robot was idle: seen before the next request and renewed
  (``disconnects``, ``reconnects``; no chunk lost);
- the link lost (``disconnects``): reconnects with exponential backoff (``backoff_min_s`` doubling
  to ``backoff_max_s``), each attempt bounded by ``connect_timeout_s``; the reconnected server
  must serve the same model (same metadata) or the run stops (:class:`RemoteMismatch`).

Stages (``stage_names``, nanoseconds in ``stage_ns``): request (packing), network (send to reply, the round
trip less the server's own time), server (its queue + inference), reply (decode), engines (the
server's engine calls) and chunk (all of it); ``legato profile --remote`` shows them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from edge.adapter import CameraSpec
from edge.errors import ChunkUnavailable, LegatoError, UsageError
from edge.policy import ChunkRequest, ModelSpec
from edge.remote import protocol, wire

MAX_REPLY = 1 << 24  # bytes: the largest metadata or reply the robot reads (16 MiB)


class RemoteMismatch(LegatoError):
    """The server serves something other than what this robot runs (or other than before)."""


def _link_errors() -> tuple[type[BaseException], ...]:
    """What a failed connect or a broken link raises (websockets' own errors included)."""
    from websockets.exceptions import WebSocketException

    return (OSError, TimeoutError, LegatoError, WebSocketException)


class RemoteDenoiser:
    """A denoiser whose chunks come from `legato serve` at ``url`` (ws://HOST:PORT)."""

    stage_names = ("request", "network", "server", "reply", "engines", "chunk")
    graph = "remote"  # the server's profile chooses its graphs (the summary's "graph")

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        reply_timeout_s: float = 1.0,
        connect_timeout_s: float = 2.0,
        start_timeout_s: float = 10.0,
        backoff_min_s: float = 0.05,
        backoff_max_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise LegatoError(f"--remote {url!r}: expected ws://HOST:PORT (or wss://)")
        self.url, self.api_key, self.clock = url, api_key, clock
        self.reply_timeout_s, self.connect_timeout_s = reply_timeout_s, connect_timeout_s
        self.backoff_min_s, self.backoff_max_s = backoff_min_s, backoff_max_s
        self._ws: Any = None
        self._closed = threading.Event()
        self._backoff = backoff_min_s
        self._next_attempt = 0.0
        try:  # the first connect may take longer (a lost SYN alone costs a second): nothing runs yet
            self.meta = self._open(start_timeout_s)
        except _link_errors() as e:
            raise LegatoError(f"--remote {url}: cannot reach the policy server ({_why(e)})") from None
        m = self.meta
        where = f"server {url}"  # a server without ``spec`` serves this project's own model
        spec = ModelSpec.from_dict if "spec" in m else ModelSpec.from_config
        self.spec = spec(m["spec"] if "spec" in m else m["model"], where)
        self.mode = str(m["policy"]["mode"])
        self.schema = protocol.parse_schema(m["observation"], f"server {url}")
        self.cameras = _cameras(m, self.schema, self.spec, url)
        sc = self.schema
        # how the instruction travels: token ids, or the task as text the server tokenizes
        self.takes_tokens, self.takes_prompt = protocol.TOKENS in sc, protocol.PROMPT in sc
        # --sim's ids go as they are only where they are the policy's (before: always this project's)
        self.sim_ids = self.takes_tokens and bool(m.get("sim_token_ids", True))
        want: dict[str, tuple[int, ...]] = {c.input: (c.height, c.width, 3) for c in self.cameras}
        want[protocol.STATE] = (self.spec.state_dim,)
        if self.takes_tokens:
            want[protocol.TOKENS] = (self.spec.max_tokens,)
        got = {k: t.shape for k, t in sc.items() if isinstance(t, protocol.TensorSpec)}
        if got != want or not set(sc) <= {*want, protocol.PROMPT}:
            raise RemoteMismatch(
                f"--remote {url}: the server expects observation {m['observation']}; a robot sends "
                f"{want} (its cameras by name, the state, the instruction as ids or a prompt)"
            )
        self._task: Callable[[], str] | None = None  # the prompt's task, where the server takes one
        h, a = self.spec.horizon, self.spec.action_dim
        # the policy's noise (a LeRobot policy's padded action dimension): the loop draws it
        self.noise_shape = (1, h, int(m.get("action", {}).get("noise_dim", a)))
        self._obs = {
            k: np.zeros(t.shape, np.dtype(t.dtype))
            for k, t in self.schema.items()
            if isinstance(t, protocol.TensorSpec)
        }
        self.chunk = np.zeros((h, a), np.float32)
        self.stage_ns = np.zeros(len(self.stage_names), np.int64)
        self.server_stages: dict[str, float] = {}  # the last reply's server-side stages (ms)
        self.server_id = str(m.get("server_id", "?"))
        self.servers_seen: set[str] = set()  # every replica that answered (one while the session sticks)
        self._next_id = 0
        self._timeouts_in_a_row = 0
        self.chunks = self.timeouts = self.stale_replies = self.garbage_replies = self.server_errors = 0
        self.disconnects = self.reconnects = self.unavailable = self.task_checks = 0
        self.errors: list[str] = []  # one line per distinct kind of fault

    # ---- the link ----------------------------------------------------------------------------
    def _open(self, timeout_s: float | None = None) -> dict[str, Any]:
        from edge.remote.link import WsLink

        timeout_s = self.connect_timeout_s if timeout_s is None else timeout_s
        headers = {"Authorization": f"Api-Key {self.api_key}"} if self.api_key else None
        # a reply is a chunk and a few timings: MAX_REPLY keeps a server from flooding the robot
        ws = WsLink(self.url, timeout_s=timeout_s, max_size=MAX_REPLY, headers=headers)
        try:
            first = ws.recv(timeout_s)
            if isinstance(first, str):
                raise LegatoError(f"the server answered: {' '.join(first.split())[:200]}")
            meta = wire.unpackb(first, MAX_REPLY)
            if not isinstance(meta, dict) or "model" not in meta or "observation" not in meta:
                raise LegatoError("its first message is not legato serve's metadata map")
        except BaseException:
            ws.close()
            raise
        self._ws = ws
        return meta

    def _reconnect(self) -> None:
        wait = self._next_attempt - self.clock()
        if wait > 0 and self._closed.wait(wait):
            raise self._unavailable("closed", f"remote {self.url}: client closed", False)
        try:
            meta = self._open()
        except _link_errors() as e:
            self._next_attempt = self.clock() + self._backoff
            self._backoff = min(self._backoff * 2, self.backoff_max_s)
            raise self._unavailable(
                "unreachable", f"remote {self.url}: not reachable ({_why(e)})", False
            ) from None
        self.reconnects += 1
        self._backoff = self.backoff_min_s
        if _identity(meta) != _identity(self.meta):
            self._drop()
            raise RemoteMismatch(
                f"--remote {self.url}: the server came back serving another model "
                f"({meta['policy']}, before {self.meta['policy']})"
            )
        self.server_id = str(meta.get("server_id", "?"))

    def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):  # already gone: nothing to release
                ws.close()

    def _note(self, kind: str, line: str) -> None:
        if not any(e.startswith(f"[{kind}]") for e in self.errors):
            self.errors.append(f"[{kind}] {line}")

    def _unavailable(self, kind: str, line: str, drop: bool) -> ChunkUnavailable:
        self.unavailable += 1
        self._note(kind, line)
        if drop:
            self._drop()
        return ChunkUnavailable(line)

    # ---- the denoiser interface --------------------------------------------------------------
    def set_task(self, task: Callable[[], str], tasks: list[str]) -> None:
        """Send the instruction as text: ``task()`` (this episode's, the --prompt) with every
        request, tokenized by the server (a robot without the bundle has no tokenizer); every one
        of ``tasks`` (all ``task()`` will give) is checked against the server's model now."""
        if not self.takes_prompt:
            raise RemoteMismatch(f"--remote {self.url}: the server's policy takes token ids, not a prompt "
                                 "(give --tokens)")  # fmt: skip
        self._task = task
        self._check_tasks(tasks)

    def set_observation(self, image: np.ndarray | Mapping[str, np.ndarray], tokens: np.ndarray | None,
                        state: np.ndarray) -> None:  # fmt: skip
        """Copy one observation (image (H, W, 3) uint8, or {camera name: image} for several; tokens
        (l,) or None; state (s,) raw) for the next request."""
        o = self._obs
        if isinstance(image, Mapping):
            for c in self.cameras:
                np.copyto(o[c.input], image[c.name], casting="unsafe")
        else:
            np.copyto(o[self.cameras[0].input], image, casting="unsafe")
        if self._task is None and self.takes_tokens and tokens is not None:
            np.copyto(o[protocol.TOKENS], tokens, casting="unsafe")
        np.copyto(o[protocol.STATE], state, casting="unsafe")

    def _request_obs(self) -> dict[str, Any]:
        if self._task is None:
            return self._obs
        obs: dict[str, Any] = {k: v for k, v in self._obs.items() if k != protocol.TOKENS}
        obs[protocol.PROMPT] = self._task()
        return obs

    def _check_tasks(self, tasks: list[str]) -> None:
        """Before the motors start: one request per distinct task (a blank observation), so a task
        the server's model cannot take stops the run in one line now, not as holds later."""
        keep = self._task
        eps = np.zeros(self.noise_shape, np.float32)
        try:
            for task in dict.fromkeys(tasks):
                self._task = lambda t=task: t  # type: ignore[misc]
                try:
                    self.denoise(eps, None, ChunkRequest(d=0, s=self.spec.horizon // 2, r=0))
                except ChunkUnavailable as e:
                    raise LegatoError(f"--remote {self.url}: task {task!r}: {e}") from None
                self.chunks -= 1  # a check, not a chunk the arm runs
                self.task_checks += 1
        finally:
            self._task = keep

    def denoise(self, eps: np.ndarray, prev_tail: np.ndarray | None, req: ChunkRequest) -> np.ndarray:
        """The next chunk (h, a) raw joint targets, from the server; raises ChunkUnavailable."""
        h, a = self.spec.horizon, self.spec.action_dim
        t0 = time.perf_counter_ns()
        if self._ws is not None and not self._ws.alive():  # closed while idle: renew, lose nothing
            self.disconnects += 1
            self._drop()
        if self._ws is None:
            self._reconnect()
        cid = self._next_id
        self._next_id += 1
        leg: dict[str, Any] = {
            "chunk_id": cid,
            "d": int(req.d),
            "s": int(req.s),
            "r": int(req.r),
            "noise": np.asarray(eps, np.float32).reshape(self.noise_shape[1:]),
        }
        if prev_tail is not None:
            leg["prev_tail"] = np.asarray(prev_tail, np.float32)
        data = wire.packb({**self._request_obs(), "legato": leg})
        t1 = time.perf_counter_ns()  # the send is the network's: a thread switch there must not split it
        try:
            self._ws.send(data)
        except OSError as e:
            self.disconnects += 1
            raise self._unavailable("link", f"remote {self.url}: connection lost ({_why(e)})", True) from None
        deadline = self.clock() + self.reply_timeout_s
        while True:
            try:
                msg = self._ws.recv(max(0.0, deadline - self.clock()))
            except TimeoutError:
                self.timeouts += 1
                self._timeouts_in_a_row += 1
                drop = self._timeouts_in_a_row >= 2
                self.disconnects += int(drop)
                raise self._unavailable(
                    "timeout", f"remote {self.url}: no reply in {self.reply_timeout_s:.2f} s", drop
                ) from None
            except OSError as e:  # edge.remote.link.LinkClosed included
                self.disconnects += 1
                raise self._unavailable(
                    "link", f"remote {self.url}: connection lost ({_why(e)})", True
                ) from None
            t2 = time.perf_counter_ns()
            if isinstance(msg, str):
                self.server_errors += 1
                self.disconnects += 1
                raise self._unavailable("server", f"remote {self.url}: {' '.join(msg.split())[:300]}", True)
            try:
                rep = wire.unpackb(msg, MAX_REPLY)
                rid, actions, leg_r = _reply_fields(rep, h, a)
            except LegatoError as e:
                self.garbage_replies += 1
                self.disconnects += 1
                raise self._unavailable(
                    "garbage", f"remote {self.url}: not a chunk reply ({e})", True
                ) from None
            if rid is not None and rid < cid:  # the answer to a request we gave up on
                self.stale_replies += 1
                continue
            if rid is not None and rid != cid:
                self.garbage_replies += 1
                self.disconnects += 1
                raise self._unavailable(
                    "garbage", f"remote {self.url}: reply to chunk {rid}, asked {cid}", True
                )
            break
        self._timeouts_in_a_row = 0
        np.copyto(self.chunk, actions)
        t3 = time.perf_counter_ns()
        server_ms = (
            float(leg_r.get("queue_ms", 0.0)) + float(rep["server_timing"].get("infer_ms", 0.0))
            if isinstance(rep.get("server_timing"), dict)
            else 0.0
        )
        server_ns = int(server_ms * 1e6)
        st = self.stage_ns
        st[0] = t1 - t0
        st[1] = max(0, t2 - t1 - server_ns)
        st[2] = min(server_ns, t2 - t1)
        st[3] = t3 - t2
        st[4] = int(float(leg_r.get("engines_ms", 0.0)) * 1e6)
        st[5] = t3 - t0
        self.servers_seen.add(str(leg_r.get("server", "?")))
        stages = leg_r.get("stages_ms")
        self.server_stages = dict(stages) if isinstance(stages, dict) else {}
        self.chunks += 1
        return self.chunk

    def counters(self) -> dict[str, Any]:
        return {
            "remote.chunks": self.chunks,
            "remote.timeouts": self.timeouts,
            "remote.stale_replies": self.stale_replies,
            "remote.garbage_replies": self.garbage_replies,
            "remote.server_errors": self.server_errors,
            "remote.disconnects": self.disconnects,
            "remote.reconnects": self.reconnects,
            "remote.unavailable": self.unavailable,
            "remote.task_checks": self.task_checks,
            "remote.server": self.server_id,
            "remote.servers_seen": sorted(self.servers_seen),
            "remote.url": self.url,
            "remote.errors": list(self.errors),
        }

    def close(self) -> None:
        self._closed.set()
        self._drop()


def _reply_fields(rep: Any, h: int, a: int) -> tuple[int | None, np.ndarray, dict[str, Any]]:
    if not isinstance(rep, dict):
        raise LegatoError(f"a {type(rep).__name__}, not a map")
    act = rep.get("actions")
    if not isinstance(act, np.ndarray) or act.dtype.kind != "f" or act.shape != (h, a):
        got = f"{act.dtype.str} {act.shape}" if isinstance(act, np.ndarray) else type(act).__name__
        raise LegatoError(f"actions must be float ({h}, {a}), got {got}")
    leg = rep.get("legato")
    leg = leg if isinstance(leg, dict) else {}
    rid = leg.get("chunk_id")
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, int)):
        raise LegatoError(f"legato.chunk_id {rid!r} is not an integer")
    return rid, act, leg


def _cameras(meta: dict[str, Any], schema: dict[str, Any], spec: ModelSpec, url: str
             ) -> tuple[CameraSpec, ...]:  # fmt: skip
    """The served policy's cameras in its order (``input``: the request key), from the metadata's
    ``cameras``; a server without that list has one camera, ``observation.image``, named "camera"."""
    listed = meta.get("cameras")
    if listed is None:
        if protocol.IMAGE not in schema:
            raise RemoteMismatch(f"--remote {url}: the server names no cameras and takes no {protocol.IMAGE}")
        return (CameraSpec("camera", protocol.IMAGE, *spec.image_hw),)
    try:
        cams = tuple(
            CameraSpec(str(c["name"]), str(c["key"]), int(c["height"]), int(c["width"])) for c in listed
        )
    except (KeyError, TypeError, ValueError) as e:
        raise RemoteMismatch(f"--remote {url}: the metadata's cameras are not a list of name, key, height, "
                             f"width ({type(e).__name__}: {e})") from None  # fmt: skip
    if not cams:  # a state-only policy still sends its (empty) observation.image
        return (CameraSpec("camera", protocol.IMAGE, *spec.image_hw),)
    return cams


def _identity(meta: dict[str, Any]) -> Any:
    """What must not change across a reconnect: the model and what the server expects and returns."""
    return (
        meta.get("model"),
        meta.get("observation"),
        meta.get("action"),
        meta.get("policy", {}).get("mode"),
    )


def _why(e: BaseException) -> str:
    status = getattr(getattr(e, "response", None), "status_code", None)
    if status is not None:  # an HTTP answer instead of the upgrade (401: the API key)
        body = getattr(e.response, "body", b"") or b""  # type: ignore[attr-defined]
        return f"HTTP {status}: {' '.join(body.decode('utf-8', 'replace').split())[:160]}"
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}"[:200] if text else type(e).__name__


class RemoteModel:
    """What the robot knows of a served model: it stands in for the bundle's Manifest in the
    runtime (``spec``, ``data["model"]``: the arm and task for --sim, ``name``, ``path``)."""

    remote = True  # the runtime reports ``path`` (the server's URL) as it is

    def __init__(
        self, url: str, meta: dict[str, Any], spec: ModelSpec, den: RemoteDenoiser | None = None
    ) -> None:
        self.path, self.spec = url, spec
        self.data: dict[str, Any] = {"model": meta["model"], "name": meta["policy"]["name"], "remote": url}
        self.name = str(meta["policy"]["name"])
        self.den = den
        self.cameras = den.cameras if den is not None else ()

    def instruction(self, tokens: str | None, prompt: str | None) -> np.ndarray:
        """The ids the robot's frames carry for ``--tokens`` / ``--prompt`` (one line where the
        server's policy takes the other); with a prompt they are placeholders: the text goes to
        the server (:meth:`RemoteDenoiser.set_task`, which launch calls)."""
        from edge.launch import parse_tokens

        den = self.den
        assert den is not None  # made by load_remote
        if tokens is not None and prompt is not None:
            raise UsageError("give the instruction as --prompt or as --tokens, not both")
        if prompt is not None:
            if not den.takes_prompt:
                raise UsageError(f"the policy served at {self.path} takes token ids: give --tokens")
            if not prompt.strip():
                raise UsageError("--prompt is empty")
            return np.zeros(self.spec.max_tokens, np.int64)
        if not den.takes_tokens:
            how = ", not as --tokens" if tokens is not None else ""
            raise UsageError(f"the policy served at {self.path} writes each observation's state into its "
                             f"prompt (pi0.5): give the task as --prompt \"...\"{how}")  # fmt: skip
        rng = den.schema[protocol.TOKENS]
        vocab = rng.range[1] + 1 if isinstance(rng, protocol.TensorSpec) and rng.range else None
        return parse_tokens(tokens, self.spec.max_tokens, vocab)


def load_remote(
    url: str,
    profile: str,
    api_key_file: str | None = None,
    mode: str | None = None,
    reply_timeout_s: float = 1.0,
) -> tuple[RemoteModel, Any, RemoteDenoiser]:
    """Connect to `legato serve` at ``url`` and check that its model fits this robot's profile
    (N, H, d_max, as a local bundle must); ``mode`` (when given) must be the one it serves."""
    from edge.assembly import check_fit
    from edge.errors import MethodError
    from edge.profiles import load_profile
    from edge.remote.service import read_api_key

    prof = load_profile(profile)
    den = RemoteDenoiser(url, read_api_key(api_key_file), reply_timeout_s=reply_timeout_s)
    try:
        prof = check_fit(prof, den.spec, f"the model served at {url}")  # its chunk geometry
        if mode is not None and mode != den.mode:
            raise MethodError(
                f"--mode {mode}: the server at {url} samples in mode {den.mode!r} "
                "(the server's --mode chooses)"
            )
    except BaseException:
        den.close()
        raise
    return RemoteModel(url, den.meta, den.spec, den), prof, den

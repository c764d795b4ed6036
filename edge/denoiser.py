"""The chunk denoiser: the one chunk assembly and the one sampler, on buffers allocated once.
No torch.

Everything between an observation and a chunk in the robot's units happens here, for every
backend (the robot's engines, the evaluation's torch model, the export's gates): reference
padding, normalisation (edge.normalize, as the adapter declares it), the omega schedule
(edge.schedule), the mode dispatch, the blends and the Euler steps. What differs per backend is
a velocity field (:class:`Field`): it takes the observation into its prefix inputs, ``encode``
runs the prefix once per chunk, ``velocity(y, t, omega, out=)`` the head N times.

    legato       X = eps; for k: Y = (1 - w) X + w A_ref; X = Y + v(Y, t_k, w) / N;
                 chunk = (1 - w) X + w A_ref               (edge.sampler.legato_sample)
    hard-prefix  the first d tokens overwritten with A_ref and carry t = 1; w = prefix mask
                 (edge.sampler.hard_prefix_sample; training-time RTC bundles)
    naive        plain flow sampling, w = 0 (plain bundles); every first chunk is sampled so

The arithmetic is the reference samplers' own, operation for operation, in float32, so the two
agree exactly for the same velocity (tests hold them equal to the bit). Flow time is always
t = 0 noise here (t_k = k / N); a t1-noise adapter's field converts at the head (t_graph = 1 - t,
v = -v_graph). Shapes: b batch (1 on the robot), h chunk length H, ap the graphs' (padded)
action dim, a the robot's action dim; everything at a graph boundary is normalised.

:class:`EngineField` is the robot's field: the prefix and head engines wired by the adapter's
table of names, each context tensor bound from the prefix output to the head input once
(``Engine.bind``: on TensorRT it stays on the device). ``Y`` is the head's own ``x`` input
buffer and ``v`` its output buffer, so a step copies nothing. An optional fused engine runs the
whole legato / naive sampler in one call.

Timing: ``stage_ns`` holds the last chunk's stage durations (prefix, each flow step, blend), the
sum of the field or engine calls among them ("engines") and the whole chunk, in nanoseconds,
written without allocating; the profiler reads them (the loop overhead is chunk / engines).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal, Protocol

import numpy as np

from edge.adapter import AdapterSpec
from edge.engine import Engine
from edge.errors import BundleError, MethodError, UsageError
from edge.policy import INFERENCE_METHODS, ChunkRequest, check_request
from edge.schedule import omega_schedule

Mode = Literal["legato", "hard-prefix", "naive"]
MODES: dict[str, str] = {"legato": "legato", "hard-prefix": "rtc-train", "naive": "naive"}  # -> method


def mode_for(spec: Any) -> str:
    """The denoiser mode a model was trained for (spec: a ModelSpec or an AdapterSpec)."""
    return {"legato": "legato", "rtc-train": "hard-prefix", "plain": "naive"}[spec.method]


class Field(Protocol):
    """A velocity field the sampler drives, in normalised units and t = 0 noise."""

    batch: int  # b
    observation: dict[str, np.ndarray]  # the prefix inputs by name, batch b; the denoiser writes them

    def buffers(self) -> tuple[np.ndarray | None, ...]:
        """(y, t, omega, v) buffers the field would like the sampler to use (its head's own, so
        a step copies nothing), or None for any it has no preference for."""
        ...

    def encode(self) -> None:
        """Run the prefix once on ``observation``: the context every velocity call reads."""
        ...

    def velocity(self, y: np.ndarray, t: np.ndarray, omega: np.ndarray, out: np.ndarray) -> None:
        """out = v(y, t, omega): y (b, h, ap), t (b, h) per-token time, omega (b, h)."""
        ...


class EngineField:
    """A prefix and a flow-head engine (batch 1) as the sampler's field, wired by the adapter."""

    batch = 1

    def __init__(self, adapter: AdapterSpec, prefix: Engine, head: Engine) -> None:
        hd = adapter.head
        _check_io(prefix, adapter.observation.inputs, adapter.prefix_outputs, "prefix")
        ins = (hd.x, hd.t, *((hd.omega,) if hd.omega else ()), *(k for k, _ in hd.context))
        _check_io(head, ins, (hd.velocity,), "flow head")
        h, ap = adapter.horizon, adapter.action_pad
        for name, eng, have in ((hd.x, head, head.input_specs), (hd.velocity, head, head.output_specs)):
            if have[name].shape != (1, h, ap):
                raise BundleError(f"flow head {eng.name}: {name!r} has shape {have[name].shape}, the adapter "
                                  f"declares (1, H={h}, {ap})")  # fmt: skip
        for hin, pout in hd.context:
            head.bind(hin, prefix, pout)  # once: the context never passes through the host loop
        self.prefix, self.head, self.adapter = prefix, head, adapter
        self.observation = prefix.inputs
        self._x, self._t, self._v = head.inputs[hd.x], head.inputs[hd.t], head.outputs[hd.velocity]
        self._omega = head.inputs[hd.omega] if hd.omega else None
        self._flip = adapter.time_convention == "t1-noise"
        self._per_token = self._t.shape == (1, h)

    def buffers(self) -> tuple[np.ndarray | None, ...]:
        direct = not self._flip
        return (self._x, self._t if direct and self._per_token else None, self._omega,
                self._v if direct else None)  # fmt: skip

    def encode(self) -> None:
        self.prefix.run()

    def velocity(self, y: np.ndarray, t: np.ndarray, omega: np.ndarray, out: np.ndarray) -> None:
        if y is not self._x:
            np.copyto(self._x, y)
        if t is not self._t:
            if self._per_token:
                np.subtract(1.0, t, out=self._t) if self._flip else np.copyto(self._t, t)
            else:  # one time per chunk (no hard prefix: every token has the same t)
                self._t[0] = 1.0 - t[0, 0] if self._flip else t[0, 0]
        if self._omega is not None and omega is not self._omega:
            np.copyto(self._omega, omega)
        self.head.run()
        if self._flip:
            np.negative(self._v, out=out)
        elif out is not self._v:
            np.copyto(out, self._v)


class ChunkDenoiser:
    """One chunk per :meth:`denoise`, into ``self.chunk``: (h, a) raw joint targets for b = 1,
    (b, h, a) otherwise. The loop's worker calls ``set_observation`` then ``denoise``."""

    def __init__(self, adapter: AdapterSpec, field: Field, mode: str | None = None,
                 num_steps: int | None = None, source: str = "the bundle",
                 fused: Engine | None = None) -> None:  # fmt: skip
        spec = adapter.spec
        mode = mode or mode_for(spec)
        if mode not in MODES:
            raise MethodError(f"unknown denoiser mode {mode!r}; choose from {', '.join(MODES)}")
        method = MODES[mode]
        if INFERENCE_METHODS[method] != spec.method:
            raise MethodError(f"mode {mode!r} needs a model trained with {INFERENCE_METHODS[method]!r}; "
                              f"{source} is {spec.method!r} (its mode is {mode_for(spec)!r})")  # fmt: skip
        n = spec.num_steps if num_steps is None else num_steps
        if n != spec.num_steps:
            raise MethodError(
                f"denoiser asked for N={n} steps but {source} was trained with N={spec.num_steps}"
            )
        self.adapter, self.spec, self.norm = adapter, spec, adapter.norm
        self.mode, self.method, self.source, self.field = mode, method, source, field
        b, h, a, ap = field.batch, spec.horizon, spec.action_dim, adapter.action_pad
        self.batch, self.noise_shape = b, (b, h, ap)
        self.fused = fused
        if fused is not None:
            fu = adapter.fused
            if fu is None:
                raise BundleError(f"{source}: the adapter declares no fused graph")
            if b != 1:
                raise MethodError("the fused graph runs batch 1")
            if method == "rtc-train":
                raise MethodError(
                    "the fused graph has no hard prefix: mode 'hard-prefix' runs the prefix "
                    "and flow-head graphs (drop --fused)"
                )
            _check_io(fused, (*adapter.observation.inputs, fu.eps, fu.a_ref, fu.omega), (fu.chunk,), "fused")
        self.num_steps, self.dt = n, 1.0 / n
        f32 = np.float32
        y, t, omega, v = field.buffers()
        self.x = np.zeros((b, h, ap), f32)  # X_k, normalised
        self.y = y if y is not None else np.zeros((b, h, ap), f32)  # Y_k: the head's input
        self.t = t if t is not None else np.zeros((b, h), f32)
        self.v = v if v is not None else np.zeros((b, h, ap), f32)
        if fused is not None:  # the fused graph's own input buffers
            assert adapter.fused is not None
            self.a_ref, self.omega = fused.inputs[adapter.fused.a_ref], fused.inputs[adapter.fused.omega]
            self._eps_in, self._chunk_out = (
                fused.inputs[adapter.fused.eps],
                fused.outputs[adapter.fused.chunk],
            )
        else:
            self.a_ref = np.zeros((b, h, ap), f32)  # normalised reference, zeros on the padded dims
            self.omega = omega if omega is not None else np.zeros((b, h), f32)
        self._w = self.omega[..., None]  # (b, h, 1) views, made once
        self.one_minus_w = np.ones((b, h, 1), f32)
        self.w_ref = np.zeros((b, h, ap), f32)  # w * A_ref
        self.a_ref_raw = np.zeros((b, h, a), f32)  # padded raw reference
        self.q = np.zeros((b, 1, a), f32)  # joint positions the chunk is relative to
        self._chunk = np.zeros((b, h, a), f32)
        self.chunk = self._chunk[0] if b == 1 else self._chunk  # the result, raw joint targets
        nm = self.norm
        self._state = (nm.state_mean.astype(f32), (nm.state_std + f32(nm.state_eps)).astype(f32))
        am = np.broadcast_to(nm.action_mean.astype(f32), (h, a))
        sd = np.broadcast_to(nm.action_std.astype(f32), (h, a))
        div = sd + f32(nm.action_eps) if nm.action_eps else sd  # std + eps on the way in only
        self._action = tuple(np.ascontiguousarray(x, f32) for x in (am, sd, div))  # mean, std, divisor
        # omega for every (d, r) a request may carry, from the one formula and the trained shape
        self._omega_table = np.stack(
            [
                np.stack([omega_schedule(d, r, h, spec.schedule_shape) for r in range(h + 1)])
                for d in range(spec.d_max + 1)
            ]
        )  # (d_max + 1, h + 1, h); fmt: skip
        obs = fused.inputs if fused is not None else field.observation
        lang = adapter.observation.language
        self._cams = {c.name: obs[c.input] for c in adapter.observation.cameras}
        self._tokens = obs[lang.tokens] if lang is not None else None
        self._mask = obs[lang.mask] if lang is not None and lang.mask is not None else None
        self._pad_id = lang.pad_id if lang is not None else 0
        st_in = adapter.observation.state  # None: no state input (pi0.5: the state is in its prompt)
        self._state_in = obs[st_in][:, : spec.state_dim] if st_in is not None else None
        # stages in order, then "engines" (the sum of the engine calls inside them) and "chunk" (all)
        steps = ("fused",) if fused is not None else ("prefix", *(f"step{k}" for k in range(n)))
        self.stage_names = (*steps, "blend", "engines", "chunk")
        self.stage_ns = np.zeros(len(self.stage_names), np.int64)
        self.chunks = 0

    # ---- observation -------------------------------------------------------------------------
    def set_observation(self, image: np.ndarray | Mapping[str, np.ndarray], tokens: np.ndarray | None,
                        state: np.ndarray, mask: np.ndarray | None = None) -> None:  # fmt: skip
        """Copy one observation (a batch for b > 1) into the prefix inputs.

        image: (H, W, 3) uint8 RGB for a one-camera policy, or {camera name: image}; tokens (l,)
        ids (the mask defaults to tokens != pad id) or None for a policy without language;
        state (s,) raw proprio, normalised here in place. Batched: a leading b on each."""
        cams = self._cams
        if isinstance(image, Mapping):
            missing = [c for c in cams if c not in image]
            if missing:
                raise UsageError(f"observation lacks camera {missing[0]!r} (the policy's cameras: "
                                 f"{', '.join(cams)})")  # fmt: skip
            for name, buf in cams.items():
                buf[...] = image[name].reshape(buf.shape)
        elif cams or np.size(image) != 0:  # a state-only policy (no cameras) takes an empty image
            if len(cams) != 1:
                raise UsageError(f"the policy has cameras {', '.join(cams)}: name each image")
            for buf in cams.values():
                buf[...] = image.reshape(buf.shape)
        if self._tokens is not None:
            if tokens is None:
                raise UsageError("the policy takes an instruction: tokens are missing")
            tok = self._tokens
            tok[...] = tokens.reshape(tok.shape)
            if self._mask is not None:
                if mask is None:
                    np.not_equal(tok, self._pad_id, out=self._mask)
                else:
                    self._mask[...] = mask.reshape(self._mask.shape)
        st = self._state_in  # (b, s) view of the (b, state_pad) input: the padding stays 0
        if st is not None:
            np.subtract(state.reshape(st.shape), self._state[0], out=st)
            np.divide(st, self._state[1], out=st)
        if self.norm.relative:
            a = self.spec.action_dim
            self.q[:, 0] = state.reshape(-1, self.spec.state_dim)[:, :a]

    # ---- one chunk ---------------------------------------------------------------------------
    def denoise(self, eps: np.ndarray, prev_tail: np.ndarray | None, req: ChunkRequest) -> np.ndarray:
        """The next chunk from the observation set last. eps: noise of ``noise_shape`` (or
        (h, ap) for b = 1); prev_tail (k, a) raw (b = 1) or (b, k, a) = the executing chunk's
        actions from index s on (None for the first chunk: plain sampling, omega = 0). Returns
        ``self.chunk``, overwritten by the next call."""
        h = self.spec.horizon
        first = prev_tail is None or self.method == "naive"
        if not first:
            check_request(self.method, self.spec, req, num_steps=self.num_steps, source=self.source)
        if eps.size != self.x.size:
            raise MethodError(f"noise has shape {eps.shape}; the policy samples {self.noise_shape}")
        fused = self.fused is not None and req.final_blend
        if self.fused is not None and not req.final_blend:
            raise MethodError("the fused graph always applies the final blend (final_blend=False needs "
                              "the prefix and flow-head graphs)")  # fmt: skip
        t0 = time.perf_counter_ns()
        omega, a_ref, w = self.omega, self.a_ref, self._w
        d = 0
        if first:
            omega.fill(0.0)
            a_ref.fill(0.0)
        else:
            assert prev_tail is not None
            k = prev_tail.shape[-2]
            if not 1 <= k <= h:
                raise MethodError(f"reference tail has {k} actions; need 1..{h}")
            raw, a = self.a_ref_raw, self.spec.action_dim
            tail = prev_tail.reshape(self.batch, k, a)
            raw[:, :k] = tail
            raw[:, k:] = tail[:, -1:]
            ref = a_ref[..., :a]  # the padded dims stay 0
            if self.norm.relative:
                np.subtract(raw, self.q, out=ref)
                ref -= self._action[0]
            else:
                np.subtract(raw, self._action[0], out=ref)
            ref /= self._action[2]
            if self.method == "legato":
                omega[...] = self._omega_table[req.d, req.r]
            else:  # hard prefix: omega is the mask
                omega.fill(0.0)
                omega[:, : req.d] = 1.0
                d = req.d
        if fused:
            return self._fused(eps, t0)
        field, x, y, t, v, dt = self.field, self.x, self.y, self.t, self.v, self.dt
        t1 = time.perf_counter_ns()
        field.encode()
        eng = time.perf_counter_ns() - t1
        t1 = time.perf_counter_ns()
        self.stage_ns[0] = t1 - t0
        np.subtract(1.0, w, out=self.one_minus_w)
        np.multiply(w, a_ref, out=self.w_ref)
        w1, wa = self.one_minus_w, self.w_ref
        x[...] = eps.reshape(x.shape)
        tk = t1
        for k in range(self.num_steps):
            if d:  # hard prefix: the reference on the prefix, at t = 1
                x[:, :d] = a_ref[:, :d]
                y[...] = x
            else:  # Y = (1 - w) X + w A_ref
                np.multiply(x, w1, out=y)
                y += wa
            t.fill(k * dt)
            if d:
                t[:, :d] = 1.0
            te = time.perf_counter_ns()
            field.velocity(y, t, omega, v)
            eng += time.perf_counter_ns() - te
            np.multiply(v, dt, out=x)  # X = Y + dt v
            x += y
            now = time.perf_counter_ns()
            self.stage_ns[1 + k] = now - tk
            tk = now
        if d:
            x[:, :d] = a_ref[:, :d]
        elif req.final_blend or first:
            np.multiply(x, w1, out=x)
            x += wa
        self._unnormalise(x)
        t2 = time.perf_counter_ns()
        self.stage_ns[-3] = t2 - tk
        self.stage_ns[-2] = eng
        self.stage_ns[-1] = t2 - t0
        self.chunks += 1
        return self.chunk

    def _unnormalise(self, x: np.ndarray) -> None:
        out, a = self._chunk, self.spec.action_dim
        np.multiply(x[..., :a], self._action[1], out=out)
        out += self._action[0]
        if self.norm.relative:
            out += self.q

    def _fused(self, eps: np.ndarray, t0: int) -> np.ndarray:
        """One call of the fused graph (prefix, N steps, blends: legato_sample with the final blend)."""
        fu = self.fused
        assert fu is not None
        self._eps_in[...] = eps.reshape(self._eps_in.shape)
        t1 = time.perf_counter_ns()
        fu.run()
        t2 = time.perf_counter_ns()
        self._unnormalise(self._chunk_out)
        t3 = time.perf_counter_ns()
        st = self.stage_ns  # fused (reference prep + the call), blend (un-normalise), engines, chunk
        st[0], st[1], st[2], st[3] = t2 - t0, t3 - t2, t2 - t1, t3 - t0
        self.chunks += 1
        return self.chunk


def denoiser_for(adapter: AdapterSpec, engines: Mapping[str, Engine], mode: str | None = None,
                 source: str = "the bundle") -> ChunkDenoiser:  # fmt: skip
    """The robot's denoiser over a bundle's engines ({"prefix", "flow_head"[, "fused"]}), wired by
    the manifest's adapter section: what `legato run`, the export's gates and BundlePolicy run."""
    field = EngineField(adapter, engines["prefix"], engines["flow_head"])
    return ChunkDenoiser(adapter, field, mode=mode, source=source, fused=engines.get("fused"))


def _check_io(eng: Engine, ins: tuple[str, ...], outs: tuple[str, ...], what: str) -> None:
    missing = [n for n in ins if n not in eng.input_specs] + [n for n in outs if n not in eng.output_specs]
    if missing:
        raise BundleError(f"{what} graph {eng.name} lacks {', '.join(missing)} (the adapter declares inputs "
                          f"{', '.join(ins)}; outputs {', '.join(outs)})")  # fmt: skip

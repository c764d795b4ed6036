"""The chunk denoiser: the prefix graph once, then N flow-head steps with the sampler's blend,
on buffers allocated once. No torch.

It is the buffered twin of edge.sampler's reference samplers (tests hold the two equal):

    legato       X = eps; for k: Y = (1 - w) X + w A_ref; X = Y + v(Y, t_k, w) / N;
                 chunk = (1 - w) X + w A_ref                   (legato_sample, final blend on)
    hard-prefix  the first d tokens overwritten with A_ref and carry t = 1; w = prefix mask
                 (hard_prefix_sample; for training-time RTC bundles)
    naive        plain flow sampling, w = 0 (plain bundles); every first chunk is sampled so

Graph I/O as in docs/bundle.md: prefix (image, tokens, state) -> (kv, mod, cond); flow head
(y, t, omega, kv, mod, cond) -> v. Everything at the graph boundary is normalised (b = 1):
the state on the way in, the reference chunk (A_ref) and the chunk on the way out, with the
bundle's statistics (edge.normalize). ``Y`` is written straight into the head's ``y`` input
buffer and ``v`` read from its output buffer, so a step copies nothing.

Blend algebra: Y = A_ref + (1 - w) (X - A_ref), the same value as (1 - w) X + w A_ref up to
float32 rounding (checked against the reference to 1e-5), computed in place.

Timing: ``stage_ns`` holds the last chunk's stage durations (prefix, each flow step, blend), the
sum of the engine calls among them ("engines") and the whole chunk, in nanoseconds, written
without allocating; the profiler reads them (the loop overhead is chunk / engines).
"""

from __future__ import annotations

import time
from typing import Literal

import numpy as np

from edge.engine import Engine
from edge.errors import BundleError, MethodError
from edge.normalize import Normalizer
from edge.policy import INFERENCE_METHODS, ChunkRequest, ModelSpec, check_request

Mode = Literal["legato", "hard-prefix", "naive"]
MODES: dict[str, str] = {"legato": "legato", "hard-prefix": "rtc-train", "naive": "naive"}  # -> method
PREFIX_IN = ("image", "tokens", "state")
PREFIX_OUT = ("kv", "mod", "cond")
HEAD_IN = ("y", "t", "omega", "kv", "mod", "cond")
HEAD_OUT = ("v",)
FUSED_IN = ("image", "tokens", "state", "eps", "a_ref", "omega")
FUSED_OUT = ("chunk",)


def mode_for(spec: ModelSpec) -> str:
    """The denoiser mode a model was trained for."""
    return {"legato": "legato", "rtc-train": "hard-prefix", "plain": "naive"}[spec.method]


class ChunkDenoiser:
    """One chunk per :meth:`denoise`, into ``self.chunk`` (h, a) raw joint targets."""

    def __init__(self, spec: ModelSpec, norm: Normalizer, prefix: Engine, head: Engine,
                 mode: str = "legato", num_steps: int | None = None,
                 source: str = "the bundle", fused: Engine | None = None) -> None:  # fmt: skip
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
        _check_io(prefix, PREFIX_IN, PREFIX_OUT, "prefix")
        _check_io(head, HEAD_IN, HEAD_OUT, "flow head")
        h, a = spec.horizon, spec.action_dim
        if head.input_specs["y"].shape != (1, h, a) or head.output_specs["v"].shape != (1, h, a):
            raise BundleError(f"flow head y/v shapes {head.input_specs['y'].shape} / "
                              f"{head.output_specs['v'].shape} differ from (1, H={h}, a={a})")  # fmt: skip
        self.spec, self.norm, self.mode, self.method, self.source = spec, norm, mode, method, source
        self.prefix, self.head, self.fused = prefix, head, fused
        if fused is not None:
            _check_io(fused, FUSED_IN, FUSED_OUT, "fused")
            if method == "rtc-train":
                raise MethodError(
                    "the fused graph has no hard prefix: mode 'hard-prefix' runs the prefix "
                    "and flow-head graphs (drop --fused)"
                )
        self.num_steps, self.dt = n, 1.0 / n
        f32 = np.float32
        self.x = np.zeros((1, h, a), f32)  # X_k, normalised
        # normalised reference (the fused graph's own input buffer when it runs)
        self.a_ref = fused.inputs["a_ref"] if fused is not None else np.zeros((1, h, a), f32)
        self.a_ref_raw = np.zeros((h, a), f32)  # padded raw reference
        self.one_minus_w = np.ones((1, h, 1), f32)
        self.q = np.zeros(a, f32)  # joint positions the chunk is relative to
        self.chunk = np.zeros((h, a), f32)  # the result, raw joint targets
        self._stats = (norm.state_mean.astype(f32), norm.state_std.astype(f32),
                       norm.action_mean.astype(f32)[None], norm.action_std.astype(f32)[None])  # fmt: skip
        # stages in order, then "engines" (the sum of the engine calls inside them) and "chunk" (all)
        steps = ("fused",) if fused is not None else ("prefix", *(f"step{k}" for k in range(n)))
        self.stage_names = (*steps, "blend", "engines", "chunk")
        self.stage_ns = np.zeros(len(self.stage_names), np.int64)
        self.chunks = 0

    # ---- observation -------------------------------------------------------------------------
    def set_observation(self, image: np.ndarray, tokens: np.ndarray, state: np.ndarray) -> None:
        """Copy one observation into the prefix inputs: image (H, W, 3) uint8, tokens (l,) int,
        state (s,) raw proprio (normalised here, in place)."""
        p = (self.fused or self.prefix).inputs
        p["image"][0] = image
        p["tokens"][0] = tokens
        st = p["state"][0]
        np.subtract(state, self._stats[0], out=st)
        np.divide(st, self._stats[1], out=st)
        a = self.spec.action_dim
        self.q[...] = state[:a]

    # ---- one chunk ---------------------------------------------------------------------------
    def denoise(self, eps: np.ndarray, prev_tail: np.ndarray | None, req: ChunkRequest) -> np.ndarray:
        """The next chunk from the observation set last. eps (1, h, a) noise (or (h, a));
        prev_tail (k, a) raw = the executing chunk's actions from index s on (None for the first
        chunk: plain sampling, omega = 0). Returns ``self.chunk`` (h, a), overwritten next call."""
        h = self.spec.horizon
        first = prev_tail is None or self.method == "naive"
        if not first:
            check_request(self.method, self.spec, req, num_steps=self.num_steps, source=self.source)
        t0 = time.perf_counter_ns()
        hi = self.head.inputs
        omega = (self.fused.inputs if self.fused is not None else hi)["omega"]
        w1, a_ref = self.one_minus_w, self.a_ref
        if first:
            omega.fill(0.0)
            a_ref.fill(0.0)
        else:
            assert prev_tail is not None
            k = prev_tail.shape[0]
            if not 1 <= k <= h:
                raise MethodError(f"reference tail has {k} actions; need 1..{h}")
            raw = self.a_ref_raw
            raw[:k] = prev_tail
            raw[k:] = prev_tail[-1]
            np.subtract(raw, self.q, out=a_ref[0])
            a_ref -= self._stats[2]
            a_ref /= self._stats[3]
            if self.method == "legato":
                _omega_into(omega[0], req.d, req.r)
            else:  # hard prefix: omega is the mask
                omega.fill(0.0)
                omega[:, : req.d] = 1.0
        if self.fused is not None:
            return self._fused(eps, t0)
        t1 = time.perf_counter_ns()
        self.prefix.run()
        for name in PREFIX_OUT:
            np.copyto(hi[name], self.prefix.outputs[name])
        eng = time.perf_counter_ns() - t1
        t1 = time.perf_counter_ns()
        self.stage_ns[0] = t1 - t0
        np.subtract(1.0, omega[..., None], out=w1)
        hard = not first and self.method == "rtc-train"
        d = req.d if hard else 0
        x, y, t, v, dt = self.x, hi["y"], hi["t"], self.head.outputs["v"], self.dt
        x[...] = eps.reshape(x.shape)
        tk = t1
        for k in range(self.num_steps):
            if hard:
                x[:, :d] = a_ref[:, :d]
                y[...] = x
            else:  # Y = A_ref + (1 - w) (X - A_ref)
                np.subtract(x, a_ref, out=y)
                y *= w1
                y += a_ref
            t.fill(k * dt)
            if hard:
                t[:, :d] = 1.0
            te = time.perf_counter_ns()
            self.head.run()
            eng += time.perf_counter_ns() - te
            np.multiply(v, dt, out=x)
            x += y
            now = time.perf_counter_ns()
            self.stage_ns[1 + k] = now - tk
            tk = now
        if hard:
            x[:, :d] = a_ref[:, :d]
        else:  # the final blend
            x -= a_ref
            x *= w1
            x += a_ref
        out = self.chunk
        np.multiply(x[0], self._stats[3][0], out=out)
        out += self._stats[2][0]
        out += self.q
        t2 = time.perf_counter_ns()
        self.stage_ns[-3] = t2 - tk
        self.stage_ns[-2] = eng
        self.stage_ns[-1] = t2 - t0
        self.chunks += 1
        return out

    def _fused(self, eps: np.ndarray, t0: int) -> np.ndarray:
        """One call of the fused graph (prefix, N steps, blends: legato_sample with the final blend)."""
        fu = self.fused
        assert fu is not None
        fu.inputs["eps"][...] = eps.reshape(fu.inputs["eps"].shape)
        t1 = time.perf_counter_ns()
        fu.run()
        t2 = time.perf_counter_ns()
        out = self.chunk
        np.multiply(fu.outputs["chunk"][0], self._stats[3][0], out=out)
        out += self._stats[2][0]
        out += self.q
        t3 = time.perf_counter_ns()
        st = self.stage_ns  # fused (reference prep + the call), blend (un-normalise), engines, chunk
        st[0], st[1], st[2], st[3] = t2 - t0, t3 - t2, t2 - t1, t3 - t0
        self.chunks += 1
        return out


def _omega_into(out: np.ndarray, d: int, r: int) -> None:
    """edge.schedule.omega_schedule (linear) written into ``out`` (h,) without allocating."""
    h = out.shape[0]
    out.fill(0.0)
    out[: min(d, h)] = 1.0
    for i in range(d, min(d + r, h)):
        out[i] = (d + r - i) / (r + 1.0)


def _check_io(eng: Engine, ins: tuple[str, ...], outs: tuple[str, ...], what: str) -> None:
    missing = [n for n in ins if n not in eng.input_specs] + [n for n in outs if n not in eng.output_specs]
    if missing:
        raise BundleError(f"{what} graph {eng.name} lacks {', '.join(missing)} (docs/bundle.md: inputs "
                          f"{', '.join(ins)}; outputs {', '.join(outs)})")  # fmt: skip

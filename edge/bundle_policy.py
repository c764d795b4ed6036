"""A bundle behind the edge policy contract: the exported graphs on onnxruntime. No torch.

``BundlePolicy(bundle)`` is a :class:`edge.policy.ChunkPolicy`: ``encode`` runs prefix.onnx
once per observation, ``velocity`` binds flow_head.onnx for the numpy sampler of
edge/sampler.py (blend and Euler in float32 on the host). With ``fused=True`` Legato and plain
sampling run fused.onnx in one call instead. The graphs are batch 1 (static shapes, as on the
device), so a batch of b observations loops b times. legato.rollout runs it in closed loop
exactly like a checkpoint: that is the closed-loop parity gate of `legato export`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.bundle import Manifest, verify
from edge.engine import EngineOptions, OrtEngine
from edge.policy import ChunkPolicy, ChunkRequest, Observation, check_request
from edge.sampler import VelocityFn, pad_reference
from edge.schedule import omega_schedule


def _engine(path: Path, threads: int) -> OrtEngine:
    return OrtEngine(path, EngineOptions(intra_op_threads=threads, inter_op_threads=1), name=path.name)


@dataclass(frozen=True)
class BundlePrefix:
    """Per observation: the prefix graph's outputs (each with a leading batch of 1)."""

    items: tuple[dict[str, np.ndarray], ...]


class BundlePolicy(ChunkPolicy):
    def __init__(self, bundle: str | Path | Manifest, threads: int = 1, fused: bool = False) -> None:
        m = bundle if isinstance(bundle, Manifest) else verify(bundle)
        super().__init__(m.spec, m.norm, source=str(m.path))
        self.manifest = m
        self.fused = fused
        self.prefix_engine = _engine(m.graph_path("prefix"), threads)
        self.head_engine = _engine(m.graph_path("flow_head"), threads)
        self.fused_engine = _engine(m.graph_path("fused"), threads) if fused else None
        self._loaded: tuple[int, int] | None = None  # (id of the prefix item, index) in the head's buffers

    def encode(self, obs: Observation) -> BundlePrefix:
        state = self.norm.state(obs.state)
        eng = self.prefix_engine
        items = []
        for i in range(state.shape[0]):
            eng.inputs["image"][...] = obs.image[i]
            eng.inputs["tokens"][...] = obs.tokens[i]
            eng.inputs["state"][...] = state[i]
            eng.run()
            items.append({k: v.copy() for k, v in eng.outputs.items()})
        self._loaded = None
        return BundlePrefix(tuple(items))

    def velocity(self, prefix: BundlePrefix) -> VelocityFn:
        eng = self.head_engine
        ins, v = eng.inputs, eng.outputs["v"]

        def f(y: np.ndarray, t: np.ndarray, omega: np.ndarray) -> np.ndarray:
            out = np.empty(y.shape, np.float32)
            for i, p in enumerate(prefix.items):
                if self._loaded != (id(p), i):  # batch 1: the prefix is copied in once per chunk
                    for k in ("kv", "mod", "cond"):
                        ins[k][...] = p[k]
                    self._loaded = (id(p), i)
                ins["y"][0], ins["t"][0], ins["omega"][0] = y[i], t[i], omega[i]
                eng.run()
                out[i] = v[0]
            return out

        return f

    def chunk(
        self, method: str, obs: Observation, prev: np.ndarray | None, req: ChunkRequest, eps: np.ndarray
    ) -> np.ndarray:
        eng = self.fused_engine
        if eng is None or method not in ("legato", "naive", "sync") or not req.final_blend:
            return super().chunk(method, obs, prev, req, eps)
        spec = self.spec
        check_request(method, spec, req, source=self.source)
        b, h = eps.shape[:2]
        if prev is None or method in ("naive", "sync"):
            a_ref, omega = np.zeros_like(eps), np.zeros((b, h), np.float32)
        else:
            a_ref = self.norm.action(pad_reference(prev[:, req.s :], h), obs.state)
            omega = np.broadcast_to(omega_schedule(req.d, req.r, h, spec.schedule_shape), (b, h))
        state = self.norm.state(obs.state)
        x = np.empty(eps.shape, np.float32)
        ins = eng.inputs
        for i in range(b):
            ins["image"][0], ins["tokens"][0], ins["state"][0] = obs.image[i], obs.tokens[i], state[i]
            ins["eps"][0], ins["a_ref"][0], ins["omega"][0] = eps[i], a_ref[i], omega[i]
            eng.run()
            x[i] = eng.outputs["chunk"][0]
        return self.norm.unaction(x, obs.state)

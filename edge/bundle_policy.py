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
from edge.errors import BundleError
from edge.policy import ChunkPolicy, ChunkRequest, Observation, check_request
from edge.sampler import VelocityFn, pad_reference
from edge.schedule import omega_schedule


def _session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own exception types
        raise BundleError(
            f"{path}: does not load in onnxruntime ({' '.join(str(e).split())[:200]})"
        ) from None


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
        self.prefix_sess = _session(m.graph_path("prefix"), threads)
        self.head_sess = _session(m.graph_path("flow_head"), threads)
        self.fused_sess = _session(m.graph_path("fused"), threads) if fused else None

    def encode(self, obs: Observation) -> BundlePrefix:
        state = self.norm.state(obs.state)
        items = []
        for i in range(state.shape[0]):
            kv, mod, cond = self.prefix_sess.run(
                ["kv", "mod", "cond"],
                {
                    "image": obs.image[i : i + 1],
                    "tokens": obs.tokens[i : i + 1].astype(np.int64),
                    "state": state[i : i + 1],
                },
            )
            items.append({"kv": kv, "mod": mod, "cond": cond})
        return BundlePrefix(tuple(items))

    def velocity(self, prefix: BundlePrefix) -> VelocityFn:
        sess = self.head_sess

        def f(y: np.ndarray, t: np.ndarray, omega: np.ndarray) -> np.ndarray:
            out = np.empty(y.shape, np.float32)
            for i, p in enumerate(prefix.items):
                feeds = {
                    "y": y[i : i + 1].astype(np.float32, copy=False),
                    "t": t[i : i + 1].astype(np.float32),
                    "omega": omega[i : i + 1].astype(np.float32),
                    **p,
                }
                out[i] = sess.run(["v"], feeds)[0][0]
            return out

        return f

    def chunk(
        self, method: str, obs: Observation, prev: np.ndarray | None, req: ChunkRequest, eps: np.ndarray
    ) -> np.ndarray:
        if self.fused_sess is None or method not in ("legato", "naive", "sync"):
            return super().chunk(method, obs, prev, req, eps)
        spec = self.spec
        check_request(method, spec, req, source=self.source)
        b, h = eps.shape[:2]
        if prev is None or method in ("naive", "sync"):
            a_ref, omega = np.zeros_like(eps), np.zeros((b, h), np.float32)
        else:
            a_ref = self.norm.action(pad_reference(prev[:, req.s :], h), obs.state)
            omega = np.broadcast_to(omega_schedule(req.d, req.r, h, spec.schedule_shape), (b, h))
            omega = omega.astype(np.float32)
        state = self.norm.state(obs.state)
        x = np.empty(eps.shape, np.float32)
        for i in range(b):
            x[i] = self.fused_sess.run(
                ["chunk"],
                {
                    "image": obs.image[i : i + 1],
                    "tokens": obs.tokens[i : i + 1].astype(np.int64),
                    "state": state[i : i + 1],
                    "eps": eps[i : i + 1].astype(np.float32),
                    "a_ref": a_ref[i : i + 1].astype(np.float32),
                    "omega": omega[i : i + 1],
                },
            )[0][0]
        return self.norm.unaction(x, obs.state)

"""A bundle behind the evaluation's policy interface, on the robot's own denoiser. No torch.

``BundlePolicy(bundle)`` is an :class:`edge.policy.ChunkPolicy` whose chunks come from
``edge.denoiser.denoiser_for``: the same ChunkDenoiser over the same engines, wired by the same
manifest, that `legato run` builds, here on onnxruntime's CPU provider (edge.engine.OrtEngine).
The graphs are batch 1 (static shapes, as on the device), so a batch of b observations runs one
observation at a time. With ``fused=True`` Legato and plain sampling run the fused graph, as
`legato run --fused` does. legato.rollout runs it in closed loop exactly like a checkpoint: the
closed-loop gate of `legato export` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.bundle import Manifest, verify
from edge.denoiser import ChunkDenoiser, denoiser_for
from edge.engine import EngineOptions, OrtEngine
from edge.policy import ChunkPolicy


def _engine(path: Path, threads: int) -> OrtEngine:
    return OrtEngine(path, EngineOptions(intra_op_threads=threads, inter_op_threads=1), name=path.stem)


class BundlePolicy(ChunkPolicy):
    def __init__(self, bundle: str | Path | Manifest, threads: int = 1, fused: bool = False) -> None:
        m = bundle if isinstance(bundle, Manifest) else verify(bundle)
        super().__init__(m.adapter, source=str(m.path))
        self.manifest = m
        graphs = ("prefix", "flow_head", "fused") if fused else ("prefix", "flow_head")
        self.engines = {g: _engine(m.graph_path(g), threads) for g in graphs}

    def fused_engine(self) -> Any:
        return self.engines.get("fused")

    def denoiser(self, mode: str, batch: int, fused: bool = False) -> ChunkDenoiser:
        key = (mode, 1, fused)
        den = self._denoisers.get(key)
        if den is None:
            engines = dict(self.engines) if fused else {g: self.engines[g] for g in ("prefix", "flow_head")}
            den = denoiser_for(self.adapter, engines, mode=mode, source=self.source)
            self._denoisers[key] = den
        return den

    def close(self) -> None:
        for e in self.engines.values():
            e.close()

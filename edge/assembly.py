"""Assembly of the robot program's policy side: bundle + profile -> engines -> denoiser.

``load`` verifies the bundle, loads the profile, takes the chunk geometry (H, N) from the bundle and
checks the profile's s, d_max and ramp against it (edge.profiles.chunk_geometry), opens one
engine per graph on the profile's backend and builds the denoiser. Which graph runs: ``fused``
True (the bundle's fused graph: prefix, N steps and the blends in one call), False (the prefix
graph and N flow-head calls: per-step timings), or None: the profile's ``[control] graph``,
falling back to the stepwise graphs where the bundle has no fused graph or the mode cannot use
one (hard-prefix). No torch.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from edge.denoiser import ChunkDenoiser, denoiser_for, mode_for
from edge.engine import EngineOptions, open_engine
from edge.errors import BundleError


def load(bundle: str, profile: str, mode: str | None = None,
         fused: bool | None = None) -> tuple[Any, Any, ChunkDenoiser]:  # fmt: skip
    """Verify the bundle, load the profile, check they agree, open the engines, build the denoiser."""
    from edge.bundle import verify
    from edge.profiles import load_profile

    man = verify(bundle)
    prof = load_profile(profile)
    spec = man.spec
    src = f"bundle {bundle}"
    prof = check_fit(prof, spec, src)  # the chunk geometry is the bundle's
    c = prof.control
    mode = mode or mode_for(spec)
    if fused is None:  # the profile's choice, where the bundle and the mode allow it
        fused = c.graph == "fused" and "fused" in man.graphs and mode != "hard-prefix"
    engines = {}
    graphs = ("prefix", "flow_head", "fused") if fused else ("prefix", "flow_head")
    if fused and "fused" not in man.graphs:
        raise BundleError(f"{src} has no fused graph (--graph fused needs one; legato export writes it)")
    for g in graphs:
        st = prof.engine(g)
        opts = EngineOptions(backend=st.backend, providers=tuple(st.providers),
                             intra_op_threads=st.intra_op_threads, inter_op_threads=st.inter_op_threads,
                             cuda_graph=st.cuda_graphs)  # fmt: skip
        if st.backend == "tensorrt":
            info = man.engines.get(g)
            if not info:
                raise BundleError(f"{src}: profile {prof.name} runs {g} on TensorRT but the bundle has no "
                                  "engine for it (build it on the device: legato flash)")  # fmt: skip
            engines[g] = open_engine(Path(man.path) / info["file"], opts, name=g, key=info.get("key"),
                                     dla_core=(info.get("flags") or {}).get("dla_core"))  # fmt: skip
        else:
            engines[g] = open_engine(man.graph_path(g), opts, name=g)
    den = denoiser_for(man.adapter, engines, mode=mode, source=src)
    return man, prof, den


def check_fit(prof: Any, spec: Any, src: str) -> Any:
    """The profile with the chunk geometry of a model (a bundle's or a policy server's): H and N the
    model's, the profile's s, d_max and ramp checked against them (edge.profiles.chunk_geometry);
    one line where they conflict."""
    from edge.profiles import chunk_geometry

    c = chunk_geometry(
        prof.control, spec.horizon, spec.num_steps, spec.d_max, f"profile {prof.name}", model=src
    )
    return replace(prof, control=c)

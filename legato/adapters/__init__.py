"""Policy adapters, the workstation side: one per architecture (torch).

An adapter turns a checkpoint folder into what the export and the gates need, and declares the
rest as data (the manifest's ``adapter`` section, read on the robot by edge.adapter.AdapterSpec:
graph names, time convention, dims and padding, observation schema, normalisation,
capabilities). The robot side never imports this package. docs/adapters.md says how to add one.

- :func:`load` (``legato export --checkpoint DIR``): the first registered adapter whose
  ``detect(DIR)`` claims the folder loads it, else the reference adapter (whose errors name what
  is wrong with the folder).
- :class:`LoadedPolicy`: a checkpoint loaded through its adapter: the adapter section, the graphs
  to export, the torch reference policy of the parity gate, held-out observations for the gates
  and the int8 calibration, and the closed loop where a simulator fits the policy.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Registered adapters: modules with NAME, detect(path) -> bool and load(path, threads) -> LoadedPolicy,
# tried in order; the last (the reference) is the fallback. Add an architecture before it.
ADAPTERS: tuple[str, ...] = (
    "legato.adapters.smolvla_adapter",
    "legato.adapters.pi05_adapter",
    "legato.adapters.reference",
)


@dataclass(frozen=True)
class ExportGraph:
    """One graph to export: a torch module, example inputs in the order of its forward, and the
    tensor names (the adapter section's names)."""

    module: Any  # torch.nn.Module
    args: tuple[Any, ...]  # example inputs (torch tensors), batch 1
    inputs: tuple[str, ...]  # ONNX input names, in the forward's argument order
    outputs: tuple[str, ...]  # ONNX output names, in the forward's return order
    opset: int = 17
    dynamo: bool = False  # torch's dynamo exporter instead of TorchScript
    custom_opsets: dict[str, int] | None = None  # e.g. {"com.microsoft": 1} for onnxruntime's ops


@dataclass(frozen=True)
class Sample:
    """A held-out observation (batch 1, an edge.policy.Observation) and the chunk being executed
    when it was taken ((1, h, a) raw; None for an episode's first chunk)."""

    obs: Any
    prev: Any


@dataclass(frozen=True)
class Obs:
    """One observation as arrays with a leading batch of 1 (edge.policy.Observation's fields;
    image may be {camera: image} for several cameras)."""

    image: Any
    tokens: Any
    state: Any


class LoadedPolicy:
    """A checkpoint loaded through its adapter. Subclasses fill the attributes and implement the
    methods; everything the export pipeline does with a policy goes through this interface."""

    name: str  # the adapter's NAME
    path: Path  # the checkpoint folder
    native: Any  # the adapter's own loaded object (legato.checkpoint.Checkpoint, a LeRobot policy, ...)
    section: dict[str, Any]  # the manifest's adapter section (edge.adapter.AdapterSpec.from_dict)
    model_config: dict[str, Any]  # recorded as the manifest's "model" (provenance, the simulator task)
    weights_sha256: str  # of the weights file, recorded as the manifest's source
    train_seed: int | None  # episode seed of the training data (held-out seeds avoid it)
    # onnxruntime's dynamic int8 also on the MatMuls of two activations (attention): a VLM's prefix
    # attends over ~1,000 image tokens (docs/performance.md, bench/bench_smolvla.py)
    int8_activation_matmuls: bool = False

    @property
    def spec(self) -> Any:
        """The adapter section as the robot reads it (edge.adapter.AdapterSpec)."""
        from edge.adapter import AdapterSpec

        return AdapterSpec.from_dict(self.section, f"adapter {self.name}")

    def graphs(self, fused_attention: bool = False) -> dict[str, ExportGraph]:
        """{"prefix", "flow_head"[, "fused"]} -> the graph to export (fp32, batch 1)."""
        raise NotImplementedError

    def reference_policy(self, threads: int = 1) -> Any:
        """The torch policy the fp32 parity gate compares the bundle with (an edge.policy.ChunkPolicy:
        its chunks go through edge.denoiser.ChunkDenoiser over a torch field)."""
        raise NotImplementedError

    def samples(self, count: int, seed: int | None = None) -> list[Any]:
        """``count`` held-out observations, each with the chunk being executed when it was taken
        (export.parity.Sample), for the parity gates and the int8 calibration."""
        raise NotImplementedError

    def closed_loop(self, policy: Any, episodes: int, seed: int | None = None) -> float | None:
        """Success rate of ``policy`` on held-out episodes of a simulator that fits the policy;
        None where none does (the closed-loop gate is then skipped and the manifest says so)."""
        return None

    def bundle_files(self) -> dict[str, bytes]:
        """Extra files the bundle carries (e.g. the tokenizer.json the adapter section names)."""
        return {}

    def observation_arrays(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """`--calibration obs.npz` arrays: name -> (dtype, per-sample shape)."""
        raise NotImplementedError


def _module(name: str) -> Any:
    return importlib.import_module(name)


def load(path: str | Path, threads: int = 1) -> LoadedPolicy:
    """Load a checkpoint folder through the adapter that claims it."""
    p = Path(path)
    mods = [_module(m) for m in ADAPTERS]
    for m in mods:
        if m.detect(p):
            return m.load(p, threads=threads)
    return mods[-1].load(p, threads=threads)


def names() -> tuple[str, ...]:
    return tuple(_module(m).NAME for m in ADAPTERS)

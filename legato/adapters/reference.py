"""The reference adapter: the project's own flow VLA (legato.model), the first adapter.

Its one table of graph I/O names is :func:`section` (the manifest's adapter section): one
camera ``top`` (the simulator's top-down RGB, uint8 (1, H, W, 3)) into ``image``, instruction
token ids into ``tokens`` (sim.language's fixed vocabulary, 0 = pad, no mask input), the
normalised proprio into ``state``; the prefix outputs ``kv``, ``mod`` and ``cond``, each feeding
the flow-head input of the same name; the head's ``y``, ``t`` (per token, t = 0 noise), ``omega``
and ``v``; the fused graph's ``eps``, ``a_ref``, ``omega`` and ``chunk``. Normalisation is
state-relative per index (edge.normalize). :func:`graph_names` orders the names as the graph
modules (legato.adapters.reference_graphs) take and return them, for the exporter.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np

from legato.adapters import ExportGraph, LoadedPolicy

NAME = "legato"


def detect(path: Path) -> bool:
    """A checkpoint written by `legato train` / `legato checkpoint publish` (config.json with the
    policy and training sections)."""
    try:
        cfg = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and "policy" in cfg and "train" in cfg


TOKENIZER = "tokenizer.json"


def tokenizer_json() -> bytes | None:
    """sim.language's fixed vocabulary as a `tokenizers` WordLevel tokenizer (lower-cased,
    whitespace-split, unknown words -> <unk>): the same ids as sim.language.tokenize, so a robot
    tokenizes `--prompt` with the file the bundle carries. None without the tokenizers library."""
    try:
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    except ImportError:
        return None
    from sim.language import VOCAB

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok.to_str().encode()


def section(ck: Any) -> dict[str, Any]:
    """The manifest's adapter section for a loaded checkpoint (legato.checkpoint.Checkpoint)."""
    p, t = ck.policy_cfg, ck.train_cfg
    hi, wi = p.image_hw
    return {
        "name": NAME,
        "method": t.method,
        "time_convention": "t0-noise",
        "horizon": p.horizon,
        "num_steps": p.num_steps,
        "action_dim": p.action_dim,
        "action_pad": p.action_dim,
        "state_dim": p.state_dim,
        "state_pad": p.state_dim,
        "control_hz": float(ck.task.arm.control_hz),
        "schedule": {"shape": t.schedule_shape, "d_max": t.d_max, "r_max": t.r_max},
        # the head reads omega and per-token time whatever the training method (the method decides
        # which mode the weights support)
        "capabilities": {"omega": True, "hard_prefix": True, "fused": True},
        "observation": {
            # a state-only task (image_hw (0, 0), e.g. MetaWorld's push-wall) has no camera
            "cameras": [{"name": "top", "input": "image", "height": hi, "width": wi}] if hi else [],
            "state": "state",
            "language": {
                "tokens": "tokens",
                "mask": None,
                "max_tokens": p.max_tokens,
                "vocab_size": p.vocab_size,
                "pad_id": 0,
                "tokenizer": TOKENIZER if importlib.util.find_spec("tokenizers") else None,
                "append": "",
            },
        },  # fmt: skip
        "normalization": ck.norm.to_dict(),
        "graphs": {
            "prefix": {"outputs": ["kv", "mod", "cond"]},
            "flow_head": {
                "x": "y",
                "t": "t",
                "omega": "omega",
                "velocity": "v",
                "context": {"kv": "kv", "mod": "mod", "cond": "cond"},
            },
            "fused": {"eps": "eps", "a_ref": "a_ref", "omega": "omega", "chunk": "chunk"},
        },  # fmt: skip
    }


def graph_names(sec: dict[str, Any]) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """{graph: (input names, output names)} in the order the graph modules take and return them."""
    obs = sec["observation"]
    ins = (*(c["input"] for c in obs["cameras"]), obs["language"]["tokens"], obs["state"])
    g = sec["graphs"]
    hd, fu = g["flow_head"], g["fused"]
    head_in = (hd["x"], hd["t"], hd["omega"], *hd["context"])
    return {
        "prefix": (ins, tuple(g["prefix"]["outputs"])),
        "flow_head": (head_in, (hd["velocity"],)),
        "fused": ((*ins, fu["eps"], fu["a_ref"], fu["omega"]), (fu["chunk"],)),
    }


class TorchField:
    """The checkpoint's prefix encoder and flow head as the sampler's field (edge.denoiser.Field),
    for a batch of b observations: the evaluation's path through the one chunk assembly."""

    def __init__(self, ck: Any, batch: int) -> None:
        p = ck.policy_cfg
        self.model, self.batch = ck.model, batch
        self.observation = {
            "image": np.zeros((batch, *p.image_hw, 3), np.uint8),
            "tokens": np.zeros((batch, p.max_tokens), np.int64),
            "state": np.zeros((batch, p.state_dim), np.float32),
        }
        self._kv: Any = None
        self._state: Any = None

    def buffers(self) -> tuple[None, None, None, None]:
        return (None, None, None, None)

    def encode(self) -> None:
        import torch

        o = self.observation
        with torch.no_grad():
            self._state = torch.from_numpy(o["state"].copy())
            self._kv = self.model.prefix(
                torch.from_numpy(o["image"]), torch.from_numpy(o["tokens"]), self._state
            )

    def velocity(self, y: np.ndarray, t: np.ndarray, omega: np.ndarray, out: np.ndarray) -> None:
        import torch

        with torch.no_grad():
            th = torch.from_numpy
            v = self.model.head(th(y), th(t), th(omega), self._state, self._kv)
        out[...] = v.numpy()


class ReferencePolicy(LoadedPolicy):
    """A legato.checkpoint.Checkpoint through the reference adapter."""

    name = NAME

    def __init__(self, path: Path, threads: int = 1) -> None:
        from edge.outputs import sha256_file
        from legato.checkpoint import load, read_config

        ck = load(path)
        self.path, self.native = Path(path), ck
        self.section = section(ck)
        cfg = read_config(ck.path)
        keys = ("format_version", "method", "policy", "schedule", "normalization", "task", "train")
        self.model_config = {k: cfg[k] for k in keys if k in cfg}
        self.weights_sha256 = sha256_file(Path(path) / "model.safetensors")
        self.train_seed = ck.train_seed

    def graphs(self, fused_attention: bool = False) -> dict[str, ExportGraph]:
        from legato.adapters.reference_graphs import example_inputs, modules

        policy = self.native.model.eval()
        mods, ex = modules(policy, fused_attention), example_inputs(policy)
        ops = {"com.microsoft": 1} if fused_attention else None
        return {g: ExportGraph(mods[g], ex[g], ins, outs, custom_opsets=ops)
                for g, (ins, outs) in graph_names(self.section).items()}  # fmt: skip

    def reference_policy(self, threads: int = 1) -> Any:
        from legato.runner import TorchPolicyRunner

        return TorchPolicyRunner(self.native, threads=threads)

    def samples(self, count: int, seed: int | None = None) -> list[Any]:
        return held_out_samples(self.native, count, seed=seed)

    def closed_loop(self, policy: Any, episodes: int, seed: int | None = None) -> float | None:
        return closed_loop(policy, self.native, episodes, seed=seed)

    def bundle_files(self) -> dict[str, bytes]:
        data = tokenizer_json() if self.section["observation"]["language"]["tokenizer"] else None
        return {TOKENIZER: data} if data is not None else {}

    def observation_arrays(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        p = self.native.policy_cfg
        return {"image": ("uint8", (*p.image_hw, 3)), "tokens": ("int64", (p.max_tokens,)),
                "state": ("float32", (p.state_dim,))}  # fmt: skip


def load(path: Path, threads: int = 1) -> ReferencePolicy:
    return ReferencePolicy(path, threads)


# ---- observations and closed loop on the project's simulator -------------------------------------
def held_out_samples(ck: Any, count: int, seed: int | None = None, episodes: int = 4) -> list[Any]:
    """`count` observations (with their previous chunk) from torch rollouts on held-out episodes."""
    from edge.policy import ChunkPolicy, ChunkRequest, default_method, default_ramp, held_out_seed
    from legato.adapters import Sample
    from legato.rollout import rollout
    from legato.runner import TorchPolicyRunner
    from sim.env import Observation
    from sim.episodes import sample_episodes

    class Recorder(ChunkPolicy):
        """Delegates to a runner and records what each chunk was asked from."""

        def __init__(self, inner: ChunkPolicy) -> None:
            super().__init__(inner.adapter, inner.source)
            self.inner = inner

        def chunk(self, method, obs, prev, req, eps):  # noqa: ANN001, ANN202
            for i in range(obs.state.shape[0]):
                if len(out) < count:
                    o = Observation(obs.image[i : i + 1].copy(), obs.tokens[i : i + 1].copy(),
                                    obs.state[i : i + 1].copy())  # fmt: skip
                    out.append(Sample(o, None if prev is None else prev[i : i + 1].copy()))
            return self.inner.chunk(method, obs, prev, req, eps)

    seed = held_out_seed(ck.train_seed) if seed is None else seed
    spec = ck.spec
    s = min(spec.horizon // 2, spec.horizon - spec.d_max) or 1
    d = min(spec.d_max, s, spec.horizon - s)
    req = ChunkRequest(d=d, s=s, r=default_ramp(spec, d, s))
    out: list[Any] = []
    ep = sample_episodes(ck.task, seed, episodes)
    per_episode = -(-count // episodes) + 1
    rec = Recorder(TorchPolicyRunner(ck, threads=1))
    rollout(
        rec, default_method(spec), ck.task, ep.scenes, ep.template, req, seed=seed, max_steps=per_episode * s
    )
    return out


def closed_loop(policy: Any, ck: Any, episodes: int, seed: int | None = None) -> float:
    """Success rate of `policy` on held-out episodes (the default chunking of the model)."""
    from edge.policy import ChunkRequest, default_method, default_ramp, held_out_seed
    from legato.rollout import rollout
    from sim.episodes import sample_episodes

    spec = policy.spec
    seed = held_out_seed(ck.train_seed) if seed is None else seed
    s = min(spec.horizon // 2, spec.horizon - spec.d_max) or 1
    d = min(2, spec.d_max, s, spec.horizon - s)
    req = ChunkRequest(d=d, s=s, r=default_ramp(spec, d, s))
    ep = sample_episodes(ck.task, seed, episodes)
    res = rollout(policy, default_method(spec), ck.task, ep.scenes, ep.template, req, seed=seed)
    return float(np.mean(res.success))

"""A LeRobot policy folder (plain LeRobot, or a Legato fine-tune with legato.json) behind the
evaluation harness's ChunkPolicy contract, so `legato sim rollout` / `legato eval` run it
exactly as they run the reference model.

The sampler state lives in the policy's padded action space (max_action_dim, noise in every
dim, as LeRobot samples it): the harness's noise fills the robot's dims, a generator of the
runner's own the padded ones; the reference is normalised and zero-padded, omega goes into its
padded dimension (legato_flow.LegatoHead). The harness's t = 0-noise sampler (edge.sampler)
calls the expert through the boundary conversion (tau = 1 - t, v = -v_lerobot).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge.normalize import Normalizer
from edge.policy import ChunkPolicy, ChunkRequest, ModelSpec, Observation
from legato.adapters.legato_flow import LegatoHead
from legato.adapters.lerobot_files import read_policy_folder
from legato.adapters.lerobot_train import LEGATO_FILE, load_policy
from sim.language import detokenize


@dataclass(frozen=True)
class LeRobotCheckpoint:
    """What the harness asks of a checkpoint (path, spec, train_seed, method, meta)."""

    path: Path
    policy: Any
    meta: dict[str, Any]
    spec: ModelSpec
    head: LegatoHead

    @property
    def method(self) -> str:
        return self.spec.method

    @property
    def task(self):
        """The simulated task the data came from (sim demos record the default TaskConfig)."""
        from sim.task import TaskConfig

        return TaskConfig()

    @property
    def train_seed(self) -> int | None:
        seed = self.meta.get("data", {}).get("seed")
        return None if seed is None else int(seed)


def load(path: str | Path) -> LeRobotCheckpoint:
    path = Path(path)
    folder = read_policy_folder(path)
    policy = load_policy(folder.type, path)
    meta = json.loads((path / LEGATO_FILE).read_text()) if (path / LEGATO_FILE).is_file() else {}
    s = policy.spec
    sch = meta.get("schedule", {})
    fps = float(meta.get("data", {}).get("fps", 50.0))
    tok = (folder.step("tokenizer_processor") or {}).get("config", {})
    cam_hw = s.cameras[0][1]
    spec = ModelSpec(
        method=meta.get("method", "plain"),
        horizon=s.chunk,
        num_steps=s.num_steps,
        action_dim=s.action_dim,
        state_dim=s.state_dim,
        image_hw=cam_hw,
        max_tokens=int(tok.get("max_length", 48)),
        d_max=int(sch.get("d_max", 0)),
        r_max=int(sch.get("r_max", 0)),
        schedule_shape=str(sch.get("shape", "linear")),
        control_hz=fps,
    )
    omega_dim = meta.get("omega_dim")  # absent: a plain LeRobot checkpoint, no omega input
    head = LegatoHead(
        s.num_steps, None if omega_dim is None else int(omega_dim), str(meta.get("velocity_form", "factored"))
    )
    return LeRobotCheckpoint(path, policy, meta, spec, head)


def section(ck: LeRobotCheckpoint) -> dict[str, Any]:
    """The manifest's adapter section of a LeRobot SmolVLA folder (edge.adapter.AdapterSpec): its
    graphs' names (legato.adapters.smolvla_graphs), t = 1 noise, dims padded to LeRobot's 32, the
    cameras by name, the language through the bundle's tokenizer.json with LeRobot's "\\n",
    mean-std normalisation with LeRobot's epsilons."""
    from legato.adapters.smolvla_graphs import PREFIX_OUTPUTS

    p, s = ck.policy, ck.policy.spec
    tok = p.tokenizer
    return {
        **section_skeleton(ck, PREFIX_OUTPUTS, state_pad=s.max_state_dim),
        "name": p.folder.type,
        "observation": {
            "cameras": camera_entries(s.cameras),
            "state": "state",
            "language": {
                "tokens": "tokens",
                "mask": "token_mask",
                "max_tokens": ck.spec.max_tokens,
                "vocab_size": len(tok),
                "pad_id": int(tok.pad_token_id or 0),
                "tokenizer": "tokenizer.json",
                "append": "\n",
            },
        },
        "normalization": normalization(ck).to_dict(),
    }


def normalization(ck: LeRobotCheckpoint) -> Normalizer:
    """A SmolVLA folder's normaliser: the state by LeRobot's MEAN_STD statistics (with its eps);
    the actions by them too, or relative to the joint state with the per-index statistics its
    legato.json records (a run trained with --action-norm state-relative)."""
    p, s = ck.policy, ck.policy.spec
    norm = p.folder.input_norm
    st, act = norm.stats.get("observation.state", {}), p.folder.output_norm.stats["action"]
    state = (
        np.asarray(st.get("mean", np.zeros(s.state_dim))),
        np.asarray(st.get("std", np.ones(s.state_dim))),
    )
    rel = ck.meta.get("action_normalization")
    if rel is not None:
        r = Normalizer.from_dict(rel)
        return Normalizer(
            *state, r.action_mean, r.action_std, kind="state-relative", state_eps=float(norm.eps)
        )
    return Normalizer(*state, np.asarray(act["mean"]), np.asarray(act["std"]), kind="mean-std",
                      state_eps=float(norm.eps), action_eps=float(norm.eps))  # fmt: skip


def camera_entries(cameras: Any) -> list[dict[str, Any]]:
    """The section's cameras from a LeRobot spec's ((feature key, (h, w)), ...): named by the key's
    last part, graph input image_<name>."""
    return [
        {"name": k.rsplit(".", 1)[-1], "input": f"image_{k.rsplit('.', 1)[-1]}", "height": h, "width": w}
        for k, (h, w) in cameras
    ]


def section_skeleton(
    ck: LeRobotCheckpoint, prefix_outputs: tuple[str, ...], state_pad: int
) -> dict[str, Any]:
    """What every LeRobot policy's section shares: t = 1 noise, chunk geometry, dims padded as
    LeRobot pads them, the schedule, the capabilities, the prefix -> head wiring by name."""
    p, s, spec = ck.policy, ck.policy.spec, ck.spec
    return {
        "name": p.folder.type,
        "method": spec.method,
        "time_convention": "t1-noise",
        "horizon": s.chunk,
        "num_steps": s.num_steps,
        "action_dim": s.action_dim,
        "action_pad": s.max_action_dim,
        "state_dim": s.state_dim,
        "state_pad": state_pad,
        "control_hz": spec.control_hz,
        "schedule": {"shape": spec.schedule_shape, "d_max": spec.d_max, "r_max": spec.r_max},
        "capabilities": {"omega": ck.head.omega_dim is not None, "hard_prefix": False, "fused": False},
        "graphs": {
            "prefix": {"outputs": list(prefix_outputs)},
            "flow_head": {
                "x": "x",
                "t": "t",
                "omega": "omega" if ck.head.omega_dim is not None else None,
                "velocity": "velocity",
                "context": {n: n for n in prefix_outputs},
            },
        },
    }


def random_frames(rng: np.random.Generator, cameras: Any) -> dict[str, np.ndarray]:
    """Synthetic uint8 (h, w, 3) frames by camera name for a LeRobot spec's cameras."""
    return {k.rsplit(".", 1)[-1]: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for k, (h, w) in cameras}


def gated_previous(ck: LeRobotCheckpoint, ref: Any, obs: Any, i: int, rng: np.random.Generator) -> Any:
    """The previous chunk of held-out sample i: the torch policy's own for every other sample of a
    Legato fine-tune (so the export's gate checks the continuation), None otherwise."""
    from edge.policy import ChunkRequest

    if not i % 2 or ck.spec.method != "legato":
        return None
    s = ck.policy.spec
    eps = rng.standard_normal((1, s.chunk, s.max_action_dim)).astype(np.float32)
    return ref.chunk("legato", obs, None, ChunkRequest(0, s.chunk // 2, 0), eps)


class TorchField:
    """The adapter's torch prefix and expert as the sampler's field (edge.denoiser.Field), batch b,
    converting at the head from the sampler's t = 0 noise (tau = 1 - t, v = -v_lerobot)."""

    def __init__(self, ck: LeRobotCheckpoint, batch: int) -> None:
        s, self.ck, self.batch = ck.policy.spec, ck, batch
        L = ck.spec.max_tokens
        self.observation = {
            f"image_{k.rsplit('.', 1)[-1]}": np.zeros((batch, h, w, 3), np.uint8) for k, (h, w) in s.cameras
        }
        self.observation |= {
            "tokens": np.zeros((batch, L), np.int64),
            "token_mask": np.zeros((batch, L), np.int64),
            "state": np.zeros((batch, s.max_state_dim), np.float32),
        }
        self._prefix: Any = None

    def buffers(self) -> tuple[None, None, None, None]:
        return (None, None, None, None)

    @torch.no_grad()
    def encode(self) -> None:
        from legato.adapters.smolvla import frames_to_pixels

        s, o = self.ck.policy.spec, self.observation
        pixels = [frames_to_pixels(o[f"image_{k.rsplit('.', 1)[-1]}"], s.image_hw) for k, _ in s.cameras]
        masks = [torch.ones(self.batch, dtype=torch.bool) for _ in pixels]
        th = torch.from_numpy
        self._prefix = self.ck.policy.model.prefix(
            pixels, masks, th(o["tokens"].copy()), th(o["token_mask"].copy()).bool(), th(o["state"].copy())
        )

    @torch.no_grad()
    def velocity(self, y: np.ndarray, t: np.ndarray, omega: np.ndarray, out: np.ndarray) -> None:
        model, prefix = self.ck.policy.model, self._prefix
        tau = torch.from_numpy(1.0 - t[:, 0].astype(np.float32))
        v = self.ck.head.velocity(
            lambda x, tt: model.velocity(x, tt, *prefix),
            torch.from_numpy(y),
            tau,
            torch.from_numpy(omega.astype(np.float32)),
        )
        out[...] = -v.numpy()


def pad_noise(eps: np.ndarray, action_pad: int) -> np.ndarray:
    """The harness draws noise in the robot's dims; LeRobot samples every padded dim too: the
    rest comes from a generator seeded by the given noise (deterministic, different per chunk)."""
    if eps.shape[-1] == action_pad:
        return eps
    seed = int.from_bytes(hashlib.sha256(eps.tobytes()).digest()[:8], "little")
    extra = np.random.default_rng(seed).standard_normal((*eps.shape[:2], action_pad - eps.shape[-1]))
    return np.concatenate([eps, extra.astype(np.float32)], -1)


def sim_to_policy_tokens(obs: Observation, policy: Any) -> Observation:
    """The simulator's token ids -> its instruction -> the policy's tokenizer (padded to max_length),
    as a robot's prompt reaches the bundle."""
    from legato.adapters.lerobot_files import tokenize
    from sim.env import Observation as SimObservation

    tasks = [detokenize(t) + "\n" for t in obs.tokens]
    cfg = dict(policy.tokenizer_step.get("config", {}), padding="max_length")
    ids, _ = tokenize(policy.tokenizer, tasks, cfg)
    return SimObservation(obs.image, ids, obs.state)


class LeRobotChunkRunner(ChunkPolicy):
    """A LeRobot SmolVLA folder through the one chunk assembly (edge.denoiser): the harness's
    runner (sim_tokens: the simulator's observations are re-tokenised) and the export's torch
    reference (sim_tokens=False: observations already carry the tokenizer's ids)."""

    def __init__(
        self, ck: LeRobotCheckpoint, seed: int = 0, threads: int = 0, sim_tokens: bool = True
    ) -> None:
        from edge.adapter import AdapterSpec

        super().__init__(AdapterSpec.from_dict(section(ck), f"adapter of {ck.path}"), source=str(ck.path))
        self.ck, self.sim_tokens = ck, sim_tokens
        if threads:
            torch.set_num_threads(threads)

    def field(self, batch: int) -> TorchField:
        return TorchField(self.ck, batch)

    def chunk(
        self, method: str, obs: Observation, prev: np.ndarray | None, req: ChunkRequest, eps: np.ndarray
    ) -> np.ndarray:
        if self.sim_tokens:
            obs = sim_to_policy_tokens(obs, self.ck.policy)
        return super().chunk(method, obs, prev, req, pad_noise(eps, self.adapter.action_pad))


class SimTokens(ChunkPolicy):
    """Any ChunkPolicy of a LeRobot bundle (e.g. edge.bundle_policy.BundlePolicy) in the
    simulator's harness: observations re-tokenised, noise padded."""

    def __init__(self, inner: ChunkPolicy, policy: Any) -> None:
        super().__init__(inner.adapter, inner.source)
        self.inner, self.policy = inner, policy

    def chunk(
        self, method: str, obs: Observation, prev: np.ndarray | None, req: ChunkRequest, eps: np.ndarray
    ) -> np.ndarray:
        obs = sim_to_policy_tokens(obs, self.policy)
        return self.inner.chunk(method, obs, prev, req, pad_noise(eps, self.adapter.action_pad))

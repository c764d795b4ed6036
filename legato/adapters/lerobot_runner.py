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

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge.normalize import Normalizer
from edge.policy import ChunkPolicy, ChunkRequest, ModelSpec, Observation, check_request
from edge.sampler import legato_sample, pad_reference
from edge.schedule import omega_schedule
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
    head = LegatoHead(
        s.num_steps,
        int(meta.get("omega_dim", s.max_action_dim - 1)),
        str(meta.get("velocity_form", "factored")),
    )
    return LeRobotCheckpoint(path, policy, meta, spec, head)


class LeRobotChunkRunner(ChunkPolicy):
    """Chunks in raw joint units from a LeRobot policy; forward-only methods (naive, sync, legato)."""

    def __init__(self, ck: LeRobotCheckpoint, seed: int = 0, threads: int = 0) -> None:
        identity = Normalizer(np.zeros(1), np.ones(1), np.zeros(1), np.ones(1))  # unused: own normalisation
        super().__init__(ck.spec, identity, source=str(ck.path))
        self.ck, self.policy, self.head = ck, ck.policy, ck.head
        self.rng = np.random.default_rng(seed)
        if threads:
            torch.set_num_threads(threads)

    def _norm(self, chunk: np.ndarray) -> np.ndarray:
        """Raw (b, h, a) -> normalised, zero-padded to max_action_dim."""
        x = self.policy.folder.output_norm.normalize("action", chunk)
        return np.pad(x, ((0, 0), (0, 0), (0, self.policy.spec.max_action_dim - x.shape[-1]))).astype(
            np.float32
        )

    def _unnorm(self, x: np.ndarray) -> np.ndarray:
        return self.policy.folder.output_norm.unnormalize("action", x[..., : self.spec.action_dim]).astype(
            np.float32
        )

    @torch.no_grad()
    def encode(self, obs: Observation) -> Any:
        camera = self.policy.spec.cameras[0][0]
        tasks = [detokenize(t) for t in obs.tokens]
        batch = {camera: obs.image, "observation.state": obs.state, "task": tasks}
        return self.policy.model.prefix(*self.policy.prefix_inputs(batch))

    def chunk(
        self, method: str, obs: Observation, prev: np.ndarray | None, req: ChunkRequest, eps: np.ndarray
    ) -> np.ndarray:
        spec = self.spec
        check_request(method, spec, req, source=self.source)
        if method not in ("naive", "sync", "legato"):
            return super().chunk(method, obs, prev, req, eps)  # refuses with the base class's message
        h, n = spec.horizon, spec.num_steps
        b, pad = eps.shape[0], self.policy.spec.max_action_dim - eps.shape[-1]
        eps_full = np.concatenate([eps, self.rng.standard_normal((b, h, pad)).astype(np.float32)], -1)
        prefix = self.encode(obs)
        model, head = self.policy.model, self.head

        @torch.no_grad()
        def velocity(y: np.ndarray, t: np.ndarray, omega: np.ndarray) -> np.ndarray:
            tau = torch.from_numpy(1.0 - t[:, 0].astype(np.float32))
            v = head.velocity(
                lambda x, tt: model.velocity(x, tt, *prefix),
                torch.from_numpy(y),
                tau,
                torch.from_numpy(omega.astype(np.float32)),
            )
            return -v.numpy()  # the LeRobot field points from data to noise

        if prev is None or method in ("naive", "sync"):
            zeros = np.zeros((b, h), np.float32)
            x = legato_sample(velocity, eps_full, np.zeros_like(eps_full), zeros, n)
            return self._unnorm(x)
        a_ref = self._norm(pad_reference(prev[:, req.s :], h))
        omega = np.broadcast_to(omega_schedule(req.d, req.r, h, spec.schedule_shape), (b, h)).astype(
            np.float32
        )
        x = legato_sample(velocity, eps_full, a_ref, omega.copy(), n, req.final_blend)
        return self._unnorm(x)

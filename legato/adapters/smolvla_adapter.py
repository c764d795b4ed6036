"""The SmolVLA adapter for `legato export --checkpoint DIR`: a LeRobot SmolVLA policy folder
(plain, or a Legato fine-tune with legato.json) -> the adapter section, the two graphs
(legato.adapters.smolvla_graphs: prefix -> K/V context, one expert step), the torch reference of
the parity gate (the harness runner over edge.denoiser), held-out observations, the tokenizer.json
the bundle carries, and the closed loop where the simulator fits the policy (one camera at the
simulator's size, its state and action dims).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from legato.adapters import ExportGraph, LoadedPolicy, Obs, Sample
from legato.adapters.lerobot_files import policy_type

NAME = "smolvla"
PROMPTS = ("pick up the cube", "reach the red target", "move to the blue one", "put it in the bin")


def detect(path: Path) -> bool:
    return policy_type(path) == NAME


class SmolVLALoaded(LoadedPolicy):
    name = NAME
    # the prefix attends over 1,024 image tokens (full size): docs/performance.md, "LeRobot SmolVLA"
    int8_activation_matmuls = True

    def __init__(self, path: Path, threads: int = 1) -> None:
        from edge.outputs import sha256_file
        from legato.adapters import lerobot_runner

        ck = lerobot_runner.load(path)
        self.path, self.native = Path(path), ck
        self.section = lerobot_runner.section(ck)
        self.model_config = {"lerobot": ck.policy.folder.config, "legato": ck.meta}
        if self.fits_sim():
            from sim.task import TaskConfig

            self.model_config["task"] = TaskConfig().to_dict()
        self.weights_sha256 = sha256_file(Path(path) / "model.safetensors")
        self.train_seed = ck.train_seed
        self.threads = threads

    # ---- the simulator fits a policy trained on its demonstrations
    def fits_sim(self) -> bool:
        from sim.task import TaskConfig

        task, s = TaskConfig(), self.native.policy.spec
        cam = task.camera
        return (
            len(s.cameras) == 1
            and s.cameras[0][1] == (cam.height, cam.width)
            and s.action_dim == task.arm.num_joints
            and s.state_dim == 2 * task.arm.num_joints
        )

    def _obs(self, frames: dict[str, np.ndarray], task: str, state: np.ndarray) -> Obs:
        """One observation as the robot's denoiser takes it: frames by camera name, the prompt's
        token ids as the bundle's tokenizer makes them (padded to max_tokens), the raw state."""
        from legato.adapters.lerobot_files import tokenize

        p = self.native.policy
        cfg = dict(p.tokenizer_step.get("config", {}), padding="max_length")
        ids, _ = tokenize(p.tokenizer, [task + "\n"], cfg)
        names = [k.rsplit(".", 1)[-1] for k, _ in p.spec.cameras]
        image: Any = frames[names[0]] if len(names) == 1 else frames
        return Obs(image, ids, state[None].astype(np.float32))

    def samples(self, count: int, seed: int | None = None) -> list[Any]:
        """Held-out observations: the simulator's (held-out episodes, the arm at random postures)
        where it fits, synthetic frames and states from the statistics otherwise; every other
        sample carries a previous chunk (the torch policy's own), so Legato's continuation is gated."""
        from edge.policy import held_out_seed
        from legato.adapters.lerobot_runner import gated_previous, random_frames

        rng = np.random.default_rng(held_out_seed(self.train_seed) if seed is None else seed)
        p = self.native.policy
        st = p.folder.input_norm.stats.get("observation.state", {})
        out: list[Any] = []
        ref = self.reference_policy()
        for i in range(count):
            if self.fits_sim():
                from sim.env import ReachEnv
                from sim.episodes import sample_episodes
                from sim.language import detokenize
                from sim.task import TaskConfig

                ep = sample_episodes(TaskConfig(), held_out_seed(self.train_seed), 1, i)
                o = ReachEnv(TaskConfig(), ep.scenes, ep.template).observe()
                obs = self._obs({"top": o.image[0]}, detokenize(o.tokens[0]), o.state[0])
            else:
                frames = random_frames(rng, p.spec.cameras)
                mean, std = (
                    st.get("mean", np.zeros(p.spec.state_dim)),
                    st.get("std", np.ones(p.spec.state_dim)),
                )
                obs = self._obs(
                    frames, PROMPTS[i % len(PROMPTS)], mean + std * rng.normal(size=p.spec.state_dim)
                )
            out.append(Sample(obs, gated_previous(self.native, ref, obs, i, rng)))
        return out

    # ---- graphs, reference, files
    def graphs(self, fused_attention: bool = False) -> dict[str, ExportGraph]:
        import torch

        from legato.adapters.smolvla_graphs import PREFIX_OUTPUTS, PrefixGraph, StepGraph

        p, head = self.native.policy, self.native.head
        model = p.model.eval()
        s = p.spec
        sec = self.section
        cams = [c["input"] for c in sec["observation"]["cameras"]]
        smp = self.samples(1)[0].obs
        frames = (
            [smp.image] if len(cams) == 1 else [smp.image[c["name"]] for c in sec["observation"]["cameras"]]
        )
        args = (
            *(
                torch.from_numpy(np.asarray(f)[None] if np.asarray(f).ndim == 3 else np.asarray(f))
                for f in frames
            ),
            torch.from_numpy(smp.tokens),
            torch.from_numpy((smp.tokens != sec["observation"]["language"]["pad_id"]).astype(np.int64)),
            torch.from_numpy(self.native.policy.state(smp.state).numpy()),
        )
        prefix = PrefixGraph(model, len(cams)).eval()
        with torch.no_grad():
            ctx = prefix(*args)
        step = StepGraph(model, head).eval()
        x, t = torch.randn(1, s.chunk, s.max_action_dim), torch.tensor([1.0])
        omega = head.omega_dim is not None
        head_args = (x, t, *((torch.zeros(1, s.chunk),) if omega else ()), *ctx)
        head_ins = ("x", "t", *(("omega",) if omega else ()), *PREFIX_OUTPUTS)
        return {
            "prefix": ExportGraph(prefix, args, (*cams, "tokens", "token_mask", "state"), PREFIX_OUTPUTS),
            "flow_head": ExportGraph(step if omega else _NoOmega(step), head_args, head_ins, ("velocity",)),
        }

    def reference_policy(self, threads: int = 1) -> Any:
        from legato.adapters.lerobot_runner import LeRobotChunkRunner

        return LeRobotChunkRunner(self.native, threads=threads, sim_tokens=False)

    def closed_loop(self, policy: Any, episodes: int, seed: int | None = None) -> float | None:
        if not self.fits_sim():
            return None
        from edge.policy import ChunkRequest, default_method, default_ramp, held_out_seed
        from legato.adapters.lerobot_runner import SimTokens
        from legato.rollout import rollout
        from sim.episodes import sample_episodes
        from sim.task import TaskConfig

        spec = policy.spec
        seed = held_out_seed(self.train_seed) if seed is None else seed
        s = min(spec.horizon // 2, spec.horizon - spec.d_max) or 1
        d = min(2, spec.d_max, s, spec.horizon - s)
        req = ChunkRequest(d=d, s=s, r=default_ramp(spec, d, s))
        ep = sample_episodes(TaskConfig(), seed, episodes)
        wrapped = SimTokens(policy, self.native.policy)
        res = rollout(wrapped, default_method(spec), TaskConfig(), ep.scenes, ep.template, req, seed=seed)
        return float(np.mean(res.success))

    def bundle_files(self) -> dict[str, bytes]:
        from legato.adapters.smolvla import vlm_folder

        tok = vlm_folder(self.native.policy.folder) / "tokenizer.json"
        return {"tokenizer.json": tok.read_bytes()}

    def observation_arrays(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        s, L = self.native.policy.spec, self.native.spec.max_tokens
        arrays = {
            c: ("uint8", (h, w, 3)) for c, (h, w) in ((k.rsplit(".", 1)[-1], hw) for k, hw in s.cameras)
        }
        return {**arrays, "tokens": ("int64", (L,)), "state": ("float32", (s.state_dim,))}


class _NoOmega:
    """The step graph of a plain LeRobot expert: no omega input (its padded dims are LeRobot's)."""

    def __new__(cls, step):  # noqa: ANN001, ANN204
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.step = step

            def forward(self, x, t, *ctx):  # noqa: ANN001, ANN202
                return self.step(x, t, torch.zeros(x.shape[:2]), *ctx)

        return Wrapped().eval()


def load(path: Path, threads: int = 1) -> SmolVLALoaded:
    return SmolVLALoaded(Path(path), threads)

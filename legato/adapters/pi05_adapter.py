"""The pi0.5 adapter for `legato export --checkpoint DIR`: a LeRobot pi0.5 policy folder (plain,
or a Legato fine-tune with legato.json) -> the adapter section, the two graphs
(legato.adapters.pi05_graphs: prefix -> K/V context, one expert step), the torch reference of the
parity gate (the same chunk assembly over the torch model), held-out observations and the
tokenizer.json the bundle carries.

pi0.5 has no state input: LeRobot's pre-processor normalises the state (QUANTILES by default),
cuts it into 256 bins and writes it into the prompt ("Task: ..., State: 12 200 ...;\\nAction: "),
which the PaliGemma tokenizer encodes. The section declares that step as data
(``observation.language.prompt``: the template, the normaliser's low/high statistics, the bins),
so the robot builds the prompt from the task and each observation's state and tokenizes it with
the `tokenizers` library and the bundle's tokenizer file (edge.language.PromptBuilder); the
prefix graph takes only the frames and the prompt's ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge.policy import ChunkPolicy
from legato.adapters import ExportGraph, LoadedPolicy, Obs, Sample
from legato.adapters.lerobot_files import LeRobotCheckpointError, policy_type

NAME = "pi05"
PROMPTS = ("pick up the cube", "reach the red target", "put it in the bin", "fold the towel")
TEMPLATE = "Task: {task}, State: {state};\nAction: "  # LeRobot's Pi05PrepareStateTokenizerProcessorStep
RANGE_STATS = {"QUANTILES": ("q01", "q99"), "QUANTILE10": ("q10", "q90"), "MIN_MAX": ("min", "max")}


def detect(path: Path) -> bool:
    return policy_type(path) == NAME


def _range(norm: Any, key: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of a [-1, 1] range normaliser (QUANTILES, QUANTILE10, MIN_MAX) of feature key."""
    mode = norm.modes.get(key, "IDENTITY")
    if mode not in RANGE_STATS:
        raise LeRobotCheckpointError(
            f"pi0.5's {what} is normalised with {mode}; the bundle supports the [-1, 1] range "
            f"normalisers ({', '.join(RANGE_STATS)}), LeRobot's pi0.5 default is QUANTILES"
        )
    lo, hi = RANGE_STATS[mode]
    s = norm.stats[key]
    return np.asarray(s[lo], np.float32), np.asarray(s[hi], np.float32)


def section(ck: Any) -> dict[str, Any]:
    """The manifest's adapter section of a LeRobot pi0.5 folder (edge.adapter.AdapterSpec)."""
    from edge.normalize import Normalizer
    from legato.adapters.lerobot_runner import camera_entries, section_skeleton
    from legato.adapters.pi05_graphs import PREFIX_OUTPUTS
    from legato.adapters.smolvla import ACTION, STATE

    p, s = ck.policy, ck.policy.spec
    pre, post = p.folder.input_norm, p.folder.output_norm
    s_lo, s_hi = _range(pre, STATE, "state")
    a_lo, a_hi = _range(post, ACTION, "action")
    eps = np.float32(post.eps)
    a_span = np.where(a_hi - a_lo == 0, eps, a_hi - a_lo).astype(np.float32)
    s_span = np.where(s_hi - s_lo == 0, eps, s_hi - s_lo).astype(np.float32)
    tok = p.tokenizer
    cfg = p.tokenizer_step.get("config", {})
    return {
        **section_skeleton(ck, PREFIX_OUTPUTS, state_pad=s.state_dim),
        "name": NAME,
        "observation": {
            "cameras": camera_entries(s.cameras),
            "state": None,  # no state input: it reaches the model through the prompt
            "language": {
                "tokens": "tokens",
                "mask": "token_mask",
                "max_tokens": int(cfg.get("max_length", 48)),
                "vocab_size": len(tok),
                "pad_id": int(tok.pad_token_id or 0),
                "tokenizer": "tokenizer.json",
                "append": "",
                "prompt": {
                    "template": TEMPLATE,
                    "state_low": s_lo.astype(np.float64).tolist(),
                    "state_high": s_hi.astype(np.float64).tolist(),
                    "eps": float(pre.eps),
                    "bins": 256,
                },
            },
        },
        # LeRobot's range normaliser as mean-std: x_n = 2 (x - low) / span - 1 = (x - mean) / std
        # with mean = low + span / 2, std = span / 2
        "normalization": Normalizer(
            (s_lo + s_span / 2).astype(np.float64),
            (s_span / 2).astype(np.float64),
            (a_lo + a_span / 2).astype(np.float64),
            (a_span / 2).astype(np.float64),
            kind="mean-std",
        ).to_dict(),
    }


class Pi05Field:
    """The torch prefix and expert as the sampler's field (edge.denoiser.Field), batch b, converting
    at the head from the sampler's t = 0 noise (tau = 1 - t, v = -v_lerobot)."""

    def __init__(self, ck: Any, batch: int) -> None:
        s, self.ck, self.batch = ck.policy.spec, ck, batch
        L = int(ck.policy.tokenizer_step.get("config", {}).get("max_length", 48))
        self.observation: dict[str, np.ndarray] = {
            f"image_{k.rsplit('.', 1)[-1]}": np.zeros((batch, h, w, 3), np.uint8) for k, (h, w) in s.cameras
        }
        self.observation |= {
            "tokens": np.zeros((batch, L), np.int64),
            "token_mask": np.zeros((batch, L), np.int64),
        }
        self._prefix: Any = None

    def buffers(self) -> tuple[None, None, None, None]:
        return (None, None, None, None)

    def encode(self) -> None:
        import torch

        from legato.adapters.pi05 import resize_with_pad_centred

        s, o = self.ck.policy.spec, self.observation
        pixels = []
        for k, _ in s.cameras:
            x = torch.from_numpy(o[f"image_{k.rsplit('.', 1)[-1]}"].copy()).float() / 255
            pixels.append((resize_with_pad_centred(x, *s.image_hw) * 2.0 - 1.0).permute(0, 3, 1, 2))
        masks = [torch.ones(self.batch, dtype=torch.bool) for _ in pixels]
        with torch.no_grad():
            self._prefix = self.ck.policy.model.prefix(
                pixels,
                masks,
                torch.from_numpy(o["tokens"].copy()),
                torch.from_numpy(o["token_mask"].copy()).bool(),
            )

    def velocity(self, y: np.ndarray, t: np.ndarray, omega: np.ndarray, out: np.ndarray) -> None:
        import torch

        model, prefix = self.ck.policy.model, self._prefix
        tau = torch.from_numpy(1.0 - t[:, 0].astype(np.float32))
        with torch.no_grad():
            v = self.ck.head.velocity(
                lambda x, tt: model.velocity(x, tt, *prefix),
                torch.from_numpy(y),
                tau,
                torch.from_numpy(omega.astype(np.float32)),
            )
        out[...] = -v.numpy()


class Pi05Runner(ChunkPolicy):
    """The torch pi0.5 through the one chunk assembly (edge.denoiser): the export's reference."""

    def __init__(self, ck: Any, section_dict: dict[str, Any], threads: int = 0) -> None:
        from edge.adapter import AdapterSpec

        super().__init__(AdapterSpec.from_dict(section_dict, f"adapter of {ck.path}"), source=str(ck.path))
        self.ck = ck
        if threads:
            import torch

            torch.set_num_threads(threads)

    def field(self, batch: int) -> Pi05Field:
        return Pi05Field(self.ck, batch)


class Pi05Loaded(LoadedPolicy):
    name = NAME

    def __init__(self, path: Path, threads: int = 1) -> None:
        from edge.outputs import sha256_file
        from legato.adapters import lerobot_runner

        ck = lerobot_runner.load(path)
        self.path, self.native = Path(path), ck
        self.section = section(ck)
        self.model_config = {"lerobot": ck.policy.folder.config, "legato": ck.meta}
        self.weights_sha256 = sha256_file(Path(path) / "model.safetensors")
        self.train_seed = ck.train_seed
        self.threads = threads

    def _obs(self, frames: dict[str, np.ndarray], task: str, state: np.ndarray) -> Obs:
        """One observation as the robot's denoiser takes it: frames by camera name, the prompt (the
        task and the state's bins) as the tokenizer encodes it on the workstation, the raw state."""
        p = self.native.policy
        ids, _ = p.language([task], state[None])
        names = [k.rsplit(".", 1)[-1] for k, _ in p.spec.cameras]
        image: Any = frames[names[0]] if len(names) == 1 else frames
        return Obs(image, ids.numpy(), state[None].astype(np.float32))

    def samples(self, count: int, seed: int | None = None) -> list[Any]:
        """Synthetic held-out observations (frames, states spread over the normaliser's range,
        prompts); every other one carries a previous chunk (the torch policy's own) for a Legato
        fine-tune, so the continuation is gated."""
        from edge.policy import held_out_seed
        from legato.adapters.lerobot_runner import gated_previous, random_frames

        rng = np.random.default_rng(held_out_seed(self.train_seed) if seed is None else seed)
        p = self.native.policy
        lo, hi = _range(p.folder.input_norm, "observation.state", "state")
        ref = self.reference_policy()
        out: list[Any] = []
        for i in range(count):
            frames = random_frames(rng, p.spec.cameras)
            state = (lo + (hi - lo) * rng.uniform(0.0, 1.0, p.spec.state_dim)).astype(np.float32)
            obs = self._obs(frames, PROMPTS[i % len(PROMPTS)], state)
            out.append(Sample(obs, gated_previous(self.native, ref, obs, i, rng)))
        return out

    def graphs(self, fused_attention: bool = False) -> dict[str, ExportGraph]:
        import torch

        from legato.adapters.pi05_graphs import PREFIX_OUTPUTS, PrefixGraph, StepGraph
        from legato.adapters.smolvla_adapter import _NoOmega

        p, head = self.native.policy, self.native.head
        model, s = p.model.eval(), p.spec
        cams = [c["input"] for c in self.section["observation"]["cameras"]]
        smp = self.samples(1)[0].obs
        names = [c["name"] for c in self.section["observation"]["cameras"]]
        frames = [smp.image] if len(cams) == 1 else [smp.image[n] for n in names]
        pad = self.section["observation"]["language"]["pad_id"]
        args = (
            *(torch.from_numpy(np.asarray(f)[None]) for f in frames),
            torch.from_numpy(smp.tokens),
            torch.from_numpy((smp.tokens != pad).astype(np.int64)),
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
            "prefix": ExportGraph(prefix, args, (*cams, "tokens", "token_mask"), PREFIX_OUTPUTS),
            "flow_head": ExportGraph(step if omega else _NoOmega(step), head_args, head_ins, ("velocity",)),
        }

    def reference_policy(self, threads: int = 1) -> Any:
        return Pi05Runner(self.native, self.section, threads=threads)

    def closed_loop(self, policy: Any, episodes: int, seed: int | None = None) -> float | None:
        return None  # no simulator here fits a pi0.5 policy (its cameras, state and actions)

    def bundle_files(self) -> dict[str, bytes]:
        from legato.adapters.lerobot_files import resolve_hub_folder

        cfg = self.native.policy.tokenizer_step.get("config", {})
        folder = resolve_hub_folder(
            cfg.get("tokenizer_name", "google/paligemma-3b-pt-224"), "pi0.5's tokenizer"
        )
        return {"tokenizer.json": (folder / "tokenizer.json").read_bytes()}

    def observation_arrays(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        s = self.native.policy.spec
        L = self.section["observation"]["language"]["max_tokens"]
        arrays = {
            c: ("uint8", (h, w, 3)) for c, (h, w) in ((k.rsplit(".", 1)[-1], hw) for k, hw in s.cameras)
        }
        return {**arrays, "tokens": ("int64", (L,)), "state": ("float32", (s.state_dim,))}


def load(path: Path, threads: int = 1) -> Pi05Loaded:
    return Pi05Loaded(Path(path), threads)

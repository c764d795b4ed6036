"""Golden fixtures from LeRobot 0.6.1's own code: reduced SmolVLA and pi0.5 checkpoints with
random unit-gain weights, their chunks from LeRobot's own processors and sample_actions, and a
tiny LeRobotDataset v3 written by LeRobot's own create / add_frame / save_episode / finalize.

    python scripts/make_lerobot_fixtures.py setup            # the throwaway venv (~3 min, once)
    python scripts/make_lerobot_fixtures.py build            # writes tests/fixtures/lerobot/ (~1 min)
    python scripts/make_lerobot_fixtures.py check-dataset DIR  # LeRobot's reader on a dataset we wrote

LeRobot 0.6.1 needs Python >= 3.12 and torch < 2.12; this machine has Python 3.11 and a local
CPU build of torch 2.13, so it lives in a venv of its own outside the repository
($LEROBOT_ENV, default /work/lerobot-env) and is never a dependency of the project. `setup`:
- installs torch==2.13.0 (the local CPU file), LeRobot's core and dataset dependencies by hand
  (transformers 5.4-5.5 as LeRobot pins, numpy < 2.3, av < 16, pyarrow, datasets, ...), the
  torchvision 0.28 wheel with --no-deps and `lerobot==0.6.1 --no-deps --ignore-requires-python`;
- rewrites the PEP 695 lines Python 3.11 cannot parse, in the installed copy only:
  `class C[T, U](B):` -> `class C(B, Generic[T, U])`, `type X = Y` -> `X = Y`,
  `def f[T: B](...)` -> `def f(...)` with module-level TypeVars (processor/pipeline.py,
  datasets/streaming_dataset.py, datasets/aggregate.py, utils/io_utils.py, motors/motors_bus.py).
`build` patches at run time, in its own process only:
- torchvision's two `register_fake` meta registrations for nms/qnms (their C++ operators are
  missing beside this torch build) are skipped: nothing here uses them;
- pi0.5's sizes are built in code, so the reduced model shrinks configs only, never LeRobot's
  computation: `get_gemma_config` returns small Gemma widths (8 heads, 1 KV head, as LeRobot's
  attention reshape assumes), and the PaliGemma / expert classes get a config with a small
  SigLIP (patch 8), a projection to the text width, and a 512-token vocabulary.
No weights are downloaded: the VLM's config and processor (SmolVLA asks the hub for them even
with load_vlm_weights=False) and the tokenizers are hand-built here, written as local files,
and installed into a throwaway HF_HOME cache (HF_HUB_OFFLINE=1) under the ids the checkpoints
name: `legato-fixtures/smolvlm2-tiny` (SmolVLA's vlm_model_name) and
`google/paligemma-3b-pt-224` (the id pi0.5's tokenizer step hard-codes; here a tiny byte-level
BPE with a BOS template, committed as tests/fixtures/lerobot/tokenizers/paligemma-tiny).

Weights are drawn at unit gain: every matrix N(0, 1 / fan_in), biases N(0, 0.1^2), norm scales
perturbed by N(0, 0.1^2). LeRobot's own small initialisation would leave the network nearly
blind to its inputs, so a wrong pre-processing step would still match.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "lerobot"
ENV = Path(os.environ.get("LEROBOT_ENV", "/work/lerobot-env"))
SMOLVLM_ID = "legato-fixtures/smolvlm2-tiny"
PALIGEMMA_TOKENIZER_ID = "google/paligemma-3b-pt-224"

DEPS = [
    "numpy>=2.0,<2.3",
    "transformers>=5.4,<5.6",
    "num2words",
    "accelerate>=1.14",
    "scipy",
    "opencv-python-headless<4.14",
    "draccus==0.11.6",
    "einops>=0.8,<0.9",
    "huggingface-hub>=1.6,<2",
    "safetensors",
    "gymnasium>=1.1.1",
    "packaging<26",
    "termcolor",
    "tqdm",
    "Pillow<13",
    "datasets>=4.8,<5",
    "pandas<3",
    "pyarrow>=21",
    "av>=15,<16",
    "jsonlines",
    "requests",
    "setuptools<82",
]
PEP695_FILES = [
    "processor/pipeline.py",
    "datasets/streaming_dataset.py",
    "datasets/aggregate.py",
    "utils/io_utils.py",
    "motors/motors_bus.py",
]


# ----------------------------------------------------------------------------- setup
def setup() -> None:
    py = ENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(ENV)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "torch==2.13.0"], check=True)  # the local CPU build; never unpinned
    subprocess.run([*pip, *DEPS], check=True)
    subprocess.run([*pip, "--no-deps", "torchvision==0.28.0"], check=True)
    subprocess.run([*pip, "--no-deps", "--ignore-requires-python", "lerobot==0.6.1"], check=True)
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    for rel in PEP695_FILES:
        path = Path(site) / "lerobot" / rel
        path.write_text(rewrite_pep695(path.read_text()))
    print(f"LeRobot 0.6.1 ready in {ENV}")


def rewrite_pep695(src: str) -> str:
    """Python 3.12 generics -> 3.11 equivalents (idempotent)."""
    typevars: list[str] = []

    def cls(m: re.Match) -> str:
        name, params, bases = m.group(1), m.group(2), m.group(3) or ""
        names = [p.split(":")[0].strip() for p in params.split(",")]
        typevars.extend(p.strip() for p in params.split(","))
        inner = ", ".join(x for x in (bases, f"Generic[{', '.join(names)}]") if x)
        return f"class {name}({inner}):"

    def fn(m: re.Match) -> str:
        typevars.extend(p.strip() for p in m.group(2).split(","))
        return f"def {m.group(1)}("

    src = re.sub(r"^class (\w+)\[([^\]]+)\](?:\(([^)]*)\))?:", cls, src, flags=re.M)
    src = re.sub(r"^def (\w+)\[([^\]]+)\]\(", fn, src, flags=re.M)
    src = re.sub(r"^type (\w+) = ", r"\1 = ", src, flags=re.M)
    if not typevars:
        return src
    decl = ["from typing import Generic, TypeVar  # legato: PEP 695 rewritten for Python 3.11"]
    for tv in dict.fromkeys(typevars):
        name, _, bound = (x.strip() for x in tv.partition(":"))
        if not re.search(rf"^{name} = TypeVar\(", src, flags=re.M):
            decl.append(f'{name} = TypeVar("{name}"' + (f", bound={bound!r}" if bound else "") + ")")
    lines = src.splitlines(keepends=True)
    # After the module's imports (bounds name imported classes; strings keep them lazy).
    last_import = max(i for i, line in enumerate(lines) if re.match(r"^(from \S+ )?import ", line))
    while lines[last_import].rstrip().endswith(("(", ",")) or (
        "(" in lines[last_import] and ")" not in lines[last_import]
    ):
        last_import += 1
        while not lines[last_import].startswith(")"):
            last_import += 1
    return "".join(lines[: last_import + 1]) + "\n".join(decl) + "\n" + "".join(lines[last_import + 1 :])


# ----------------------------------------------------------------------------- build
def guard_torchvision() -> None:
    import torch

    real = torch.library.register_fake

    def register_fake(op, *args, **kwargs):
        if isinstance(op, str) and op.startswith("torchvision::"):
            return lambda fn: fn  # its C++ operator is absent beside this torch build
        return real(op, *args, **kwargs)

    torch.library.register_fake = register_fake


def unit_gain_(module, seed: int) -> None:
    """Every matrix N(0, 1/fan_in), biases N(0, 0.1^2), 1-D scales + N(0, 0.1^2)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            if p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def byte_bpe(specials: list[str], bos_template: str | None, corpus: list[str], vocab: int, **kwargs):
    """A tiny byte-level BPE tokenizer (tokenizers library) wrapped as a fast HF tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    if bos_template:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos_template} $A",
            pair=f"{bos_template} $A $B",
            special_tokens=[(bos_template, tok.token_to_id(bos_template))],
        )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


CORPUS = [
    "pick up the red cube and place it in the bin\n",
    "push the blue block to the left\n",
    "reach the green target\n",
    "Task: pick the cube, State: 0 12 127 255 64 3;\nAction: ",
    "open the gripper then close it\n",
    "stack the yellow cup on the plate\n",
] * 4 + [" ".join(str(i) for i in range(k, 256, 7)) for k in range(7)]
TASKS = ["pick up the red cube and place it in the bin", "reach green"]


def build_smolvlm_folder(folder: Path) -> None:
    """The VLM's config + processor, hand-built (SmolVLM2 layout, reduced sizes)."""
    from transformers import (
        LlamaConfig,
        SmolVLMConfig,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )

    specials = [
        "<|endoftext|>",
        "<fake_token_around_image>",
        "<image>",
        "<global-img>",
        "<end_of_utterance>",
        "<|im_start|>",
    ]
    extra = {
        "fake_image_token": "<fake_token_around_image>",
        "image_token": "<image>",
        "global_image_token": "<global-img>",
        "end_of_utterance_token": "<end_of_utterance>",
    }
    tok = byte_bpe(
        specials,
        None,
        CORPUS,
        420,
        extra_special_tokens=extra,
        pad_token="<|endoftext|>",
        eos_token="<end_of_utterance>",
        bos_token="<|im_start|>",
    )
    text = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        rms_norm_eps=1e-5,
        rope_theta=100000.0,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 64,
        "patch_size": 8,
        "model_type": "smolvlm_vision",
    }
    cfg = SmolVLMConfig(
        vision_config=vision,
        text_config=text.to_dict(),
        scale_factor=2,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
    )
    cfg.save_pretrained(folder)
    size = {"longest_edge": 64}
    proc = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(size=size, max_image_size=size),
        tokenizer=tok,
        video_processor=SmolVLMVideoProcessor(size=size),
        image_seq_len=16,
    )
    proc.save_pretrained(folder)


def build_paligemma_tokenizer(folder: Path) -> None:
    tok = byte_bpe(["<pad>", "<eos>", "<bos>", "<unk>"], "<bos>", CORPUS, 400)
    tok.pad_token, tok.eos_token, tok.bos_token, tok.unk_token = "<pad>", "<eos>", "<bos>", "<unk>"
    tok.save_pretrained(folder)
    # transformers 5's AutoTokenizer reads the repository's config.json first (the hub's has one).
    (folder / "config.json").write_text(json.dumps({"model_type": "paligemma"}))


def install_in_hf_cache(folder: Path, repo_id: str, hf_home: Path) -> None:
    """Lay a local folder out as the hub cache does (models--a--b/snapshots/<rev>, refs/main)."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / "fixture"
    if snap.exists():
        shutil.rmtree(snap)
    shutil.copytree(folder, snap)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text("fixture")


def robot_observations(cameras: dict[str, tuple[int, int]], state_dim: int, seed: int):
    """Two observations as a robot gives them: uint8 HWC frames, float32 state, a task string."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for i, task in enumerate(TASKS):
        obs = {}
        for name, (h, w) in cameras.items():
            # Smooth structure plus noise, so resizing matters at every pixel.
            yy, xx = np.mgrid[0:h, 0:w]
            base = 127 + 100 * np.sin(xx[..., None] * (0.2 + 0.1 * i) + yy[..., None] * 0.13 + np.arange(3))
            obs[name] = np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
        obs["observation.state"] = rng.uniform(-1.2, 1.2, state_dim).astype(np.float32)
        out.append((obs, task))
    return out


def stats_for(dim: int, seed: int) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    mean = rng.uniform(-0.5, 0.5, dim).astype(np.float32)
    std = rng.uniform(0.2, 1.5, dim).astype(np.float32)
    return {
        "mean": mean,
        "std": std,
        "min": mean - 3 * std,
        "max": mean + 3 * std,
        "q01": mean - 2 * std,
        "q99": mean + 2 * std,
    }


def run_golden(policy, pre, post, observations, noise) -> dict:
    """LeRobot's own path: prepare_observation_for_inference -> pre-processor ->
    predict_action_chunk (-> model.sample_actions) -> post-processor, one observation at a time."""
    import numpy as np
    import torch
    from lerobot.policies.utils import prepare_observation_for_inference

    actions, tokens, masks = [], [], []
    for (obs, task), eps in zip(observations, noise, strict=True):
        batch = prepare_observation_for_inference(
            {k: v.copy() for k, v in obs.items()}, torch.device("cpu"), task
        )
        batch = pre(batch)
        tokens.append(batch["observation.language.tokens"][0].numpy())
        masks.append(batch["observation.language.attention_mask"][0].numpy())
        with torch.no_grad():
            a = policy.predict_action_chunk(batch, noise=eps[None].clone())
        actions.append(post(a)[0].numpy())
    pad = max(len(t) for t in tokens)
    return {
        "actions": np.stack(actions).astype(np.float32),
        "tokens": np.stack([np.pad(t, (0, pad - len(t))) for t in tokens]).astype(np.int64),
        "token_mask": np.stack([np.pad(m, (0, pad - len(m))) for m in masks]).astype(bool),
    }


def save_golden(path: Path, observations, noise, result: dict, extra: dict) -> None:
    import numpy as np

    arrays = {}
    for i, (obs, _task) in enumerate(observations):
        for k, v in obs.items():
            arrays[f"{i}/{k}"] = v
    arrays.update(noise=noise.numpy(), **result)
    meta = {"tasks": [t for _, t in observations], **extra}
    np.savez_compressed(path, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)


def features(cameras: dict[str, tuple[int, int]], state_dim: int, action_dim: int):
    from lerobot.configs import FeatureType, PolicyFeature

    feats = {k: PolicyFeature(type=FeatureType.VISUAL, shape=(3, h, w)) for k, (h, w) in cameras.items()}
    feats["observation.state"] = PolicyFeature(type=FeatureType.STATE, shape=(state_dim,))
    return feats, {"action": PolicyFeature(type=FeatureType.ACTION, shape=(action_dim,))}


def dataset_stats(state_dim: int, action_dim: int, seed: int) -> dict:
    import torch

    return {
        "observation.state": {k: torch.from_numpy(v) for k, v in stats_for(state_dim, seed).items()},
        "action": {k: torch.from_numpy(v) for k, v in stats_for(action_dim, seed + 1).items()},
    }


def build_smolvla(out: Path) -> None:
    import torch
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors

    cameras = {"observation.images.top": (96, 128), "observation.images.wrist": (50, 40)}
    inp, outp = features(cameras, 6, 6)
    cfg = SmolVLAConfig(
        vlm_model_name=SMOLVLM_ID,
        chunk_size=10,
        n_action_steps=10,
        num_steps=10,
        num_vlm_layers=4,
        resize_imgs_with_padding=(64, 64),
        tokenizer_max_length=24,
        input_features=inp,
        output_features=outp,
        device="cpu",
        push_to_hub=False,
    )
    policy = SmolVLAPolicy(cfg)
    unit_gain_(policy, seed=1)
    ckpt = out / "smolvla"
    policy.save_pretrained(ckpt)
    pre, post = make_smolvla_pre_post_processors(cfg, dataset_stats(6, 6, seed=2))
    pre.save_pretrained(ckpt)
    post.save_pretrained(ckpt)
    # Reload everything from the files, as a user would, and run LeRobot's path.
    policy = SmolVLAPolicy.from_pretrained(ckpt).eval()
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(ckpt))
    observations = robot_observations(cameras, 6, seed=3)
    noise = torch.randn(
        (len(observations), cfg.chunk_size, cfg.max_action_dim), generator=torch.Generator().manual_seed(4)
    )
    result = run_golden(policy, pre, post, observations, noise)
    save_golden(
        out / "smolvla_golden.npz",
        observations,
        noise,
        result,
        {"policy": "smolvla", "params": sum(p.numel() for p in policy.parameters())},
    )
    print(
        f"smolvla: {sum(p.numel() for p in policy.parameters()):,} params; "
        f"actions {result['actions'].shape}, "
        f"|a| max {abs(result['actions']).max():.3f}"
    )


# The reduced pi0.5's sizes. LeRobot builds pi0.5's sizes in code from the variant names, so a
# reduced model cannot say them in its config.json: the script writes them beside the checkpoint
# (sizes.json); the adapter reads that file where present and the published sizes otherwise.
PI05_SIZES = {
    "vlm": {"width": 64, "depth": 2, "mlp_dim": 128, "num_heads": 8, "num_kv_heads": 1, "head_dim": 16},
    "expert": {"width": 48, "depth": 2, "mlp_dim": 96, "num_heads": 8, "num_kv_heads": 1, "head_dim": 16},
    "vision": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "patch_size": 8,
    },
    "vocab_size": 512,
}


def shrink_pi05() -> None:
    """Reduced pi0.5 by configuration only (see the module docstring)."""
    from lerobot.policies.pi05 import modeling_pi05 as m

    small = {
        "gemma_2b": m.GemmaConfig(**PI05_SIZES["vlm"]),
        "gemma_300m": m.GemmaConfig(**PI05_SIZES["expert"]),
    }
    m.get_gemma_config = lambda variant: small[variant]
    real_vlm, real_expert = m.PaliGemmaForConditionalGenerationWithPiGemma, m.PiGemmaForCausalLM

    def vlm(config):
        v = config.vision_config
        for k, val in PI05_SIZES["vision"].items():
            setattr(v, k, val)
        v.projection_dim = config.projection_dim = config.text_config.hidden_size
        config.text_config.vocab_size = config._vocab_size = PI05_SIZES["vocab_size"]
        return real_vlm(config)

    def expert(config):
        config.vocab_size = PI05_SIZES["vocab_size"]
        return real_expert(config)

    m.PaliGemmaForConditionalGenerationWithPiGemma, m.PiGemmaForCausalLM = vlm, expert


def build_pi05(out: Path) -> None:
    import torch

    shrink_pi05()
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.policies.pi05.configuration_pi05 import PI05Config
    from lerobot.policies.pi05.modeling_pi05 import PI05Policy
    from lerobot.policies.pi05.processor_pi05 import make_pi05_pre_post_processors

    cameras = {"observation.images.base_0_rgb": (40, 48), "observation.images.left_wrist_0_rgb": (32, 32)}
    inp, outp = features(cameras, 6, 6)
    cfg = PI05Config(
        chunk_size=10,
        n_action_steps=10,
        num_inference_steps=10,
        image_resolution=(32, 32),
        tokenizer_max_length=64,
        input_features=inp,
        output_features=outp,
        device="cpu",
        dtype="float32",
        push_to_hub=False,
    )
    policy = PI05Policy(cfg)
    unit_gain_(policy, seed=11)
    ckpt = out / "pi05"
    policy.save_pretrained(ckpt)
    (ckpt / "sizes.json").write_text(json.dumps(PI05_SIZES, indent=1))
    pre, post = make_pi05_pre_post_processors(cfg, dataset_stats(6, 6, seed=12))
    pre.save_pretrained(ckpt)
    post.save_pretrained(ckpt)
    policy = PI05Policy.from_pretrained(ckpt).eval()
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(ckpt))
    observations = robot_observations(cameras, 6, seed=13)
    noise = torch.randn(
        (len(observations), cfg.chunk_size, cfg.max_action_dim), generator=torch.Generator().manual_seed(14)
    )
    result = run_golden(policy, pre, post, observations, noise)
    save_golden(
        out / "pi05_golden.npz",
        observations,
        noise,
        result,
        {"policy": "pi05", "params": sum(p.numel() for p in policy.parameters())},
    )
    print(
        f"pi05: {sum(p.numel() for p in policy.parameters()):,} params; actions {result['actions'].shape}, "
        f"|a| max {abs(result['actions']).max():.3f}"
    )


def build_dataset(out: Path) -> None:
    """Two short episodes, one camera, written by LeRobot's own dataset writer."""
    import numpy as np
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = out / "dataset"
    if root.exists():
        shutil.rmtree(root)
    names = [f"joint_{i}" for i in range(3)]
    feats = {
        "observation.images.top": {
            "dtype": "video",
            "shape": (48, 64, 3),
            "names": ["height", "width", "channels"],
        },
        "observation.state": {
            "dtype": "float32",
            "shape": (6,),
            "names": names + [f"{n}.vel" for n in names],
        },
        "action": {"dtype": "float32", "shape": (3,), "names": names},
    }
    ds = LeRobotDataset.create(
        repo_id="legato-fixtures/tiny", fps=10, features=feats, root=root, use_videos=True
    )
    rng = np.random.default_rng(21)
    frames = {}
    for ep, (task, n) in enumerate([("reach the red target", 12), ("reach the blue target", 9)]):
        for k in range(n):
            yy, xx = np.mgrid[0:48, 0:64]
            img = 127 + 90 * np.sin(xx[..., None] * 0.15 + yy[..., None] * 0.1 + k * 0.3 + ep + np.arange(3))
            img = img.astype(np.uint8)
            state = rng.normal(size=6).astype(np.float32)
            action = rng.normal(size=3).astype(np.float32)
            frames.setdefault("image", []).append(img)
            frames.setdefault("state", []).append(state)
            frames.setdefault("action", []).append(action)
            ds.add_frame(
                {"observation.images.top": img, "observation.state": state, "action": action, "task": task}
            )
        ds.save_episode()
    ds.finalize()
    np.savez_compressed(out / "dataset_frames.npz", **{k: np.stack(v) for k, v in frames.items()})
    print(f"dataset: {sum(1 for _ in root.rglob('*') if _.is_file())} files in {root}")


def build() -> None:
    out = OUT
    hf_home = ENV / "hf-home"
    os.environ.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    guard_torchvision()
    import torch

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    vlm = out / "vlm" / "smolvlm2-tiny"
    tok = out / "tokenizers" / "paligemma-tiny"
    for folder, build_fn, repo_id in (
        (vlm, build_smolvlm_folder, SMOLVLM_ID),
        (tok, build_paligemma_tokenizer, PALIGEMMA_TOKENIZER_ID),
    ):
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        build_fn(folder)
        install_in_hf_cache(folder, repo_id, hf_home)
    which = sys.argv[2:] or ["smolvla", "pi05", "dataset"]
    if "smolvla" in which:
        build_smolvla(out)
    if "pi05" in which:
        build_pi05(out)
    if "dataset" in which:
        build_dataset(out)


def check_dataset(root: Path) -> None:
    """LeRobot's own reader on a dataset legato wrote (`legato sim demos --format lerobot`):
    metadata, every frame decoded through its video backend, values equal to the data files."""
    import numpy as np
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("legato/check", root=root, video_backend="pyav")
    last = ds[len(ds) - 1]
    first = ds[0]
    print(
        f"LeRobot reads {root}: {ds.num_episodes} episodes, {len(ds)} frames, fps {ds.fps}, "
        f"features {sorted(ds.features)}; frame 0 task {first['task']!r}, image "
        f"{tuple(first['observation.images.top'].shape)}, "
        f"last state {np.round(last['observation.state'].numpy(), 3)}"
    )


def main() -> None:
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "setup":
        setup()
    elif cmd == "check-dataset":
        py = ENV / "bin" / "python"
        if Path(sys.prefix).resolve() != ENV.resolve():
            os.execv(str(py), [str(py), __file__, *sys.argv[1:]])
        guard_torchvision()
        check_dataset(Path(sys.argv[2]))
    elif cmd == "build":
        py = ENV / "bin" / "python"
        if Path(sys.prefix).resolve() != ENV.resolve():  # run inside the throwaway venv
            os.execv(str(py), [str(py), __file__, *sys.argv[1:]])
        build()
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()

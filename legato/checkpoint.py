"""Checkpoints: a folder with config.json and model.safetensors (no pickle anywhere).

config.json records everything needed to rebuild and run the policy: method, policy and
training configs (H, N, schedule shape, d_max, r_max), normalisation statistics, the task,
the data it was trained on, and training statistics. Training folders also hold
optimizer.safetensors and trainer.json for resuming. Folders are written to a temporary
sibling and renamed into place, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from edge.errors import OutputError
from edge.normalize import Normalizer
from edge.outputs import atomic_folder, check_target
from edge.policy import ModelSpec
from legato.config import PolicyConfig, TrainConfig, from_dict, to_dict
from legato.errors import CheckpointError
from legato.model import Policy
from sim.errors import SimError
from sim.task import TaskConfig
from sim.tasks import task_from_dict

FORMAT_VERSION = 1
TRAINING_ONLY = ("aux.",)  # parameters that inference never uses
CONFIG, WEIGHTS, OPTIMIZER, TRAINER, LOG, TRAIN_WEIGHTS = (
    "config.json",
    "model.safetensors",
    "optimizer.safetensors",
    "trainer.json",
    "log.jsonl",
    "train_weights.safetensors",  # a run with --ema-decay: the un-averaged weights --resume continues
)


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    policy_cfg: PolicyConfig
    train_cfg: TrainConfig
    norm: Normalizer
    task: TaskConfig  # or another registered task's config (sim.tasks)
    meta: dict[str, Any]  # data description, training statistics
    model: Policy

    @property
    def method(self) -> str:
        return self.train_cfg.method

    @property
    def spec(self) -> ModelSpec:
        """What the checkpoint fixes for inference, torch-free (the runtime's view)."""
        p, t = self.policy_cfg, self.train_cfg
        return ModelSpec(
            method=t.method, horizon=p.horizon, num_steps=p.num_steps, action_dim=p.action_dim,
            state_dim=p.state_dim, image_hw=tuple(p.image_hw), max_tokens=p.max_tokens, d_max=t.d_max,
            r_max=t.r_max, schedule_shape=t.schedule_shape, control_hz=self.task.arm.control_hz,
        )  # fmt: skip

    @property
    def train_seed(self) -> int | None:
        """The episode seed of the dataset it was trained on (None if unrecorded)."""
        seed = self.meta.get("data", {}).get("seed")
        return None if seed is None else int(seed)


# Checkpoints written before prefix augmentation existed were trained without it.
PRE_AUGMENTATION = {"p_no_prefix": 0.0, "prefix_noise": 0.0}
# ... and those written before the factored velocity head predicted the whole target.
PRE_FACTORED = {"velocity_form": "direct"}


def config_dict(policy_cfg, train_cfg, norm, task, meta) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "method": train_cfg.method,
        "policy": to_dict(policy_cfg),
        "train": to_dict(train_cfg),
        "schedule": {"shape": train_cfg.schedule_shape, "d_max": train_cfg.d_max, "r_max": train_cfg.r_max},
        "normalization": norm.to_dict(),
        "task": task.to_dict(),
        **meta,
    }


def save(
    path: str | Path,
    model: Policy,
    train_cfg: TrainConfig,
    norm: Normalizer,
    task: TaskConfig,
    meta: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    trainer_state: dict[str, Any] | None = None,
    log: str | None = None,
    replace: bool = True,
    flag: str = "--force",
    train_weights: Policy | None = None,
) -> None:
    """Write a checkpoint (or, with an optimizer, a training run: + optimizer, trainer state and
    log.jsonl, so the folder never exists without its log) in one atomic swap. `model` is what
    inference loads; train_weights, in a run whose `model` is a weight average, are the weights
    the optimizer steps."""
    cfg = config_dict(model.cfg, train_cfg, norm, task, meta)
    weights = _tensors(model)
    files: dict[str, Any] = {
        CONFIG: json.dumps(cfg, indent=1).encode(),
        WEIGHTS: lambda p: save_file(weights, str(p)),
    }
    if train_weights is not None:
        if optimizer is None:
            raise ValueError("train_weights belong to a training run: pass its optimizer too")
        raw = _tensors(train_weights)
        files[TRAIN_WEIGHTS] = lambda p: save_file(raw, str(p))
    if optimizer is not None:
        files[OPTIMIZER] = lambda p: save_file(flatten_optimizer(optimizer), str(p))
        files[TRAINER] = json.dumps(trainer_state or {}).encode()
        files[LOG] = (log or "").encode()
    kind = "run" if optimizer is not None else "checkpoint"
    also = ("checkpoint",) if kind == "run" else ()
    with atomic_folder(path, kind, replace=replace, flag=flag, also=also) as tmp:
        for name, content in files.items():
            if callable(content):
                content(tmp / name)
            else:
                (tmp / name).write_bytes(content)


def _tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def flatten_optimizer(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for idx, st in opt.state_dict()["state"].items():
        for name, val in st.items():
            out[f"{idx}.{name}"] = torch.as_tensor(val).detach().cpu().clone().contiguous()
    return out


def restore_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    flat = load_file(str(path))
    sd = opt.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, val in flat.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = val
    sd["state"] = state
    opt.load_state_dict(sd)


def read_config(path: Path) -> dict[str, Any]:
    cfg_path = path / CONFIG
    if not path.is_dir():
        raise CheckpointError(f"checkpoint not found: {path} (expected a folder with {CONFIG} and {WEIGHTS})")
    try:
        cfg = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} has no {CONFIG}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint {path}: {CONFIG} is corrupt ({e})") from None
    except OSError as e:
        raise CheckpointError(f"checkpoint {path}: cannot read {CONFIG} ({e.strerror})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(
            f"checkpoint {path}: {CONFIG} must hold a JSON object, not {type(cfg).__name__}"
        )
    for key, kind in (("policy", dict), ("train", dict), ("normalization", dict), ("task", dict)):
        if not isinstance(cfg.get(key), kind):
            raise CheckpointError(f"checkpoint {path}: {CONFIG} lacks the {key!r} object")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format {cfg.get('format_version')}, expected {FORMAT_VERSION}"
        )
    return cfg


def load(path: str | Path) -> Checkpoint:
    """Load a checkpoint; any problem raises CheckpointError with a one-line reason."""
    path = Path(path)
    cfg = read_config(path)
    try:
        policy_cfg = from_dict(PolicyConfig, {**PRE_FACTORED, **cfg["policy"]})
        train_cfg = from_dict(TrainConfig, {**PRE_AUGMENTATION, **cfg["train"]})
        norm = Normalizer.from_dict(cfg["normalization"])
        task = task_from_dict(cfg["task"])
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, SimError) as e:
        raise CheckpointError(f"checkpoint {path}: {CONFIG} is invalid ({type(e).__name__}: {e})") from None
    model = Policy(policy_cfg)
    load_weights(path, WEIGHTS, model)
    model.eval()
    meta = {k: v for k, v in cfg.items() if k not in ("policy", "train", "normalization", "task", "schedule")}
    return Checkpoint(path, policy_cfg, train_cfg, norm, task, meta, model)


def load_weights(path: Path, name: str, model: Policy) -> None:
    """Load the weights file `name` of checkpoint `path` into `model`, checked against it first:
    no missing (but training-only) or extra names, the config's shapes, finite values. Any problem
    raises CheckpointError with a one-line reason."""
    try:
        weights = load_file(str(path / name))
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} has no {name}") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: {name} is corrupt ({e})") from None
    expected = model.state_dict()
    # The auxiliary head is training-only: checkpoints trained without it load for inference.
    missing = sorted(k for k in set(expected) - set(weights) if not k.startswith(TRAINING_ONLY))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"checkpoint {path}: weights do not match the config (missing {missing[:3]}, extra {extra[:3]})"
        )
    for k, v in expected.items():
        if k not in weights:
            continue  # training-only, checked above
        if weights[k].shape != v.shape:
            raise CheckpointError(
                f"checkpoint {path}: {k} has shape {tuple(weights[k].shape)}, config implies {tuple(v.shape)}"
            )
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"checkpoint {path}: non-finite weights in {', '.join(bad[:3])}"
                              f"{' and more' if len(bad) > 3 else ''}")  # fmt: skip
    model.load_state_dict(weights, strict=False)


def publish(src: str | Path, dst: str | Path, replace: bool = False) -> Path:
    """Copy a checkpoint's config and weights (not the optimizer) into dst (publish_folder)."""

    def copy(src: Path, tmp: Path) -> None:
        for name in (CONFIG, WEIGHTS):
            shutil.copyfile(src / name, tmp / name)

    return publish_folder(src, dst, copy, load, replace)


def publish_folder(
    src: str | Path,
    dst: str | Path,
    copy: Callable[[Path, Path], None],
    verify: Callable[[Path], Any],
    replace: bool = False,
) -> Path:
    """`legato checkpoint publish`: ``copy(src, tmp)`` what inference needs into a new folder,
    verified by loading (``verify``) both the source and the copy before the swap. dst must be
    absent, empty, or (with `replace`) a checkpoint: never a folder of other files, a file or a
    link."""
    src, dst = Path(src), Path(dst)
    check_target(dst, "checkpoint", replace=replace, also=("run",))
    verify(src)
    if src.resolve() == dst.resolve():
        raise OutputError(f"{dst} is the checkpoint being published; choose another --to")
    with atomic_folder(dst, "checkpoint", replace=replace, also=("run",)) as tmp:
        copy(src, tmp)
        verify(tmp)  # the copy, not just the source
    return dst

"""A LeRobot policy folder read by its own file and key names, offline, without LeRobot.

The folder is what LeRobot's ``save_pretrained`` writes: config.json (the policy config, with
"type": "smolvla" | "pi05" | ...), model.safetensors (keys as LeRobot's module tree names
them), policy_preprocessor.json / policy_postprocessor.json (the processor steps) and each
normaliser's state file, a safetensors of flat ``<feature>.<stat>`` keys (e.g.
``observation.state.mean``). Hub ids in it (a VLM, a tokenizer) resolve the way transformers
resolves them offline: an existing local folder, or a snapshot in the Hugging Face cache under
HF_HOME (nothing is downloaded).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import LegatoError

VLA_EXTRA = "pip install 'legato-edge[vla]'"
CONFIG, WEIGHTS = "config.json", "model.safetensors"
PREPROCESSOR, POSTPROCESSOR = "policy_preprocessor.json", "policy_postprocessor.json"


class LeRobotCheckpointError(LegatoError):
    """A LeRobot policy folder that is missing, incomplete or inconsistent."""


def require_transformers() -> None:
    """One line naming the extra when transformers is missing."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise LegatoError(f"LeRobot policies need transformers: {VLA_EXTRA}") from None


def policy_type(path: str | Path) -> str | None:
    """LeRobot's policy "type" of a folder with config.json and its processor files, else None."""
    path = Path(path)
    try:
        cfg = json.loads((path / CONFIG).read_text())
    except (OSError, ValueError):
        return None
    kind = cfg.get("type") if isinstance(cfg, dict) else None
    return kind if isinstance(kind, str) and (path / PREPROCESSOR).is_file() else None


def is_lerobot_policy(path: str | Path) -> bool:
    """True for a folder whose config.json has LeRobot's policy "type" and its processor files."""
    return policy_type(path) is not None


@dataclass(frozen=True)
class Normalization:
    """One normaliser step: per feature its mode (MEAN_STD, MIN_MAX, QUANTILES, QUANTILE10,
    IDENTITY) and statistics as float32 arrays, with LeRobot's epsilon."""

    modes: dict[str, str]  # feature key -> mode
    stats: dict[str, dict[str, np.ndarray]]  # feature key -> stat name -> array
    eps: float

    def normalize(self, key: str, x: np.ndarray) -> np.ndarray:
        return self._apply(key, x, inverse=False)

    def unnormalize(self, key: str, x: np.ndarray) -> np.ndarray:
        return self._apply(key, x, inverse=True)

    def _apply(self, key: str, x: np.ndarray, inverse: bool) -> np.ndarray:
        """LeRobot's formulas (processor/normalize_processor.py), elementwise in float32."""
        mode = self.modes.get(key, "IDENTITY")
        s = self.stats.get(key, {})
        x = np.asarray(x, np.float32)
        eps = np.float32(self.eps)
        if mode == "IDENTITY" or not s:
            return x
        if mode == "MEAN_STD":
            mean, std = s["mean"], s["std"]
            return x * std + mean if inverse else (x - mean) / (std + eps)
        lo, hi = {"MIN_MAX": ("min", "max"), "QUANTILES": ("q01", "q99"), "QUANTILE10": ("q10", "q90")}[mode]
        denom = s[hi] - s[lo]
        denom = np.where(denom == 0, eps, denom).astype(np.float32)
        if inverse:
            return (x + 1) / 2 * denom + s[lo] if mode == "MIN_MAX" else (x + 1.0) * denom / 2.0 + s[lo]
        return 2 * (x - s[lo]) / denom - 1


@dataclass(frozen=True)
class PolicyFolder:
    path: Path
    config: dict[str, Any]
    preprocessor: list[dict[str, Any]]  # steps: registry_name, config, state_file
    postprocessor: list[dict[str, Any]]
    input_norm: Normalization
    output_norm: Normalization

    @property
    def type(self) -> str:
        return str(self.config["type"])

    def step(self, registry_name: str, which: str = "pre") -> dict[str, Any] | None:
        steps = self.preprocessor if which == "pre" else self.postprocessor
        return next((s for s in steps if s.get("registry_name") == registry_name), None)

    def features(self, kind: str) -> dict[str, tuple[int, ...]]:
        """Input features of one type (VISUAL, STATE, ...) in config order: key -> shape."""
        feats = self.config.get("input_features", {})
        return {k: tuple(v["shape"]) for k, v in feats.items() if v.get("type") == kind}

    @property
    def action_dim(self) -> int:
        return int(self.config["output_features"]["action"]["shape"][0])

    def weights(self) -> dict[str, Any]:
        """model.safetensors as torch tensors, by LeRobot's key names."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(self.path / WEIGHTS))
        except (OSError, SafetensorError) as e:
            raise LeRobotCheckpointError(f"{self.path / WEIGHTS}: unreadable ({e})") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise LeRobotCheckpointError(f"LeRobot policy folder {path.parent} has no {path.name}") from None
    except (OSError, ValueError) as e:
        raise LeRobotCheckpointError(f"{path}: unreadable ({e})") from None


def _normalization(folder: Path, steps: list[dict[str, Any]], name: str) -> Normalization:
    from safetensors.numpy import load_file

    step = next((s for s in steps if s.get("registry_name") == name), None)
    if step is None:
        return Normalization({}, {}, 1e-8)
    cfg = step.get("config", {})
    types = {k: v.get("type") for k, v in cfg.get("features", {}).items()}
    norm_map = cfg.get("norm_map", {})
    modes = {k: norm_map.get(t, "IDENTITY") for k, t in types.items()}
    stats: dict[str, dict[str, np.ndarray]] = {}
    if step.get("state_file"):
        try:
            flat = load_file(str(folder / step["state_file"]))
        except (OSError, ValueError) as e:
            raise LeRobotCheckpointError(f"{folder / step['state_file']}: unreadable ({e})") from None
        for key, arr in flat.items():
            feature, _, stat = key.rpartition(".")  # "observation.state.mean" -> feature, stat
            stats.setdefault(feature, {})[stat] = arr.astype(np.float32)
    for k, mode in modes.items():
        if mode != "IDENTITY" and k not in stats:
            raise LeRobotCheckpointError(f"{folder}: {name} needs {mode} statistics for {k}, none stored")
    return Normalization(modes, stats, float(cfg.get("eps", 1e-8)))


def read_policy_folder(path: str | Path) -> PolicyFolder:
    """The folder's config and processors (weights are read on demand); one-line errors."""
    path = Path(path)
    if not path.is_dir():
        raise LeRobotCheckpointError(f"LeRobot policy folder not found: {path}")
    config = _read_json(path / CONFIG)
    if not isinstance(config, dict) or not isinstance(config.get("type"), str):
        raise LeRobotCheckpointError(f'{path / CONFIG} is not a LeRobot policy config (no "type")')
    if not (path / WEIGHTS).is_file():
        raise LeRobotCheckpointError(f"LeRobot policy folder {path} has no {WEIGHTS}")
    pre = _read_json(path / PREPROCESSOR).get("steps", [])
    post = _read_json(path / POSTPROCESSOR).get("steps", [])
    return PolicyFolder(
        path,
        config,
        pre,
        post,
        _normalization(path, pre, "normalizer_processor"),
        _normalization(path, post, "unnormalizer_processor"),
    )


def resolve_hub_folder(repo_id: str, what: str) -> Path:
    """A hub id (or local path) -> a local folder, offline: the path itself, or the snapshot in
    the Hugging Face cache (HF_HOME); never a download."""
    local = Path(repo_id).expanduser()
    if local.is_dir():
        return local
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True, cache_dir=hub_cache()))
    except Exception:  # huggingface_hub raises several types for "not in the cache"
        raise LeRobotCheckpointError(
            f"{what} {repo_id!r} is not available offline: put its files in a local folder and name it, "
            "or in the Hugging Face cache under HF_HOME (with HF_HUB_OFFLINE=1)"
        ) from None


def hub_cache() -> Path:
    """The hub cache folder as huggingface_hub finds it, read now (it reads its variables once,
    at import): HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def load_tokenizer(repo_id: str):
    """The tokenizer LeRobot's tokenizer step names, through transformers' AutoTokenizer, offline."""
    require_transformers()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(resolve_hub_folder(repo_id, "tokenizer")))


def tokenize(tokenizer, texts: list[str], step_config: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """LeRobot's TokenizerProcessorStep call: (ids (b, l) int64, attention mask (b, l) bool)."""
    out = tokenizer(
        texts,
        max_length=int(step_config.get("max_length", 512)),
        truncation=bool(step_config.get("truncation", True)),
        padding=step_config.get("padding", "max_length"),
        padding_side=step_config.get("padding_side", "right"),
        return_tensors="np",
    )
    return out["input_ids"].astype(np.int64), out["attention_mask"].astype(bool)

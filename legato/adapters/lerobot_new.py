"""A fresh LeRobot SmolVLA policy folder from a config JSON and a dataset (random weights,
the dataset's features and statistics), written in LeRobot's own file layout so LeRobot's
`SmolVLAPolicy.from_pretrained` + `make_pre_post_processors` load it (with vlm_model_name
pointed at the folder's vlm/ subfolder).

The config file is a LeRobot SmolVLA config.json without input/output features; its
vlm_model_name is a hub id or a folder (relative to the config file) holding the VLM's
config.json and tokenizer/processor files (e.g. configs/smolvla-reduced.json and
configs/smolvlm2-reduced/).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from legato.adapters.lerobot_files import LeRobotCheckpointError, resolve_hub_folder
from legato.lerobot_dataset import LeRobotDataset

STATS = ("mean", "std", "min", "max", "q01", "q10", "q50", "q90", "q99")


def _features(ds: LeRobotDataset) -> tuple[dict[str, Any], dict[str, Any]]:
    inp = {k: {"type": "VISUAL", "shape": [3, *ds.shape(k)[:2]]} for k in ds.camera_keys}
    inp["observation.state"] = {"type": "STATE", "shape": list(ds.shape("observation.state"))}
    return inp, {"action": {"type": "ACTION", "shape": list(ds.shape("action"))}}


def _stats_file(path: Path, ds: LeRobotDataset, keys: tuple[str, ...]) -> None:
    from safetensors.numpy import save_file

    flat = {}
    for k in keys:
        for s in STATS:
            if s in ds.stats.get(k, {}):
                flat[f"{k}.{s}"] = np.asarray(ds.stats[k][s], np.float32).reshape(-1)
    save_file(flat, str(path))


def _processors(folder: Path, cfg: dict[str, Any], ds: LeRobotDataset) -> None:
    """policy_preprocessor.json / policy_postprocessor.json as LeRobot's SmolVLA factory writes them."""
    feats = {**cfg["input_features"], **cfg["output_features"]}
    norm = {"eps": 1e-8, "features": feats, "norm_map": cfg["normalization_mapping"]}
    pre = {
        "name": "policy_preprocessor",
        "steps": [
            {"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
            {"registry_name": "to_batch_processor", "config": {}},
            {"registry_name": "smolvla_new_line_processor", "config": {}},
            {
                "registry_name": "tokenizer_processor",
                "config": {
                    "max_length": cfg["tokenizer_max_length"],
                    "task_key": "task",
                    "padding_side": "right",
                    "padding": cfg["pad_language_to"],
                    "truncation": True,
                    "tokenizer_name": cfg["vlm_model_name"],
                },
            },
            {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}},
            {
                "registry_name": "normalizer_processor",
                "config": norm,
                "state_file": "policy_preprocessor_step_5_normalizer_processor.safetensors",
            },
        ],
    }
    post = {
        "name": "policy_postprocessor",
        "steps": [
            {
                "registry_name": "unnormalizer_processor",
                "config": {
                    "eps": 1e-8,
                    "features": cfg["output_features"],
                    "norm_map": cfg["normalization_mapping"],
                },
                "state_file": "policy_postprocessor_step_0_unnormalizer_processor.safetensors",
            },
            {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}},
        ],
    }
    (folder / "policy_preprocessor.json").write_text(json.dumps(pre, indent=2))
    (folder / "policy_postprocessor.json").write_text(json.dumps(post, indent=2))
    _stats_file(
        folder / "policy_preprocessor_step_5_normalizer_processor.safetensors",
        ds,
        ("observation.state", "action"),
    )
    _stats_file(folder / "policy_postprocessor_step_0_unnormalizer_processor.safetensors", ds, ("action",))


def unit_gain_(model: torch.nn.Module, seed: int) -> None:
    """A fresh model's initialisation: every matrix N(0, 1/fan_in), biases 0, norm scales 1.
    transformers' initializer_range (N(0, 0.02^2)) suits widths near 1,000; the reduced config is
    96-128 wide, and a SmolVLA trained from that init on the simulator never used its camera (its
    chunks were the same with a black image after 6,000 steps, 5 % success); drawn at unit gain
    it does (open-loop error 0.063 rad with its own image, 0.091 with another frame's) and
    succeeds 13-27 % after 6,000 steps (docs/lerobot.md, scripts/camera_check.py)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.fill_(1.0)


def fresh_policy_folder(
    kind: str, config_file: Path, ds: LeRobotDataset, folder: Path, seed: int = 0
) -> Path:
    """Write a randomly initialised policy folder for `ds` into `folder` (replaced) and return it."""
    if kind != "smolvla":
        raise LeRobotCheckpointError(
            f"a fresh {kind} from a config file is not supported: pass a LeRobot "
            f"{kind} policy folder as --init"
        )
    try:
        cfg = json.loads(config_file.read_text())
    except (OSError, ValueError) as e:
        raise LeRobotCheckpointError(f"{config_file}: unreadable policy config ({e})") from None
    if cfg.get("type") != "smolvla":
        raise LeRobotCheckpointError(f'{config_file}: "type" must be "smolvla", got {cfg.get("type")!r}')
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    vlm_src = config_file.parent / cfg["vlm_model_name"]
    vlm_src = vlm_src if vlm_src.is_dir() else resolve_hub_folder(cfg["vlm_model_name"], "vlm_model_name")
    shutil.copytree(vlm_src, folder / "vlm")
    cfg = {**cfg, "vlm_model_name": "vlm"}
    cfg["input_features"], cfg["output_features"] = _features(ds)
    (folder / "config.json").write_text(json.dumps(cfg, indent=4))
    _processors(folder, cfg, ds)
    from transformers import AutoConfig

    from legato.adapters.smolvla import SmolVLA, spec_from_config

    torch.manual_seed(seed)
    spec = spec_from_config(cfg, cfg["output_features"]["action"]["shape"][0])
    model = SmolVLA(
        spec,
        AutoConfig.from_pretrained(str(folder / "vlm")),
        int(cfg["num_vlm_layers"]),
        int(cfg["num_expert_layers"]),
        float(cfg["expert_width_multiplier"]),
    )
    unit_gain_(model, seed)
    from safetensors.torch import save_file

    from legato.adapters import smolvla

    weights = {}
    for k, v in model.state_dict().items():
        for src, dst in smolvla.KEY_MAP:
            if k.startswith(dst):
                weights[src + k[len(dst) :]] = v.contiguous()
                break
    # LeRobot's module also holds the VLM's (unused) language head: tie it to the embeddings.
    weights["model.vlm_with_expert.vlm.lm_head.weight"] = (
        model.vlm.text_model.embed_tokens.weight.detach().clone()
    )
    save_file(weights, str(folder / "model.safetensors"))
    return folder

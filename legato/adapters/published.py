"""Published sizes of LeRobot's SmolVLA (SmolVLM2-500M-Video-Instruct, 16 VLM layers, expert at
0.75x) and pi0.5 (PaliGemma 3B: SigLIP So400m + Gemma 2B, Gemma 300M expert), for full-size
random-weight builds (never downloaded) and for the memory table.

Parameter counts come from building the modules on torch's meta device (no memory); weight
bytes per precision are what the graphs carry: fp32 4 B, fp16 2 B, int8 1 B per weight of a
MatMul/Gemm plus float32 per-channel scales (embeddings and norms stay fp32 in int8 graphs).
"""

from __future__ import annotations

from typing import Any

# SmolVLM2-500M-Video-Instruct's config (the hub's config.json), the fields SmolVLA reads.
SMOLVLM2_500M = {
    "vision": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 512,
        "patch_size": 16,
        "model_type": "smolvlm_vision",
    },
    "text": {
        "vocab_size": 49280,
        "hidden_size": 960,
        "intermediate_size": 2560,
        "num_hidden_layers": 32,
        "num_attention_heads": 15,
        "num_key_value_heads": 5,
        "head_dim": 64,
        "rms_norm_eps": 1e-5,
        "rope_theta": 100000.0,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": True,
    },
    "scale_factor": 4,
}
SMOLVLA_BASE = {
    "num_vlm_layers": 16,
    "num_expert_layers": -1,
    "expert_width_multiplier": 0.75,
    "self_attn_every_n_layers": 2,
    "chunk_size": 50,
    "num_steps": 10,
    "max_action_dim": 32,
    "max_state_dim": 32,
    "tokenizer_max_length": 48,
    "resize_imgs_with_padding": [512, 512],
    "min_period": 4e-3,
    "max_period": 4.0,
}


def smolvlm_config(sizes: dict[str, Any] = SMOLVLM2_500M):
    from transformers import LlamaConfig, SmolVLMConfig

    text = LlamaConfig(**sizes["text"])
    return SmolVLMConfig(
        vision_config=dict(sizes["vision"]), text_config=text.to_dict(), scale_factor=sizes["scale_factor"]
    )


def smolvla_config(
    cameras: int = 1, state_dim: int = 6, action_dim: int = 6, hw=(480, 640)
) -> dict[str, Any]:
    """A LeRobot SmolVLA config.json (SO-101-like features) at the published sizes."""
    feats = {f"observation.images.cam{i}": {"type": "VISUAL", "shape": [3, *hw]} for i in range(cameras)}
    feats["observation.state"] = {"type": "STATE", "shape": [state_dim]}
    return {
        "type": "smolvla",
        **SMOLVLA_BASE,
        "input_features": feats,
        "output_features": {"action": {"type": "ACTION", "shape": [action_dim]}},
        "empty_cameras": 0,
    }


def smolvla_module(cfg: dict[str, Any] | None = None, meta: bool = False):
    """The full-size SmolVLA module (random init, or on the meta device: shapes only)."""
    import torch

    from legato.adapters.smolvla import SmolVLA, spec_from_config

    cfg = cfg or smolvla_config()
    ctx = torch.device("meta") if meta else torch.device("cpu")
    with ctx:
        spec = spec_from_config(cfg, cfg["output_features"]["action"]["shape"][0])
        return SmolVLA(
            spec,
            smolvlm_config(),
            cfg["num_vlm_layers"],
            cfg["num_expert_layers"],
            cfg["expert_width_multiplier"],
        )


def pi05_module(meta: bool = True):
    import torch

    from legato.adapters.pi05 import Pi05, Pi05Spec, published_sizes

    spec = Pi05Spec(
        chunk=50,
        num_steps=10,
        max_action_dim=32,
        action_dim=6,
        state_dim=6,
        cameras=(("observation.images.base_0_rgb", (224, 224)),),
        image_hw=(224, 224),
        min_period=4e-3,
        max_period=4.0,
    )
    with torch.device("meta") if meta else torch.device("cpu"):
        return Pi05(spec, published_sizes({}))


def parameter_groups(model) -> dict[str, dict[str, int]]:
    """Parameters per graph part: prefix (vision + VLM layers + embeddings + projections that
    feed the prefix) and step (the expert and the action/time projections); matrices counted
    apart from vectors (only matrices shrink under int8)."""
    groups: dict[str, dict[str, int]] = {}
    prefix_roots = ("vlm.", "vision_tower.", "projector.", "state_proj.")
    for name, p in model.named_parameters():
        part = "prefix" if name.startswith(prefix_roots) else "step"
        if name.startswith("vlm.") and "embed_tokens" in name:
            part = "embedding"  # a lookup: only the rows of the prompt's tokens are read
        g = groups.setdefault(part, {"matrix": 0, "vector": 0, "rows": 0})
        g["matrix" if p.ndim >= 2 else "vector"] += p.numel()
        if p.ndim >= 2:
            g["rows"] += p.shape[0]
    return groups


def weight_bytes(groups: dict[str, dict[str, int]], precision: str) -> dict[str, int]:
    """Bytes of weights per part in a graph of this precision."""
    out = {}
    for part, g in groups.items():
        if precision == "fp32" or part == "embedding":
            out[part] = (
                4 * (g["matrix"] + g["vector"]) if precision != "fp16" else 2 * (g["matrix"] + g["vector"])
            )
        elif precision == "fp16":
            out[part] = 2 * (g["matrix"] + g["vector"])
        else:  # int8 weights + fp32 per-output-channel scales, vectors fp32
            out[part] = g["matrix"] + 4 * g["rows"] + 4 * g["vector"]
    return out

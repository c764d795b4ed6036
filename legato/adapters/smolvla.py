"""LeRobot SmolVLA on the workstation: transformers' SmolVLM (vision tower, connector, SmolLM2
text layers) and Llama layers for the action expert, with the glue written here, loading a
LeRobot SmolVLA folder by its own key names (no LeRobot import, no network).

The split is the device's: ``prefix`` (observation -> every VLM layer's post-RoPE keys and
values, (b, L, p, kv_heads, head_dim) each, and the prefix padding mask (b, p)) runs once per
chunk; ``velocity`` (x, t, kv, mask -> v) runs N times. Time is LeRobot's: t = 1 is noise,
x_t = t * noise + (1 - t) * a, Euler from t = 1 to 0 with dt = -1 / N; action tokens are padded
to max_action_dim (32). What decides equality with LeRobot (field-notes.md, 2026-12): frames
uint8 HWC -> / 255 -> CHW -> resize-with-pad (bilinear, no antialias, zeros top/left) -> x2 - 1;
the task + "\\n" tokenized without special tokens added by the processor; image and language
embeddings scaled by sqrt(width); state (s - mean) / (std + eps); actions a * std + mean;
LeRobot's own RoPE (max wavelength 10,000) on queries and keys; the time embedding in float64.

Optional Legato input: an omega channel per action token. LeRobot's checkpoint has no such
input, so it goes into one of the padded action dimensions (``omega_dim``, the last one by
default), which the checkpoint's action_in_proj already reads; a plain LeRobot checkpoint loads
and samples unchanged with omega = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from legato.adapters.lerobot_files import (
    LeRobotCheckpointError,
    PolicyFolder,
    load_tokenizer,
    read_policy_folder,
    require_transformers,
    resolve_hub_folder,
    tokenize,
)

STATE, ACTION = "observation.state", "action"
TOKENS, TOKEN_MASK = "observation.language.tokens", "observation.language.attention_mask"


# ---------------------------------------------------------------- pure pieces (shapes in docs)
def rope(x: torch.Tensor, positions: torch.Tensor, max_wavelength: float = 10_000.0) -> torch.Tensor:
    """Rotary embedding as LeRobot's SmolVLA applies it: x (b, l, heads, d), positions (b, l).
    Halves rotated with a concatenation (no in-place writes: exports without ScatterND)."""
    d_half = x.shape[-1] // 2
    dtype = x.dtype
    x = x.float()
    freq_exponents = (2.0 / x.shape[-1]) * torch.arange(d_half, dtype=torch.float32, device=x.device)
    timescale = max_wavelength**freq_exponents
    radians = (positions[..., None].float() / timescale[None, None, :])[..., None, :]  # (b, l, 1, d/2)
    sin, cos = torch.sin(radians), torch.cos(radians)
    x1, x2 = x[..., :d_half], x[..., d_half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).to(dtype)


def time_embedding(t: torch.Tensor, dim: int, min_period: float, max_period: float) -> torch.Tensor:
    """openpi's sine-cosine embedding of flow time t (b,) -> (b, dim), computed in float64."""
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    ang = (1.0 / period * 2 * math.pi)[None, :] * t[:, None].double()
    return torch.cat([torch.sin(ang), torch.cos(ang)], 1)


def attention_2d(pad: torch.Tensor, causal_ids: torch.Tensor) -> torch.Tensor:
    """big_vision's mask: token i sees valid token j iff cumsum(ar)_j <= cumsum(ar)_i.
    pad (b, n) bool, causal_ids (b, n) the ar flags -> (b, n, n) bool."""
    c = torch.cumsum(causal_ids, 1)
    return (c[:, None, :] <= c[:, :, None]) & (pad[:, None, :] & pad[:, :, None])


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, kv_groups: int
) -> torch.Tensor:
    """Eager attention in float32 with GQA. q (b, n, h, d), k/v (b, m, h / groups, d),
    mask (b, n, m) bool -> (b, n, h * d). Masked logits get finfo.min, as in LeRobot."""
    b, n, h, d = q.shape
    k = k.repeat_interleave(kv_groups, 2) if kv_groups > 1 else k
    v = v.repeat_interleave(kv_groups, 2) if kv_groups > 1 else v
    logits = torch.matmul(q.float().transpose(1, 2), k.float().permute(0, 2, 3, 1)) * d**-0.5  # (b, h, n, m)
    logits = torch.where(mask[:, None], logits, torch.finfo(torch.float32).min)
    probs = torch.softmax(logits, -1).to(v.dtype)
    return torch.matmul(probs, v.transpose(1, 2)).transpose(1, 2).reshape(b, n, h * d)


def resize_with_pad(img: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """SmolVLA's resize: img (b, c, H, W) float -> (b, c, height, width), aspect kept, bilinear
    (align_corners=False, no antialias), zeros padded on the left and top."""
    h, w = img.shape[2:]
    if (h, w) == (height, width):
        return img
    ratio = max(w / width, h / height)
    rh, rw = int(h / ratio), int(w / ratio)
    out = F.interpolate(img, size=(rh, rw), mode="bilinear", align_corners=False)
    return F.pad(out, (max(0, width - rw), 0, max(0, height - rh), 0), value=0.0)


def frames_to_pixels(frame: np.ndarray | torch.Tensor, side_hw: tuple[int, int]) -> torch.Tensor:
    """A camera frame uint8 (b, H, W, 3) -> SigLIP input (b, 3, h, w) in [-1, 1]."""
    x = torch.as_tensor(np.asarray(frame)).float() / 255
    x = x.permute(0, 3, 1, 2)
    return resize_with_pad(x, *side_hw) * 2.0 - 1.0


# ---------------------------------------------------------------- the model
@dataclass(frozen=True)
class SmolVLASpec:
    chunk: int  # H
    num_steps: int  # N
    max_action_dim: int
    max_state_dim: int
    action_dim: int
    state_dim: int
    cameras: tuple[tuple[str, tuple[int, int]], ...]  # (feature key, (H, W)) in config order
    empty_cameras: int
    image_hw: tuple[int, int]  # SigLIP input (height, width)
    self_attn_every_n_layers: int
    min_period: float
    max_period: float


class SmolVLA(nn.Module):
    """Parameters named as in LeRobot's VLAFlowMatching without the ``model.`` and
    ``vlm_with_expert.`` prefixes (see ``KEY_MAP``)."""

    def __init__(
        self,
        spec: SmolVLASpec,
        vlm_config: Any,
        num_vlm_layers: int,
        num_expert_layers: int,
        expert_width_multiplier: float,
    ) -> None:
        super().__init__()
        require_transformers()
        import copy

        from transformers import AutoModel, SmolVLMModel

        self.spec = spec
        vlm_config = copy.deepcopy(vlm_config)
        if num_vlm_layers > 0:
            vlm_config.text_config.num_hidden_layers = num_vlm_layers  # LeRobot keeps the first L
        text = vlm_config.text_config
        self.vlm = SmolVLMModel(vlm_config)
        self.vlm.text_model.embed_tokens.padding_idx = None  # lookups only; keeps the key set
        expert_cfg = copy.deepcopy(text)
        expert_cfg.hidden_size = int(text.hidden_size * expert_width_multiplier)
        expert_cfg.intermediate_size = _intermediate_size(expert_cfg.hidden_size)
        expert_cfg.num_hidden_layers = num_expert_layers if num_expert_layers > 0 else text.num_hidden_layers
        self.expert = AutoModel.from_config(expert_cfg)
        self.expert.embed_tokens = None
        kv_in = text.num_key_value_heads * text.head_dim
        kv_out = expert_cfg.num_key_value_heads * expert_cfg.head_dim
        for i, layer in enumerate(self.expert.layers):
            if not self._is_self_attn(i):
                bias = bool(getattr(expert_cfg, "attention_bias", False))
                layer.self_attn.k_proj = nn.Linear(kv_in, kv_out, bias=bias)
                layer.self_attn.v_proj = nn.Linear(kv_in, kv_out, bias=bias)
        self.width, self.expert_width = text.hidden_size, expert_cfg.hidden_size
        self.prefix_width = self.width  # prefix_hidden's last dimension
        self.heads, self.kv_heads, self.head_dim = (
            text.num_attention_heads,
            text.num_key_value_heads,
            text.head_dim,
        )
        self.num_layers = text.num_hidden_layers
        self.state_proj = nn.Linear(spec.max_state_dim, self.width)
        self.action_in_proj = nn.Linear(spec.max_action_dim, self.expert_width)
        self.action_out_proj = nn.Linear(self.expert_width, spec.max_action_dim)
        self.action_time_mlp_in = nn.Linear(2 * self.expert_width, self.expert_width)
        self.action_time_mlp_out = nn.Linear(self.expert_width, self.expert_width)

    def _is_self_attn(self, layer_idx: int) -> bool:
        n = self.spec.self_attn_every_n_layers
        return n > 0 and layer_idx % n == 0

    def expert_layer(self, vlm_idx: int) -> nn.Module | None:
        """LeRobot's get_model_layers: an expert layer every num_vlm / num_expert VLM layers."""
        every = self.num_layers // len(self.expert.layers)
        if every > 0 and vlm_idx > 0 and vlm_idx % every != 0:
            return None
        return self.expert.layers[vlm_idx // every if every > 0 else vlm_idx]

    def vision(self, pixels: torch.Tensor) -> torch.Tensor:
        """SigLIP on full images (b, 3, S, S) -> (b, patches, vision width). transformers' own
        layers; the embedding's position ids are arange(patches), which is what its bucketized
        ids equal when every patch is valid (no data-dependent ops: exports with any exporter)."""
        vm = self.vlm.vision_model
        emb = vm.embeddings
        h = emb.patch_embedding(pixels).flatten(2).transpose(1, 2)
        h = h + emb.position_embedding.weight[None, : h.shape[1]]
        for layer in vm.encoder.layers:
            h = layer(h, attention_mask=None)
        return vm.post_layernorm(h)

    # -- prefix: once per chunk
    def embed_prefix(
        self,
        pixels: list[torch.Tensor],
        img_masks: list[torch.Tensor],
        tokens: torch.Tensor,
        token_mask: torch.Tensor,
        state: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """pixels [(b, 3, h, w)] in [-1, 1], img_masks [(b,)] bool, tokens (b, l), token_mask (b, l) bool,
        state (b, max_state_dim) normalised -> embeddings (b, p, width), pad (b, p), ar flags (b, p)."""
        embs, pads = [], []
        for img, m in zip(pixels, img_masks, strict=True):
            e = self.vlm.connector(self.vision(img))
            embs.append(e * torch.tensor(e.shape[-1] ** 0.5, dtype=e.dtype))
            pads.append(m[:, None].expand(e.shape[0], e.shape[1]))
        lang = self.vlm.text_model.get_input_embeddings()(tokens)
        embs.append(lang * math.sqrt(lang.shape[-1]))
        pads.append(token_mask)
        embs.append(self.state_proj(state)[:, None])
        pads.append(torch.ones_like(token_mask[:, :1]))
        emb, pad = torch.cat(embs, 1), torch.cat(pads, 1)
        ar = torch.zeros_like(pad, dtype=torch.int64)
        ar[:, -1] = 1  # image and language do not attend to the state token
        return emb, pad, ar

    def prefix(self, *inputs: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The K/V cache of :meth:`prefix_hidden` (same inputs): keys, values, pad mask."""
        return self.prefix_hidden(*inputs)[:3]

    def prefix_hidden(
        self,
        pixels: list[torch.Tensor],
        img_masks: list[torch.Tensor],
        tokens: torch.Tensor,
        token_mask: torch.Tensor,
        state: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> keys, values (b, L, p, kv_heads, head_dim) after RoPE, the prefix pad mask (b, p), and
        the last layer's output (b, p, width), which only training's auxiliary probe reads
        (legato.adapters.lerobot_train.AuxProbe)."""
        h, pad, ar = self.embed_prefix(pixels, img_masks, tokens, token_mask, state)
        mask = attention_2d(pad, ar)
        pos = torch.cumsum(pad.long(), 1) - 1
        keys, values = [], []
        for layer in self.vlm.text_model.layers[: self.num_layers]:
            x = layer.input_layernorm(h)
            shape = (*x.shape[:-1], -1, self.head_dim)
            q = rope(layer.self_attn.q_proj(x).view(shape), pos)
            k = rope(layer.self_attn.k_proj(x).view(shape), pos)
            v = layer.self_attn.v_proj(x).view(shape)
            keys.append(k)
            values.append(v)
            h = _residual_block(layer, h, attend(q, k, v, mask, self.heads // self.kv_heads))
        return torch.stack(keys, 1), torch.stack(values, 1), pad, h

    # -- velocity: N times per chunk
    def velocity(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        prefix_pad: torch.Tensor,
    ) -> torch.Tensor:
        """x (b, H, max_action_dim) at LeRobot time t (b,) -> velocity (b, H, max_action_dim)."""
        b, n = x.shape[:2]
        a = self.action_in_proj(x)
        temb = time_embedding(t, self.expert_width, self.spec.min_period, self.spec.max_period).to(a.dtype)
        h = self.action_time_mlp_in(torch.cat([a, temb[:, None].expand_as(a)], 2))
        h = self.action_time_mlp_out(F.silu(h))
        causal = torch.tril(torch.ones(n, n, dtype=torch.bool, device=x.device))[None].expand(b, n, n)
        self_mask = torch.cat([prefix_pad[:, None, :].expand(b, n, prefix_pad.shape[1]), causal], 2)
        cross_mask = prefix_pad[:, None, :].expand(b, n, prefix_pad.shape[1])
        steps = torch.arange(n, device=x.device)[None].expand(b, n)
        pos_self = prefix_pad.long().sum(1, keepdim=True) + steps
        groups = self.heads // self.kv_heads
        for i in range(self.num_layers):
            layer = self.expert_layer(i)
            if layer is None:
                continue
            y = layer.input_layernorm(h)
            shape = (b, n, -1, self.head_dim)
            q = layer.self_attn.q_proj(y).view(shape)
            if self._is_self_attn(i):
                k = rope(layer.self_attn.k_proj(y).view(shape), pos_self)
                v = layer.self_attn.v_proj(y).view(shape)
                k, v = torch.cat([keys[:, i], k], 1), torch.cat([values[:, i], v], 1)
                out = attend(rope(q, pos_self), k, v, self_mask, groups)
            else:
                kp, vp = keys[:, i].flatten(2), values[:, i].flatten(2)  # (b, p, kv_heads * head_dim)
                k = layer.self_attn.k_proj(kp).view(b, kp.shape[1], -1, self.head_dim)
                v = layer.self_attn.v_proj(vp).view(b, vp.shape[1], -1, self.head_dim)
                out = attend(rope(q, steps), k, v, cross_mask, groups)
            h = _residual_block(layer, h, out)
        return self.action_out_proj(self.expert.norm(h).float())

    def sample(
        self, x: torch.Tensor, prefix: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """LeRobot's Euler loop from noise x (b, H, max_action_dim) at t = 1 to t = 0."""
        dt = -1.0 / self.spec.num_steps
        for k in range(self.spec.num_steps):
            t = torch.full((x.shape[0],), 1.0 + k * dt, dtype=torch.float32)
            x = x + dt * self.velocity(x, t, *prefix)
        return x


def _residual_block(layer: nn.Module, h: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
    """o_proj + residual, post-attention norm, MLP + residual (a Llama decoder layer's tail)."""
    h = h + layer.self_attn.o_proj(att.to(layer.self_attn.o_proj.weight.dtype))
    return h + layer.mlp(layer.post_attention_layernorm(h))


def _intermediate_size(hidden: int, ffn_multiplier: int = 4, multiple_of: int = 256) -> int:
    """LeRobot's get_intermediate_size for the expert's MLP."""
    h = int(ffn_multiplier * int(2 * hidden / 3))
    return multiple_of * ((h + multiple_of - 1) // multiple_of)


KEY_MAP = (  # LeRobot checkpoint prefix -> this module's prefix
    ("model.vlm_with_expert.vlm.model.", "vlm."),
    ("model.vlm_with_expert.lm_expert.", "expert."),
    ("model.", ""),
)
UNUSED = ("model.vlm_with_expert.vlm.lm_head.",)  # the VLM's language head: never on this path


def map_keys(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in weights.items():
        if key.startswith(UNUSED):
            continue
        for src, dst in KEY_MAP:
            if key.startswith(src):
                out[dst + key[len(src) :]] = value
                break
    return out


def spec_from_config(c: dict[str, Any], action_dim: int) -> SmolVLASpec:
    """The shapes a LeRobot SmolVLA config fixes (config.json's fields, LeRobot's names)."""
    feats = c.get("input_features", {})
    cams = [(k, v["shape"]) for k, v in feats.items() if v.get("type") == "VISUAL"]
    state = next((v["shape"] for k, v in feats.items() if v.get("type") == "STATE"), [0])
    w, h = c.get("resize_imgs_with_padding") or (cams[0][1][2], cams[0][1][1])
    return SmolVLASpec(
        chunk=int(c["chunk_size"]),
        num_steps=int(c["num_steps"]),
        max_action_dim=int(c["max_action_dim"]),
        max_state_dim=int(c["max_state_dim"]),
        action_dim=int(action_dim),
        state_dim=int(state[0]),
        cameras=tuple((k, (int(s[1]), int(s[2]))) for k, s in cams),
        empty_cameras=int(c.get("empty_cameras", 0)),
        image_hw=(int(h), int(w)),
        self_attn_every_n_layers=int(c["self_attn_every_n_layers"]),
        min_period=float(c["min_period"]),
        max_period=float(c["max_period"]),
    )


def vlm_folder(folder: PolicyFolder) -> Path:
    """vlm_model_name as a folder: a path (absolute, or relative to the policy folder) or a hub id
    in the offline cache."""
    name = folder.config["vlm_model_name"]
    inside = folder.path / name
    return inside if inside.is_dir() else resolve_hub_folder(name, "SmolVLA's VLM (vlm_model_name)")


# ---------------------------------------------------------------- the policy (pre/post-processing)
class SmolVLAPolicy:
    """A LeRobot SmolVLA folder as a chunk sampler in the robot's units."""

    def __init__(
        self, folder: PolicyFolder, model: SmolVLA, tokenizer: Any, omega_dim: int | None = None
    ) -> None:
        self.folder, self.model, self.tokenizer = folder, model, tokenizer
        self.spec = model.spec
        self.tokenizer_step = folder.step("tokenizer_processor") or {}
        self.omega_dim = omega_dim

    @classmethod
    def load(cls, path: str | Path) -> SmolVLAPolicy:
        require_transformers()
        from transformers import AutoConfig

        folder = read_policy_folder(path)
        if folder.type != "smolvla":
            raise LeRobotCheckpointError(f"{folder.path} is a LeRobot {folder.type!r} policy, not smolvla")
        c = folder.config
        vlm_dir = vlm_folder(folder)
        vlm_config = AutoConfig.from_pretrained(str(vlm_dir))
        spec = spec_from_config(c, folder.action_dim)
        if c.get("attention_mode", "cross_attn") != "cross_attn" or c.get("add_image_special_tokens"):
            raise LeRobotCheckpointError(
                f"{folder.path}: only SmolVLA's default cross_attn mode without image "
                "special tokens is supported"
            )
        model = SmolVLA(
            spec,
            vlm_config,
            int(c["num_vlm_layers"]),
            int(c["num_expert_layers"]),
            float(c["expert_width_multiplier"]),
        )
        check_and_load(model, map_keys(folder.weights()), folder)
        tok_step = folder.step("tokenizer_processor") or {}
        tok_name = tok_step.get("config", {}).get("tokenizer_name", c["vlm_model_name"])
        tokenizer = load_tokenizer(str(vlm_dir) if tok_name == c["vlm_model_name"] else tok_name)
        return cls(folder, model.eval(), tokenizer)

    # -- pre-processing, as LeRobot's processors do it
    def language(self, tasks: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        texts = [t if t.endswith("\n") else t + "\n" for t in tasks]  # NewLineTaskProcessorStep
        ids, mask = tokenize(self.tokenizer, texts, self.tokenizer_step.get("config", {}))
        return torch.from_numpy(ids), torch.from_numpy(mask)

    def state(self, state: np.ndarray) -> torch.Tensor:
        """(b, state_dim) raw -> (b, max_state_dim) normalised, zero-padded."""
        s = self.folder.input_norm.normalize(STATE, np.asarray(state, np.float32))
        return F.pad(torch.from_numpy(s), (0, self.spec.max_state_dim - s.shape[-1]))

    def images(self, frames: dict[str, np.ndarray]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        missing = [k for k, _ in self.spec.cameras if k not in frames]
        present = [k for k, _ in self.spec.cameras if k in frames]
        if not present or len(missing) > self.spec.empty_cameras:
            raise LeRobotCheckpointError(f"observation lacks camera(s) {', '.join(missing)}")
        pixels = [frames_to_pixels(frames[k], self.spec.image_hw) for k in present]
        b = pixels[0].shape[0]
        masks = [torch.ones(b, dtype=torch.bool) for _ in present]
        for _ in missing:  # LeRobot's empty cameras: an all -1 image, masked out
            pixels.append(-torch.ones_like(pixels[0]))
            masks.append(torch.zeros(b, dtype=torch.bool))
        return pixels, masks

    def prefix_inputs(self, obs: dict[str, Any]) -> tuple:
        """obs: LeRobot feature keys -> batched arrays (frames uint8 (b, H, W, 3), state (b, s)),
        and "task" (list of b strings) or the token ids / mask."""
        pixels, masks = self.images({k: v for k, v in obs.items() if k.startswith("observation.images.")})
        if TOKENS in obs:
            tokens = torch.as_tensor(np.asarray(obs[TOKENS]), dtype=torch.int64)
            tmask = torch.as_tensor(np.asarray(obs[TOKEN_MASK]), dtype=torch.bool)
        else:
            tokens, tmask = self.language(list(obs["task"]))
        return pixels, masks, tokens, tmask, self.state(obs[STATE])

    @torch.no_grad()
    def sample_actions(self, obs: dict[str, Any], noise: torch.Tensor) -> np.ndarray:
        """One chunk per observation in the robot's units: (b, H, action_dim), like LeRobot's
        pre-processor -> sample_actions -> post-processor. noise (b, H, max_action_dim)."""
        prefix = self.model.prefix(*self.prefix_inputs(obs))
        x = self.model.sample(noise.float(), prefix)[..., : self.spec.action_dim]
        return self.folder.output_norm.unnormalize(ACTION, x.numpy())


def check_and_load(model: nn.Module, weights: dict[str, torch.Tensor], folder: PolicyFolder) -> None:
    """Mapped checkpoint weights into the module, strictly; one line on a mismatch."""
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    extra = sorted(set(weights) - set(own))
    if missing or extra:
        raise LeRobotCheckpointError(
            f"{folder.path}: weights do not match the config (missing {missing[:3]}, unexpected {extra[:3]})"
        )
    bad = [k for k, v in weights.items() if v.shape != own[k].shape]
    if bad:
        k = bad[0]
        raise LeRobotCheckpointError(
            f"{folder.path}: {k} has shape {tuple(weights[k].shape)}, "
            f"the config implies {tuple(own[k].shape)}"
        )
    model.load_state_dict(weights, strict=True)

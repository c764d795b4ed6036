"""LeRobot pi0.5 on the workstation: transformers' SigLIP vision tower, PaliGemma projector and
Gemma decoder layers for the backbone; the action expert's Gemma layers with adaptive RMSNorm
(AdaRMS, conditioned on the flow time) and gated residuals, and the glue, written here. Loads a
LeRobot pi0.5 folder by its own key names, no LeRobot import, no network.

Split as the device runs it: ``prefix`` (images + prompt -> every Gemma layer's post-RoPE keys and
values (b, L, p, kv_heads, head_dim) and the prefix pad mask) once per chunk; ``velocity``
(x, t, kv, mask -> v) N times. LeRobot's time convention (t = 1 noise, Euler 1 -> 0, dt = -1/N).
pi0.5 has no state input to the network: the quantile-normalised state is discretised into 256
bins and written into the prompt ("Task: ..., State: 12 200 ...;\\nAction: "), tokenised by the
PaliGemma tokenizer with BOS, padded to tokenizer_max_length. Images: /255, resize-with-pad
centred (openpi), clamped to [0, 1], x2 - 1.

Sizes: LeRobot builds pi0.5's sizes in code from the variant names (gemma_2b, gemma_300m,
SigLIP So400m at image_resolution); a folder may override them with a ``sizes.json`` (the golden
fixtures' reduced model does: tests/fixtures/lerobot/pi05).
"""

from __future__ import annotations

import json
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
    tokenize,
)
from legato.adapters.smolvla import ACTION, STATE, TOKEN_MASK, TOKENS, time_embedding

OPENPI_MASK_VALUE = -2.3819763e38  # lerobot.utils.constants.OPENPI_ATTENTION_MASK_VALUE
GEMMA_VARIANTS = {  # openpi gemma.py: width, depth, mlp_dim, num_heads, num_kv_heads, head_dim
    "gemma_300m": {
        "width": 1024,
        "depth": 18,
        "mlp_dim": 4096,
        "num_heads": 8,
        "num_kv_heads": 1,
        "head_dim": 256,
    },
    "gemma_2b": {
        "width": 2048,
        "depth": 18,
        "mlp_dim": 16384,
        "num_heads": 8,
        "num_kv_heads": 1,
        "head_dim": 256,
    },
}
VOCAB = 257152


def published_sizes(config: dict[str, Any]) -> dict[str, Any]:
    """The sizes LeRobot's PaliGemmaWithExpertModel builds for a pi0.5 config."""
    return {
        "vlm": GEMMA_VARIANTS[config.get("paligemma_variant", "gemma_2b")],
        "expert": GEMMA_VARIANTS[config.get("action_expert_variant", "gemma_300m")],
        "vision": {"intermediate_size": 4304},  # the rest: PaliGemmaConfig's SigLIP defaults
        "vocab_size": VOCAB,
    }


def resize_with_pad_centred(img: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """openpi's resize: img (b, h, w, c) float in [0, 1] -> (b, height, width, c), aspect kept,
    bilinear (align_corners=False), clamped to [0, 1], zero padding split evenly (extra on the
    bottom / right)."""
    x = img.permute(0, 3, 1, 2)
    h, w = x.shape[2:]
    ratio = max(w / width, h / height)
    rh, rw = int(h / ratio), int(w / ratio)
    x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    top, left = (height - rh) // 2, (width - rw) // 2
    x = F.pad(x, (left, width - rw - left, top, height - rh - top), value=0.0)
    return x.permute(0, 2, 3, 1)


def state_prompt(task: str, state_normalised: np.ndarray) -> str:
    """Pi05PrepareStateTokenizerProcessorStep: the state in 256 bins of [-1, 1] inside the prompt."""
    bins = np.digitize(state_normalised, bins=np.linspace(-1, 1, 256 + 1)[:-1]) - 1
    cleaned = task.strip().replace("_", " ").replace("\n", " ")
    return f"Task: {cleaned}, State: {' '.join(map(str, bins))};\nAction: "


class AdaRMSNorm(nn.Module):
    """Gemma RMSNorm modulated by a condition (PiGemmaRMSNorm with cond_dim): returns the normed
    x * (1 + scale) + shift and the residual gate, all three from one Linear of the condition."""

    def __init__(self, dim: int, cond_dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.dense = nn.Linear(cond_dim, 3 * dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        normed = x * torch.rsqrt(torch.mean(torch.square(x.float()), -1, keepdim=True) + self.eps)
        scale, shift, gate = self.dense(cond)[:, None].chunk(3, -1)
        return (normed * (1 + scale.float()) + shift.float()).to(x.dtype), gate.to(x.dtype)


@dataclass(frozen=True)
class Pi05Spec:
    chunk: int
    num_steps: int
    max_action_dim: int
    action_dim: int
    state_dim: int
    cameras: tuple[tuple[str, tuple[int, int]], ...]
    image_hw: tuple[int, int]
    min_period: float
    max_period: float


def gemma_config(sizes: dict[str, int], vocab: int):
    from transformers import GemmaConfig

    return GemmaConfig(
        head_dim=sizes["head_dim"],
        hidden_size=sizes["width"],
        intermediate_size=sizes["mlp_dim"],
        num_attention_heads=sizes["num_heads"],
        num_hidden_layers=sizes["depth"],
        num_key_value_heads=sizes["num_kv_heads"],
        vocab_size=vocab,
        hidden_activation="gelu_pytorch_tanh",
    )


class Pi05(nn.Module):
    """Parameters named as in LeRobot's PI05Pytorch with its module prefixes shortened (KEY_MAP)."""

    def __init__(self, spec: Pi05Spec, sizes: dict[str, Any]) -> None:
        super().__init__()
        require_transformers()
        from transformers import GemmaModel, PaliGemmaConfig, SiglipVisionModel
        from transformers.models.paligemma.modeling_paligemma import PaliGemmaMultiModalProjector

        self.spec = spec
        pcfg = PaliGemmaConfig()
        v = pcfg.vision_config
        v.image_size = spec.image_hw[0]
        v.projection_dim = pcfg.projection_dim = sizes["vlm"]["width"]
        v.projector_hidden_act = "gelu_fast"
        for k, val in sizes.get("vision", {}).items():
            setattr(v, k, val)
        pcfg.text_config = gemma_config(sizes["vlm"], sizes["vocab_size"])
        self.vision_tower = SiglipVisionModel(v)
        self.projector = PaliGemmaMultiModalProjector(pcfg)
        self.vlm = GemmaModel(pcfg.text_config)
        self.prefix_width = pcfg.text_config.hidden_size  # prefix_hidden's last dimension
        ecfg = gemma_config(sizes["expert"], sizes["vocab_size"])
        self.expert = GemmaModel(ecfg)
        self.expert.embed_tokens = None
        width = ecfg.hidden_size
        for layer in self.expert.layers:  # AdaRMS norms conditioned on the time embedding
            layer.input_layernorm = AdaRMSNorm(width, width, ecfg.rms_norm_eps)
            layer.post_attention_layernorm = AdaRMSNorm(width, width, ecfg.rms_norm_eps)
        self.expert.norm = AdaRMSNorm(width, width, ecfg.rms_norm_eps)
        self.action_in_proj = nn.Linear(spec.max_action_dim, width)
        self.action_out_proj = nn.Linear(width, spec.max_action_dim)
        self.time_mlp_in = nn.Linear(width, width)
        self.time_mlp_out = nn.Linear(width, width)

    @staticmethod
    def _attend(
        layer: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor
    ) -> torch.Tensor:
        """Gemma's eager attention: q (b, h, n, d), k/v (b, kv, m, d), additive bias (b, 1, n, m)."""
        from transformers.models.gemma.modeling_gemma import repeat_kv

        groups = q.shape[1] // k.shape[1]
        k, v = repeat_kv(k, groups), repeat_kv(v, groups)
        w = torch.matmul(q, k.transpose(2, 3)) * layer.self_attn.scaling + bias
        w = torch.softmax(w, -1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(w, v).transpose(1, 2)
        return out.reshape(*out.shape[:2], -1)

    def _qkv(self, layer: nn.Module, x: torch.Tensor, pos: torch.Tensor, rotary: nn.Module):
        from transformers.models.gemma.modeling_gemma import apply_rotary_pos_emb

        shape = (*x.shape[:-1], -1, layer.self_attn.head_dim)
        q = layer.self_attn.q_proj(x).view(shape).transpose(1, 2)
        k = layer.self_attn.k_proj(x).view(shape).transpose(1, 2)
        v = layer.self_attn.v_proj(x).view(shape).transpose(1, 2)
        cos, sin = rotary(x, pos)
        q, k = apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)
        return q, k, v  # (b, heads, n, d), (b, kv, n, d) x 2

    def prefix(self, *inputs: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The K/V cache of :meth:`prefix_hidden` (same inputs): keys, values, pad mask."""
        return self.prefix_hidden(*inputs)[:3]

    def prefix_hidden(
        self,
        pixels: list[torch.Tensor],
        img_masks: list[torch.Tensor],
        tokens: torch.Tensor,
        token_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """pixels [(b, 3, S, S)] in [-1, 1], tokens / token_mask (b, l) -> keys, values
        (b, L, kv_heads, p, head_dim) after RoPE, prefix pad mask (b, p), and the last layer's
        output (b, p, width), which only training's auxiliary probe reads
        (legato.adapters.lerobot_train.AuxProbe)."""
        embs, pads = [], []
        for img, m in zip(pixels, img_masks, strict=True):
            e = self.projector(self.vision_tower(img).last_hidden_state)
            embs.append(e)
            pads.append(m[:, None].expand(e.shape[0], e.shape[1]))
        embs.append(self.vlm.embed_tokens(tokens))  # scaled by sqrt(width) inside (Gemma)
        pads.append(token_mask)
        h, pad = torch.cat(embs, 1), torch.cat(pads, 1)
        allowed = pad[:, None, :] & pad[:, :, None]  # prefix-LM: every valid token sees every valid token
        bias = torch.where(allowed[:, None], 0.0, OPENPI_MASK_VALUE)
        pos = torch.cumsum(pad.long(), 1) - 1
        keys, values = [], []
        for layer in self.vlm.layers:
            x = layer.input_layernorm(h)
            q, k, v = self._qkv(layer, x, pos, self.vlm.rotary_emb)
            keys.append(k)
            values.append(v)
            h = h + layer.self_attn.o_proj(self._attend(layer, q, k, v, bias))
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return torch.stack(keys, 1), torch.stack(values, 1), pad, h

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
        h = self.action_in_proj(x)
        temb = time_embedding(t, h.shape[-1], self.spec.min_period, self.spec.max_period).to(t.dtype)
        cond = F.silu(self.time_mlp_out(F.silu(self.time_mlp_in(temb))))  # (b, width)
        allowed = torch.cat(
            [prefix_pad[:, None, :].expand(b, n, -1), torch.ones(b, n, n, dtype=torch.bool)], 2
        )
        bias = torch.where(allowed[:, None], 0.0, OPENPI_MASK_VALUE)
        pos = prefix_pad.long().sum(1, keepdim=True) + torch.arange(n)[None]
        for i, layer in enumerate(self.expert.layers):
            y, gate = layer.input_layernorm(h, cond)
            q, k, v = self._qkv(layer, y, pos, self.expert.rotary_emb)
            k, v = torch.cat([keys[:, i], k], 2), torch.cat([values[:, i], v], 2)
            h = h + layer.self_attn.o_proj(self._attend(layer, q, k, v, bias)) * gate
            y, gate = layer.post_attention_layernorm(h, cond)
            h = h + layer.mlp(y) * gate
        return self.action_out_proj(self.expert.norm(h, cond)[0].float())

    def sample(
        self, x: torch.Tensor, prefix: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        dt = -1.0 / self.spec.num_steps
        for k in range(self.spec.num_steps):
            t = torch.full((x.shape[0],), 1.0 + k * dt, dtype=torch.float32)
            x = x + dt * self.velocity(x, t, *prefix)
        return x


KEY_MAP = (
    ("model.paligemma_with_expert.paligemma.model.vision_tower.", "vision_tower."),
    ("model.paligemma_with_expert.paligemma.model.multi_modal_projector.", "projector."),
    ("model.paligemma_with_expert.paligemma.model.language_model.", "vlm."),
    ("model.paligemma_with_expert.gemma_expert.model.", "expert."),
    ("model.", ""),
)
UNUSED = (
    "model.paligemma_with_expert.paligemma.lm_head.",
    "model.paligemma_with_expert.gemma_expert.lm_head.",
)


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


class Pi05Policy:
    """A LeRobot pi0.5 folder as a chunk sampler in the robot's units."""

    def __init__(self, folder: PolicyFolder, model: Pi05, tokenizer: Any) -> None:
        self.folder, self.model, self.tokenizer = folder, model, tokenizer
        self.spec = model.spec
        self.tokenizer_step = folder.step("tokenizer_processor") or {}

    @classmethod
    def load(cls, path: str | Path) -> Pi05Policy:
        from legato.adapters.smolvla import check_and_load

        folder = read_policy_folder(path)
        if folder.type != "pi05":
            raise LeRobotCheckpointError(f"{folder.path} is a LeRobot {folder.type!r} policy, not pi05")
        c = folder.config
        if c.get("use_relative_actions"):
            raise LeRobotCheckpointError(f"{folder.path}: use_relative_actions is not supported yet")
        sizes_file = folder.path / "sizes.json"
        sizes = json.loads(sizes_file.read_text()) if sizes_file.is_file() else published_sizes(c)
        cams = tuple(folder.features("VISUAL").items())
        state = folder.features("STATE").get(STATE, (0,))
        res = tuple(int(x) for x in c["image_resolution"])
        spec = Pi05Spec(
            chunk=int(c["chunk_size"]),
            num_steps=int(c["num_inference_steps"]),
            max_action_dim=int(c["max_action_dim"]),
            action_dim=folder.action_dim,
            state_dim=int(state[0]),
            cameras=tuple((k, (int(s[1]), int(s[2]))) for k, s in cams),
            image_hw=(res[0], res[1]),
            min_period=float(c["min_period"]),
            max_period=float(c["max_period"]),
        )
        model = Pi05(spec, sizes)
        check_and_load(model, map_keys(folder.weights()), folder)
        tok_name = (folder.step("tokenizer_processor") or {}).get("config", {}).get("tokenizer_name")
        return cls(folder, model.eval(), load_tokenizer(tok_name or "google/paligemma-3b-pt-224"))

    def language(self, tasks: list[str], state: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.folder.input_norm.normalize(STATE, np.asarray(state, np.float32))
        texts = [state_prompt(t, s[i]) for i, t in enumerate(tasks)]
        ids, mask = tokenize(self.tokenizer, texts, self.tokenizer_step.get("config", {}))
        return torch.from_numpy(ids), torch.from_numpy(mask)

    def images(self, frames: dict[str, np.ndarray]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        present = [k for k, _ in self.spec.cameras if k in frames]
        if not present:
            raise LeRobotCheckpointError(
                f"observation has none of the cameras {[k for k, _ in self.spec.cameras]}"
            )
        pixels = []
        for k in present:
            x = torch.as_tensor(np.asarray(frames[k])).float() / 255  # (b, H, W, 3)
            x = resize_with_pad_centred(x, *self.spec.image_hw)
            pixels.append((x * 2.0 - 1.0).permute(0, 3, 1, 2))
        b = pixels[0].shape[0]
        masks = [torch.ones(b, dtype=torch.bool) for _ in present]
        for _ in range(len(self.spec.cameras) - len(present)):  # absent cameras: -1 images, masked
            pixels.append(-torch.ones_like(pixels[0]))
            masks.append(torch.zeros(b, dtype=torch.bool))
        return pixels, masks

    def prefix_inputs(self, obs: dict[str, Any]) -> tuple:
        pixels, masks = self.images({k: v for k, v in obs.items() if k.startswith("observation.images.")})
        if TOKENS in obs:
            tokens = torch.as_tensor(np.asarray(obs[TOKENS]), dtype=torch.int64)
            tmask = torch.as_tensor(np.asarray(obs[TOKEN_MASK]), dtype=torch.bool)
        else:
            tokens, tmask = self.language(list(obs["task"]), obs[STATE])
        return pixels, masks, tokens, tmask

    @torch.no_grad()
    def sample_actions(self, obs: dict[str, Any], noise: torch.Tensor) -> np.ndarray:
        prefix = self.model.prefix(*self.prefix_inputs(obs))
        x = self.model.sample(noise.float(), prefix)[..., : self.spec.action_dim]
        return self.folder.output_norm.unnormalize(ACTION, x.numpy())

"""pi0.5 split into the device's two graphs, and their ONNX export.

prefix: frames uint8 (1, H, W, 3) per camera (resize-with-pad centred and [-1, 1] in the graph),
    the prompt's token ids (1, l) int64 and mask (1, l) int64 (the state is inside the prompt) ->
      kv (L, 2, 1, kv_heads, p, head_dim)  every Gemma layer's post-RoPE keys and values
      prefix_bias (1, 1, 1, p)             0 for a valid prefix token, -1e4 for padding
      rope_cos, rope_sin (1, H, head_dim)  the action tokens' rotary angles (after the prefix)
step: (x (1, H, max_action_dim), t (1,) LeRobot time, omega (1, H), context) -> velocity. The
    flow-time condition of the AdaRMS norms is a table over the N + 1 grid times, made at export
    (the time embedding in float64, as LeRobot computes it, then the time MLP).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from export.onnx_files import needs_external_data
from legato.adapters.attention import grouped_attention
from legato.adapters.legato_flow import LegatoHead
from legato.adapters.pi05 import Pi05, resize_with_pad_centred
from legato.adapters.smolvla import time_embedding

MASKED = -1e4
PREFIX_OUTPUTS = ("kv", "prefix_bias", "rope_cos", "rope_sin")
FP16_KEEP_EXTRA = ("Range", "Cos", "Sin", "CumSum", "ReduceSum")


class PrefixGraph(nn.Module):
    def __init__(self, model: Pi05, cameras: int) -> None:
        super().__init__()
        self.m, self.cameras = model, cameras

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m, spec = self.m, self.m.spec
        frames, (tokens, token_mask) = args[: self.cameras], args[self.cameras :]
        pixels = []
        for f in frames:
            x = resize_with_pad_centred(f.float() / 255, *spec.image_hw)
            pixels.append((x * 2.0 - 1.0).permute(0, 3, 1, 2))
        ones = [torch.ones(1, dtype=torch.bool) for _ in frames]
        keys, values, pad = m.prefix(pixels, ones, tokens, token_mask.bool())
        kv = torch.stack([keys, values], 2)[0]  # (L, 2, kv, p, d)
        kv = kv[:, :, None]  # (L, 2, 1, kv, p, d)
        bias = torch.where(pad, 0.0, MASKED)[:, None, None, :]
        pos = pad.float().sum(1, keepdim=True) + torch.arange(spec.chunk, dtype=torch.float32)[None]
        cos, sin = m.expert.rotary_emb(torch.zeros(1, spec.chunk, 1), pos.long())
        return kv, bias, cos, sin


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], -1)


class StepGraph(nn.Module):
    def __init__(self, model: Pi05, head: LegatoHead) -> None:
        super().__init__()
        self.m, self.head = model, head
        s = model.spec
        grid = torch.tensor([1.0 - k / s.num_steps for k in range(s.num_steps + 1)], dtype=torch.float32)
        with torch.no_grad():
            temb = time_embedding(grid, model.action_in_proj.out_features, s.min_period, s.max_period).float()
            cond = F.silu(model.time_mlp_out(F.silu(model.time_mlp_in(temb))))
        self.register_buffer("cond_table", cond)  # (N + 1, width)

    def net(self, x, t, kv, bias, cos, sin) -> torch.Tensor:
        m = self.m
        b, n = x.shape[:2]
        cond = self.cond_table[torch.round((1.0 - t) * m.spec.num_steps).long()]  # (1, width)
        h = m.action_in_proj(x)
        c, s = cos[:, None], sin[:, None]  # (1, 1, H, d)
        full_bias = torch.cat([bias, torch.zeros(1, 1, 1, n)], -1)  # the same for every action token
        for i, layer in enumerate(m.expert.layers):
            y, gate = layer.input_layernorm(h, cond)
            shape = (b, n, -1, layer.self_attn.head_dim)
            q = layer.self_attn.q_proj(y).view(shape).transpose(1, 2)
            k = layer.self_attn.k_proj(y).view(shape).transpose(1, 2)
            v = layer.self_attn.v_proj(y).view(shape).transpose(1, 2)
            q, k = q * c + _rotate_half(q) * s, k * c + _rotate_half(k) * s
            k, v = torch.cat([kv[i, 0], k], 2), torch.cat([kv[i, 1], v], 2)
            att = grouped_attention(q, k, v, full_bias, layer.self_attn.scaling)
            h = h + layer.self_attn.o_proj(att) * gate
            y, gate = layer.post_attention_layernorm(h, cond)
            h = h + layer.mlp(y) * gate
        return m.action_out_proj(m.expert.norm(h, cond)[0])

    def forward(self, x, t, omega, kv, bias, cos, sin) -> torch.Tensor:
        return self.head.velocity(lambda xx, tt: self.net(xx, tt, kv, bias, cos, sin), x, t, omega)


def example_inputs(policy, obs: dict) -> tuple[tuple[torch.Tensor, ...], list[str]]:
    spec = policy.spec
    frames = [torch.as_tensor(np.asarray(obs[k])) for k, _ in spec.cameras]
    tokens, mask = policy.language(list(obs["task"]), obs["observation.state"])
    names = [f"image_{k.rsplit('.', 1)[-1]}" for k, _ in spec.cameras] + ["tokens", "token_mask"]
    return (*frames, tokens, mask.long()), names


def export(policy, head: LegatoHead, obs: dict, out: Path, opset: int = 17) -> dict[str, Path]:
    """prefix.onnx and step.onnx (static shapes, TorchScript exporter; external data past 2 GB)."""
    import warnings

    out.mkdir(parents=True, exist_ok=True)
    model = policy.model.eval()
    prefix, step = PrefixGraph(model, len(policy.spec.cameras)).eval(), StepGraph(model, head).eval()
    args, names = example_inputs(policy, obs)
    with torch.no_grad():
        ctx = prefix(*args)
    s = policy.spec
    x, t, omega = torch.randn(1, s.chunk, s.max_action_dim), torch.tensor([1.0]), torch.zeros(1, s.chunk)
    paths = {"prefix": out / "prefix.onnx", "step": out / "step.onnx"}
    large = needs_external_data(sum(p.numel() for p in model.parameters()) * 4)  # fp32 bytes
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            prefix,
            args,
            str(paths["prefix"]),
            input_names=names,
            output_names=list(PREFIX_OUTPUTS),
            opset_version=opset,
            dynamo=False,
            external_data=large,
        )
        torch.onnx.export(
            step,
            (x, t, omega, *ctx),
            str(paths["step"]),
            input_names=["x", "t", "omega", *PREFIX_OUTPUTS],
            output_names=["velocity"],
            opset_version=opset,
            dynamo=False,
            external_data=large,
        )
    return paths

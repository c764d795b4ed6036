"""SmolVLA split into the two graphs the device runs, and their ONNX export.

prefix: camera frames uint8 (1, H, W, 3) each (the resize-with-pad and [-1, 1] scaling are in
    the graph), token ids (1, l) int64 with their mask (1, l) int64, the normalised padded state
    (1, max_state_dim) -> the context of every expert layer, computed once per chunk:
      self_kv  (n_self, 2, 1, kv_heads, p, head_dim)  the VLM's post-RoPE K/V of the layers whose
                                                      expert self-attends over [prefix; actions]
      cross_kv (n_cross, 2, 1, kv_heads, p, head_dim) the cross-attention layers' K/V after the
                                                      expert's own k_proj / v_proj: hoisted out
                                                      of the denoising loop (they depend on the
                                                      prefix only)
      (heads first, as the step's grouped attention reads them: the step neither repeats nor
      transposes the cache)
      prefix_bias (1, 1, p) float: 0 for a valid prefix token, -1e30 for padding
      rope_cos, rope_sin (1, H, 1, head_dim / 2): the action tokens' rotary angles in the
                                                      self-attention layers (positions start
                                                      after the valid prefix tokens)
step: (x (1, H, max_action_dim), t (1,) in LeRobot's time, omega (1, H), the context) ->
    velocity (1, H, max_action_dim), LeRobot's convention, Legato's factor included (omega = 0:
    LeRobot's own expert). The time embedding enters as a table over the N + 1 grid times
    (computed in float64 at export, as LeRobot computes it; TensorRT has no float64), selected
    by round((1 - t) N).
Rotations are concatenations (no in-place writes, no ScatterND).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from export.onnx_files import needs_external_data
from legato.adapters.attention import group_rows, grouped_attention
from legato.adapters.legato_flow import LegatoHead
from legato.adapters.smolvla import SmolVLA, _residual_block, resize_with_pad, time_embedding

MASKED = -1e4  # additive bias of a padded token: exp() underflows to 0, and it fits float16
# Ops kept float32 in an fp16 graph beside export.precision's list: positions and rotary angles
# (Range has no float16 kernel; angles of ~100 rad lose their phase in float16).
FP16_KEEP_EXTRA = ("Range", "Cos", "Sin", "CumSum", "ReduceSum")
PREFIX_OUTPUTS = ("self_kv", "cross_kv", "prefix_bias", "rope_cos", "rope_sin")


class PrefixGraph(nn.Module):
    def __init__(self, model: SmolVLA, cameras: int) -> None:
        super().__init__()
        self.m, self.cameras = model, cameras

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m, spec = self.m, self.m.spec
        frames, (tokens, token_mask, state) = args[: self.cameras], args[self.cameras :]
        pixels = []
        for f in frames:
            x = f.float().permute(0, 3, 1, 2) / 255
            pixels.append(resize_with_pad(x, *spec.image_hw) * 2.0 - 1.0)
        ones = [torch.ones(1, dtype=torch.bool) for _ in frames]
        keys, values, pad = m.prefix(pixels, ones, tokens, token_mask.bool(), state)
        self_kv, cross_kv = [], []
        for i in range(m.num_layers):
            layer = m.expert_layer(i)
            if layer is None:
                continue
            if m._is_self_attn(i):
                self_kv.append(torch.stack([keys[:, i].transpose(1, 2), values[:, i].transpose(1, 2)]))
            else:
                kp, vp = keys[:, i].flatten(2), values[:, i].flatten(2)
                k = layer.self_attn.k_proj(kp).view(1, kp.shape[1], -1, m.head_dim)
                v = layer.self_attn.v_proj(vp).view(1, vp.shape[1], -1, m.head_dim)
                cross_kv.append(torch.stack([k.transpose(1, 2), v.transpose(1, 2)]))
        bias = torch.where(pad, 0.0, MASKED)[:, None, :]
        n = spec.chunk
        pos = pad.float().sum(1, keepdim=True) + torch.arange(n, dtype=torch.float32)[None]  # (1, H)
        d_half = m.head_dim // 2
        timescale = 10_000.0 ** ((2.0 / m.head_dim) * torch.arange(d_half, dtype=torch.float32))
        ang = (pos[..., None] / timescale)[:, :, None, :]
        return torch.stack(self_kv), _stack(cross_kv), bias, torch.cos(ang), torch.sin(ang)


def _stack(xs: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(xs) if xs else torch.zeros(0)


def _rope_cs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


class StepGraph(nn.Module):
    """One expert step on the prefix's context (the same math as SmolVLA.velocity)."""

    def __init__(self, model: SmolVLA, head: LegatoHead) -> None:
        super().__init__()
        self.m, self.head = model, head
        spec = model.spec
        n = spec.num_steps
        grid = torch.tensor([1.0 - k / n for k in range(n + 1)], dtype=torch.float32)  # tau of each step
        temb = time_embedding(grid, model.expert_width, spec.min_period, spec.max_period).float()
        w = model.action_time_mlp_in.weight  # (c, 2c): [action part | time part]
        c = model.expert_width
        with torch.no_grad():
            table = temb @ w[:, c:].T + model.action_time_mlp_in.bias  # (N + 1, c)
        self.register_buffer("time_table", table)
        self.w_action = nn.Parameter(w[:, :c].detach().clone(), requires_grad=False)
        steps = torch.arange(spec.chunk, dtype=torch.float32)[None]
        d_half = model.head_dim // 2
        timescale = 10_000.0 ** ((2.0 / model.head_dim) * torch.arange(d_half, dtype=torch.float32))
        ang = (steps[..., None] / timescale)[:, :, None, :]
        self.register_buffer("cross_cos", torch.cos(ang))
        self.register_buffer("cross_sin", torch.sin(ang))
        self.register_buffer("causal", torch.tril(torch.ones(spec.chunk, spec.chunk)).bool())

    def net(self, x: torch.Tensor, t: torch.Tensor, self_kv, cross_kv, bias, cos, sin) -> torch.Tensor:
        m = self.m
        n = x.shape[1]
        k_idx = torch.round((1.0 - t) * m.spec.num_steps).long()  # (1,)
        a = m.action_in_proj(x)
        h = a @ self.w_action.T + self.time_table[k_idx][:, None, :]
        h = m.action_time_mlp_out(F.silu(h))
        self_bias = torch.cat(
            [bias.expand(1, n, bias.shape[-1]), torch.where(self.causal, 0.0, MASKED)[None]], 2
        )
        self_bias = group_rows(self_bias[:, None], m.heads // m.kv_heads)
        scale = 1.0 / math.sqrt(m.head_dim)
        i_self = i_cross = 0
        for i in range(m.num_layers):
            layer = m.expert_layer(i)
            if layer is None:
                continue
            y = layer.input_layernorm(h)
            q = layer.self_attn.q_proj(y).view(1, n, -1, m.head_dim)
            if m._is_self_attn(i):
                k = _rope_cs(layer.self_attn.k_proj(y).view(1, n, -1, m.head_dim), cos, sin)
                v = layer.self_attn.v_proj(y).view(1, n, -1, m.head_dim)
                k = torch.cat([self_kv[i_self, 0], k.transpose(1, 2)], 2)
                v = torch.cat([self_kv[i_self, 1], v.transpose(1, 2)], 2)
                q = _rope_cs(q, cos, sin).transpose(1, 2)
                out = grouped_attention(q, k, v, self_bias, scale)
                i_self += 1
            else:
                q = _rope_cs(q, self.cross_cos, self.cross_sin).transpose(1, 2)
                out = grouped_attention(q, cross_kv[i_cross, 0], cross_kv[i_cross, 1], bias[:, None], scale)
                i_cross += 1
            h = _residual_block(layer, h, out)
        return m.action_out_proj(m.expert.norm(h))

    def forward(self, x, t, omega, self_kv, cross_kv, bias, cos, sin) -> torch.Tensor:
        return self.head.velocity(
            lambda xx, tt: self.net(xx, tt, self_kv, cross_kv, bias, cos, sin), x, t, omega
        )


def example_inputs(policy, obs: dict) -> tuple[tuple[torch.Tensor, ...], list[str]]:
    """The prefix graph's inputs for one observation (LeRobot feature keys, batch 1) and names."""
    spec = policy.spec
    frames = [torch.as_tensor(np.asarray(obs[k])) for k, _ in spec.cameras]
    tokens, mask = policy.language(list(obs["task"]))
    state = policy.state(obs["observation.state"])
    names = [f"image_{k.rsplit('.', 1)[-1]}" for k, _ in spec.cameras] + ["tokens", "token_mask", "state"]
    return (*frames, tokens, mask.long(), state), names


def export(policy, head: LegatoHead, obs: dict, out: Path, opset: int = 17) -> dict[str, Path]:
    """prefix.onnx and step.onnx for one observation's shapes (static), TorchScript exporter."""
    import warnings

    out.mkdir(parents=True, exist_ok=True)
    model = policy.model.eval()
    prefix = PrefixGraph(model, len(policy.spec.cameras)).eval()
    step = StepGraph(model, head).eval()
    args, names = example_inputs(policy, obs)
    with torch.no_grad():
        ctx = prefix(*args)
    spec = policy.spec
    x = torch.randn(1, spec.chunk, spec.max_action_dim)
    t = torch.tensor([1.0])
    omega = torch.zeros(1, spec.chunk)
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
            do_constant_folding=True,
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
            do_constant_folding=True,
        )
    return paths

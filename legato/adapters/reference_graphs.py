"""The reference model's three exported graphs as torch modules over a trained Policy
(docs/bundle.md): the graph side of the reference adapter (legato.adapters.reference).

Rewrites relative to legato.model (each checked against the original by tests/export):
- adaLN hoist: the head's modulation ``mod(time_mlp(sin(t)) + state_mlp(state))`` depends only
  on the flow time and the state. With t on the grid t_k = k / N it has N + 1 values per chunk
  (k = N is t = 1, training-time RTC's clean tokens), so PrefixGraph computes the whole table
  once per chunk, (1, n+1, L, 6, c), and FlowHeadGraph gathers row round(t N) per token.
- The state's additive token input (position embedding + state projection) is computed once
  per chunk too (`cond`).
- Attention is plain MatMul-Softmax-MatMul with the scale folded into q (the pattern
  TensorRT's attention fusion matches and onnxruntime's CPU kernels run well).
Shapes: b = 1, h chunk, a action dim, L head layers, p prefix tokens, c width, n = N.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from legato.model import HeadBlock, Policy, PrefixEncoder, sinusoidal


class _OrtMultiHeadAttention(torch.autograd.Function):
    """Exports as onnxruntime's fused com.microsoft.MultiHeadAttention (q (b, n, c), k/v (b, m, c));
    used for onnxruntime CPU profiles only, where bench/bench_chunk.py shows it wins."""

    @staticmethod
    def forward(ctx, q, k, v, heads: int):  # noqa: ANN001, ANN205
        return attention(q, k, v, heads)

    @staticmethod
    def symbolic(g, q, k, v, heads):  # noqa: ANN001, ANN205
        out = g.op("com.microsoft::MultiHeadAttention", q, k, v, num_heads_i=heads)
        out.setType(q.type())  # same shape and dtype as the query: keeps the exporter's shapes static
        return out


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, fused: bool = False
) -> torch.Tensor:
    """q (1, n, c), k/v (1, m, c) -> (1, n, c); standard ops unless `fused` (onnxruntime's op)."""
    if fused:
        return _OrtMultiHeadAttention.apply(q, k, v, heads)
    b, n, c = q.shape
    d = c // heads
    qh = q.reshape(b, n, heads, d).transpose(1, 2) * (d**-0.5)  # (b, heads, n, d)
    kh = k.reshape(b, k.shape[1], heads, d).permute(0, 2, 3, 1)  # (b, heads, d, m)
    vh = v.reshape(b, v.shape[1], heads, d).transpose(1, 2)  # (b, heads, m, d)
    o = torch.softmax(qh @ kh, -1) @ vh  # (b, heads, n, d)
    return o.transpose(1, 2).reshape(b, n, c)


def encoder_features(enc: PrefixEncoder, image, tokens, state, fused: bool) -> torch.Tensor:  # noqa: ANN001
    """PrefixEncoder.features with exportable attention (same computation, tests pin it)."""
    b = image.shape[0]
    x = image.permute(0, 3, 1, 2).float() / 255.0  # (b, 3, H, W)
    x = torch.cat([x, enc.coords.expand(b, -1, -1, -1)], 1)
    words = enc.tok_emb(tokens)  # (b, l, c)
    real = (tokens != 0).to(words.dtype)[..., None]  # (b, l, 1), 0 = <pad>
    sentence = (words * real).sum(1) / real.sum(1).clamp_min(1.0)  # (b, c)
    gamma, beta = enc.film(sentence)[:, :, None, None].chunk(2, 1)  # (b, 48, 1, 1) each
    x = F.gelu(enc.conv1(x) * (1 + gamma) + beta)  # (b, 48, H/4, W/4)
    img = enc.conv2(x).flatten(2).transpose(1, 2) + enc.img_pos  # (b, H/8 * W/8, c)
    x = torch.cat([img, words + enc.tok_pos, enc.state_proj(state)[:, None]], 1)[0]  # (p, c): batch 1, 2-D
    for blk in enc.blocks:
        q, k, v = blk.qkv(blk.norm1(x))[None].chunk(3, -1)  # each (1, p, c)
        x = x + blk.attn.out(attention(q, k, v, blk.attn.heads, fused)[0])
        x = x + blk.mlp(blk.norm2(x))
    return enc.norm(x)  # (p, c)


class PrefixGraph(nn.Module):
    """(image, tokens, state) -> kv (1, L, 2, p, c), mod (1, n+1, L, 6, c), cond (1, h, c)."""

    def __init__(self, policy: Policy, fused_attention: bool = False) -> None:
        super().__init__()
        self.prefix, self.head = policy.prefix, policy.head
        self.fused = fused_attention
        n = policy.cfg.num_steps
        self.register_buffer("t_grid", torch.arange(n + 1, dtype=torch.float32) / n, persistent=False)
        one = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 1.0])[:, None]  # (6, 1): +1 on scales and gates
        self.register_buffer("one", one, persistent=False)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor, state: torch.Tensor):
        head = self.head
        feats = encoder_features(self.prefix, image, tokens, state, self.fused)  # (p, c)
        p, c = feats.shape
        L = len(head.blocks)  # noqa: N806
        kv = self.prefix.kv(feats).reshape(p, L, 2, c).permute(1, 2, 0, 3)[None]  # (1, L, 2, p, c)
        temb = head.time_mlp(sinusoidal(self.t_grid, c)) + head.state_mlp(state)  # (n+1, c)
        n1 = temb.shape[0]
        mod = torch.stack([blk.mod(temb).reshape(n1, 6, c) for blk in head.blocks], 1)  # (n+1, L, 6, c)
        mod = (mod + self.one)[None]  # (1, n+1, L, 6, c): (shift1, 1 + scale1, 1 + gate1, shift3, ...)
        cond = head.pos + head.state_in(state)[:, None]  # (1, h, c)
        return kv, mod, cond


def head_block(blk: HeadBlock, x, m, k, v, heads: int, fused: bool):  # noqa: ANN001, ANN201
    """HeadBlock.forward on batch-1 tokens as a 2-D (h, c) matrix (every Linear is one Gemm, no
    reshapes), with the modulation m = (s1, 1 + c1, 1 + g1, s3, 1 + c3, 1 + g3), each (h, c), from
    the table; k, v (1, p, c); attention on (1, n, c) views."""
    s1, c1, g1, s3, c3, g3 = m
    q, k_s, v_s = blk.qkv(blk.norm1(x) * c1 + s1)[None].chunk(3, -1)  # each (1, h, c)
    x = x + g1 * blk.self_attn.out(attention(q, k_s, v_s, heads, fused)[0])
    x = x + blk.cross_attn.out(attention(blk.q_cross(blk.norm2(x))[None], k, v, heads, fused)[0])
    return x + g3 * blk.mlp(blk.norm3(x) * c3 + s3)


class FlowHeadGraph(nn.Module):
    """(y, t, omega, kv, mod, cond) -> v (1, h, a)."""

    def __init__(self, policy: Policy, fused_attention: bool = False) -> None:
        super().__init__()
        self.head = policy.head
        self.n = policy.cfg.num_steps
        self.heads = policy.cfg.heads
        self.fused = fused_attention

    def forward(self, y, t, omega, kv, mod, cond):
        head = self.head
        step = torch.round(t[0] * self.n).to(torch.int64)  # (h,) row of the modulation table
        _, _, L, six, c = mod.shape  # noqa: N806
        m = torch.index_select(mod[0], 0, step).reshape(-1, L * six * c).split(c, -1)  # L * 6 of (h, c)
        x = head.in_proj(torch.cat([y[0], omega[0][:, None]], -1)) + cond[0]  # (h, c)
        for i, blk in enumerate(head.blocks):
            x = head_block(blk, x, m[6 * i : 6 * i + 6], kv[:, i, 0], kv[:, i, 1], self.heads, self.fused)
        # FlowHead.velocity: the one place each velocity_form's output becomes the velocity.
        return head.velocity(head.out(head.norm(x))[None], t, omega)  # (1, h, a)


class FusedGraph(nn.Module):
    """(image, tokens, state, eps, a_ref, omega) -> chunk: Legato's sampler with all N steps and
    the final blend unrolled (edge.sampler.legato_sample); the accumulation stays float32."""

    def __init__(self, policy: Policy, fused_attention: bool = False) -> None:
        super().__init__()
        self.prefix = PrefixGraph(policy, fused_attention)
        self.flow = FlowHeadGraph(policy, fused_attention)
        self.n = policy.cfg.num_steps

    def forward(self, image, tokens, state, eps, a_ref, omega):
        kv, mod, cond = self.prefix(image, tokens, state)
        w = omega[..., None]
        x = eps
        for k in range(self.n):
            y = (1 - w) * x + w * a_ref
            t = torch.full_like(omega, k / self.n)
            x = y + self.flow(y, t, omega, kv, mod, cond) / self.n
        return (1 - w) * x + w * a_ref


def example_inputs(policy: Policy) -> dict[str, tuple[torch.Tensor, ...]]:
    """Batch-1 example inputs for each graph (shapes fixed by the config)."""
    cfg = policy.cfg
    h, a, s, n, c, L = cfg.horizon, cfg.action_dim, cfg.state_dim, cfg.num_steps, cfg.width, cfg.head_layers  # noqa: N806
    hi, wi = cfg.image_hw
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 255, (1, hi, wi, 3), dtype=torch.uint8, generator=g)
    tokens = torch.randint(1, cfg.vocab_size, (1, cfg.max_tokens), generator=g)
    state = torch.randn(1, s, generator=g)
    with torch.no_grad():
        kv, mod, cond = PrefixGraph(policy)(image, tokens, state)
    y, omega = torch.randn(1, h, a, generator=g), torch.rand(1, h, generator=g)
    t = torch.full((1, h), 2.0 / n)
    del c, L
    return {
        "prefix": (image, tokens, state),
        "flow_head": (y, t, omega, kv, mod, cond),
        "fused": (
            image,
            tokens,
            state,
            torch.randn(1, h, a, generator=g),
            torch.randn(1, h, a, generator=g),
            omega,
        ),
    }


def modules(policy: Policy, fused_attention: bool = False) -> dict[str, nn.Module]:
    return {
        "prefix": PrefixGraph(policy, fused_attention).eval(),
        "flow_head": FlowHeadGraph(policy, fused_attention).eval(),
        "fused": FusedGraph(policy, fused_attention).eval(),
    }

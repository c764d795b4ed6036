"""The three exported graphs as torch modules over a trained Policy (docs/bundle.md).

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
from torch import nn

from legato.model import HeadBlock, Policy, sinusoidal


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """q (1, n, c), k/v (1, m, c) -> (1, n, c); standard ops only."""
    b, n, c = q.shape
    d = c // heads
    qh = q.reshape(b, n, heads, d).transpose(1, 2) * (d**-0.5)  # (b, heads, n, d)
    kh = k.reshape(b, k.shape[1], heads, d).permute(0, 2, 3, 1)  # (b, heads, d, m)
    vh = v.reshape(b, v.shape[1], heads, d).transpose(1, 2)  # (b, heads, m, d)
    o = torch.softmax(qh @ kh, -1) @ vh  # (b, heads, n, d)
    return o.transpose(1, 2).reshape(b, n, c)


class PrefixGraph(nn.Module):
    """(image, tokens, state) -> kv (1, L, 2, p, c), mod (1, n+1, L, 6, c), cond (1, h, c)."""

    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.prefix, self.head = policy.prefix, policy.head
        n = policy.cfg.num_steps
        self.register_buffer("t_grid", torch.arange(n + 1, dtype=torch.float32)[None] / n, persistent=False)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor, state: torch.Tensor):
        head = self.head
        kv = self.prefix(image, tokens, state)
        temb = head.time_mlp(sinusoidal(self.t_grid, head.cfg.width)) + head.state_mlp(state)[:, None]
        b, n1, c = temb.shape
        mod = torch.stack([blk.mod(temb).reshape(b, n1, 6, c) for blk in head.blocks], 2)  # (b, n+1, L, 6, c)
        cond = head.pos + head.state_in(state)[:, None]  # (b, h, c)
        return kv, mod, cond


def head_block(
    blk: HeadBlock, x: torch.Tensor, m: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int
):
    """HeadBlock.forward with the modulation m (b, h, 6, c) given and standard-op attention."""
    s1, c1, g1, s3, c3, g3 = m.unbind(2)
    q, k_s, v_s = blk.qkv(blk.norm1(x) * (1 + c1) + s1).chunk(3, -1)
    x = x + (1 + g1) * blk.self_attn.out(attention(q, k_s, v_s, heads))
    x = x + blk.cross_attn.out(attention(blk.q_cross(blk.norm2(x)), k, v, heads))
    return x + (1 + g3) * blk.mlp(blk.norm3(x) * (1 + c3) + s3)


class FlowHeadGraph(nn.Module):
    """(y, t, omega, kv, mod, cond) -> v (1, h, a)."""

    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.head = policy.head
        self.n = policy.cfg.num_steps
        self.heads = policy.cfg.heads
        self.factored = policy.cfg.velocity_form == "factored"

    def forward(self, y, t, omega, kv, mod, cond):
        head = self.head
        step = torch.round(t[0] * self.n).to(torch.int64)  # (h,) row of the modulation table
        m = torch.index_select(mod, 1, step)  # (1, h, L, 6, c)
        x = head.in_proj(torch.cat([y, omega[..., None]], -1)) + cond
        for i, blk in enumerate(head.blocks):
            x = head_block(blk, x, m[:, :, i], kv[:, i, 0], kv[:, i, 1], self.heads)
        v = head.out(head.norm(x))
        if self.factored:
            v = v * (1 - omega * self.n * (1 - t))[..., None]
        return v


class FusedGraph(nn.Module):
    """(image, tokens, state, eps, a_ref, omega) -> chunk: Legato's sampler with all N steps and
    the final blend unrolled (edge.sampler.legato_sample); the accumulation stays float32."""

    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.prefix = PrefixGraph(policy)
        self.flow = FlowHeadGraph(policy)
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


NAMES = {
    "prefix": (("image", "tokens", "state"), ("kv", "mod", "cond")),
    "flow_head": (("y", "t", "omega", "kv", "mod", "cond"), ("v",)),
    "fused": (("image", "tokens", "state", "eps", "a_ref", "omega"), ("chunk",)),
}


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


def modules(policy: Policy) -> dict[str, nn.Module]:
    return {
        "prefix": PrefixGraph(policy).eval(),
        "flow_head": FlowHeadGraph(policy).eval(),
        "fused": FusedGraph(policy).eval(),
    }


def export_graph(module: nn.Module, args: tuple[torch.Tensor, ...], name: str, path, opset: int = 17) -> None:
    """torch -> ONNX (TorchScript exporter: static shapes, deterministic, standard ops)."""
    import warnings

    ins, outs = NAMES[name]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=list(ins),
            output_names=list(outs),
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )

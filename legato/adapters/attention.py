"""Grouped-query attention as the step graphs compute it (SmolVLA's expert, pi0.5's Gemma expert)."""

from __future__ import annotations

import torch


def grouped_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, scale: float
) -> torch.Tensor:
    """q (b, h, n, d); k, v (b, kv, m, d) heads first, h a multiple of kv, query head j reading
    K/V head j // (h / kv) (the order of transformers' repeat_kv and of repeat_interleave);
    additive bias (b, 1, 1, m), or per query in grouped order (:func:`group_rows`) -> (b, n, h * d).

    The h / kv query heads of one K/V head are rows of one matmul, so K/V are never repeated: the
    graph has no Tile of the prefix cache at every denoising step (and no transpose of it, the
    cache being heads first), and keeps the plain MatMul-Mul-Add-Softmax-MatMul pattern that
    attention fusions look for. Same arithmetic as repeating K/V: each logit and each output row
    is the same dot product."""
    b, h, n, d = q.shape
    kv = k.shape[1]
    logits = torch.matmul(q.reshape(b, kv, h // kv * n, d), k.transpose(-1, -2)) * scale + bias
    out = torch.matmul(torch.softmax(logits, -1), v)  # (b, kv, h / kv * n, d)
    return out.view(b, h, n, d).transpose(1, 2).reshape(b, n, h * d)


def group_rows(bias: torch.Tensor, groups: int) -> torch.Tensor:
    """A per-query additive bias (b, 1, n, m) in the row order of :func:`grouped_attention`'s
    logits, (b, 1, groups * n, m): once per step, not per layer."""
    return bias.repeat(1, 1, groups, 1)

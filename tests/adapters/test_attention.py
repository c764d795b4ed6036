"""legato.adapters.attention: grouped-query attention equals attention over repeated K/V."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from legato.adapters.attention import group_rows, grouped_attention  # noqa: E402


def _repeated(q, k, v, bias, scale):
    """The textbook form: every query head gets its own copy of its K/V head."""
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    w = torch.softmax(q @ k.transpose(-1, -2) * scale + bias, -1)
    out = (w @ v).transpose(1, 2)
    return out.reshape(*out.shape[:2], -1)


@pytest.mark.parametrize(("heads", "kv_heads"), [(15, 5), (8, 1), (4, 4)])
@pytest.mark.parametrize("bias_rows", ["per query", "shared"])
def test_grouped_attention_equals_attention_over_repeated_kv(heads, kv_heads, bias_rows):
    gen = torch.Generator().manual_seed(heads * 10 + kv_heads)
    n, m, d = 6, 11, 8
    q = torch.randn(1, heads, n, d, generator=gen)
    k, v = (torch.randn(1, kv_heads, m, d, generator=gen) for _ in range(2))
    rows = n if bias_rows == "per query" else 1
    bias = torch.where(torch.rand(1, 1, rows, m, generator=gen) < 0.3, -1e4, 0.0)
    grouped = group_rows(bias, heads // kv_heads) if rows > 1 else bias
    got = grouped_attention(q, k, v, grouped, 1 / math.sqrt(d))
    assert got.shape == (1, n, heads * d)
    torch.testing.assert_close(got, _repeated(q, k, v, bias, 1 / math.sqrt(d)), rtol=1e-5, atol=1e-6)


def test_each_query_head_reads_its_own_kv_head():
    """Head j reads K/V head j // (h / kv): with one-hot values the output says which it read."""
    heads, kv_heads, d = 6, 3, 3
    q = torch.zeros(1, heads, 1, d)
    k = torch.zeros(1, kv_heads, 1, d)
    v = torch.eye(kv_heads).reshape(1, kv_heads, 1, d)  # K/V head i's value is e_i
    out = grouped_attention(q, k, v, torch.zeros(1, 1, 1, 1), 1.0).reshape(heads, d)
    assert out.argmax(-1).tolist() == [0, 0, 1, 1, 2, 2]

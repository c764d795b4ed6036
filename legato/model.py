"""The reference flow VLA, split the way the device runs it.

PrefixEncoder ("VLM", once per chunk): image + instruction tokens + proprio state -> the
cross-attention keys and values of every flow-head layer, (b, L, 2, p, c). Computing K/V here
means the flow head never re-projects the prefix inside the denoising loop.

FlowHead (N times per chunk): (y, t, omega, state, kv) -> velocity. y (b, h, a) the current
chunk estimate, t (b, h) per-token flow time (t = 0 noise, t = 1 data), omega (b, h) the
per-token schedule channel, state (b, s) normalised proprio. Inputs and outputs are in
normalised action units. The state also enters the head directly (with the flow time, through
adaptive LayerNorm): absolute joint targets sit close to the current joint positions, and
reading them through cross-attention alone was the slowest thing for the model to learn.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from legato.config import PolicyConfig


def sinusoidal(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of flow time t (...,) in [0, 1] -> (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=t.dtype, device=t.device) / half)
    ang = 100.0 * t[..., None] * freqs  # t in [0, 1]: scale so the fastest frequency spans ~100 rad
    return torch.cat([torch.sin(ang), torch.cos(ang)], -1)


class Attention(nn.Module):
    """Multi-head attention on given queries and keys/values (both already projected)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.out = nn.Linear(width, width)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, n, c = q.shape
        split = lambda x: x.reshape(b, x.shape[1], self.heads, c // self.heads).transpose(1, 2)  # noqa: E731
        o = F.scaled_dot_product_attention(split(q), split(k), split(v))  # (b, heads, n, c / heads)
        return self.out(o.transpose(1, 2).reshape(b, n, c))


class EncoderBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.attn = Attention(width, heads)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.norm1(x)).chunk(3, -1)
        x = x + self.attn(q, k, v)
        return x + self.mlp(self.norm2(x))


class PrefixEncoder(nn.Module):
    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.width
        h, w = cfg.image_hw
        self.has_image = h > 0 and w > 0  # (0, 0): a state-only task (MetaWorld's push-wall)
        # A strided conv stem instead of a 2-layer-deep patchify ViT: 8x8 patches in two stages,
        # with x/y coordinate channels so positions are easy to read off (localising targets).
        # The instruction modulates the first stage (FiLM, as in RT-1), so the stem can pick out
        # the instructed colour before any attention has to bind words to pixels.
        if self.has_image:
            self.conv1 = nn.Conv2d(5, 48, 4, stride=4)
            self.conv2 = nn.Conv2d(48, c, 2, stride=2)
            self.film = nn.Linear(c, 2 * 48)
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)
            ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
            self.register_buffer("coords", torch.stack([xs, ys])[None], persistent=False)  # (1, 2, H, W)
            n_img = (h // 8) * (w // 8)
            self.img_pos = nn.Parameter(0.02 * torch.randn(1, n_img, c))
        self.tok_emb = nn.Embedding(cfg.vocab_size, c)
        self.tok_pos = nn.Parameter(0.02 * torch.randn(1, cfg.max_tokens, c))
        self.state_proj = nn.Linear(cfg.state_dim, c)
        self.blocks = nn.ModuleList(
            EncoderBlock(c, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.prefix_layers)
        )
        self.norm = nn.LayerNorm(c)
        self.kv = nn.Linear(c, cfg.head_layers * 2 * c)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """image (b, H, W, 3) uint8, tokens (b, l) int64, state (b, s) normalised -> kv (b, L, 2, p, c)."""
        return self.to_kv(self.features(image, tokens, state))

    def to_kv(self, feats: torch.Tensor) -> torch.Tensor:
        """Prefix features (b, p, c) -> per-head-layer keys and values (b, L, 2, p, c)."""
        b, p, _ = feats.shape
        kv = self.kv(feats)  # (b, p, L * 2 * c)
        return kv.reshape(b, p, self.cfg.head_layers, 2, self.cfg.width).permute(0, 2, 3, 1, 4)

    def image_tokens(self, image: torch.Tensor, tokens: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        """The conv stem's tokens (b, H/8 * W/8, c), FiLM-modulated by the instruction."""
        b = image.shape[0]
        x = image.permute(0, 3, 1, 2).float() / 255.0  # (b, 3, H, W)
        x = torch.cat([x, self.coords.expand(b, -1, -1, -1)], 1)
        real = (tokens != 0).to(words.dtype)[..., None]  # (b, l, 1), 0 = <pad>
        sentence = (words * real).sum(1) / real.sum(1).clamp_min(1.0)  # (b, c)
        gamma, beta = self.film(sentence)[:, :, None, None].chunk(2, 1)  # (b, 48, 1, 1) each
        x = F.gelu(self.conv1(x) * (1 + gamma) + beta)  # (b, 48, H/4, W/4)
        return self.conv2(x).flatten(2).transpose(1, 2) + self.img_pos

    def features(self, image: torch.Tensor, tokens: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """The prefix tokens after the encoder, (b, p, c), layer-normed."""
        words = self.tok_emb(tokens)  # (b, l, c)
        txt = words + self.tok_pos  # (b, l, c)
        st = self.state_proj(state)[:, None]  # (b, 1, c)
        if self.has_image:
            x = torch.cat([self.image_tokens(image, tokens, words), txt, st], 1)  # (b, p, c)
        else:
            x = torch.cat([txt, st], 1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


class HeadBlock(nn.Module):
    """Self-attention over action tokens, cross-attention to the prefix, MLP; flow time enters
    through per-token adaptive LayerNorm (shift, scale, gate), as in DiT."""

    def __init__(self, width: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(width)
        self.norm3 = nn.LayerNorm(width, elementwise_affine=False)
        self.qkv = nn.Linear(width, 3 * width)
        self.self_attn = Attention(width, heads)
        self.q_cross = nn.Linear(width, width)
        self.cross_attn = Attention(width, heads)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width)
        )
        self.mod = nn.Linear(width, 6 * width)
        nn.init.zeros_(self.mod.weight)
        nn.init.zeros_(self.mod.bias)

    def forward(self, x: torch.Tensor, temb: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        s1, c1, g1, s3, c3, g3 = self.mod(temb).chunk(6, -1)  # each (b, h, c)
        q, k_s, v_s = self.qkv(self.norm1(x) * (1 + c1) + s1).chunk(3, -1)
        x = x + (1 + g1) * self.self_attn(q, k_s, v_s)
        x = x + self.cross_attn(self.q_cross(self.norm2(x)), k, v)
        return x + (1 + g3) * self.mlp(self.norm3(x) * (1 + c3) + s3)


class FlowHead(nn.Module):
    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.width
        self.in_proj = nn.Linear(cfg.action_dim + 1, c)  # action channels + the omega channel
        self.pos = nn.Parameter(0.02 * torch.randn(1, cfg.horizon, c))
        self.time_mlp = nn.Sequential(nn.Linear(c, c), nn.GELU(), nn.Linear(c, c))
        self.state_mlp = nn.Sequential(nn.Linear(cfg.state_dim, c), nn.GELU(), nn.Linear(c, c))
        self.state_in = nn.Linear(cfg.state_dim, c)
        self.blocks = nn.ModuleList(HeadBlock(c, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.head_layers))
        self.norm = nn.LayerNorm(c)
        outputs = 2 if cfg.velocity_form == "corrective" else 1
        self.out = nn.Linear(c, outputs * cfg.action_dim)

    def velocity(self, raw: torch.Tensor, t: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
        """The last layer's output (b, h, a or 2 a) -> the velocity (b, h, a), per velocity_form.
        Legato's target is f (A - eps) with f = 1 - omega N (1 - t), known from the inputs:
        "factored" learns A - eps only; "corrective" adds omega N E, the correction of a wrong
        reference (A - A_ref); "direct" learns the whole target."""
        form = self.cfg.velocity_form
        if form == "direct":
            return raw
        kappa = omega * self.cfg.num_steps
        f = (1 - kappa * (1 - t))[..., None]
        if form == "factored":
            return raw * f
        d, e = raw.chunk(2, -1)
        return d * f + e * kappa[..., None]

    def forward(
        self, y: torch.Tensor, t: torch.Tensor, omega: torch.Tensor, state: torch.Tensor, kv: torch.Tensor
    ) -> torch.Tensor:
        """y (b, h, a), t (b, h), omega (b, h), state (b, s), kv (b, L, 2, p, c) -> velocity (b, h, a)."""
        x = self.in_proj(torch.cat([y, omega[..., None]], -1)) + self.pos + self.state_in(state)[:, None]
        temb = self.time_mlp(sinusoidal(t, self.cfg.width)) + self.state_mlp(state)[:, None]  # (b, h, c)
        for i, blk in enumerate(self.blocks):
            x = blk(x, temb, kv[:, i, 0], kv[:, i, 1])
        return self.velocity(self.out(self.norm(x)), t, omega)


class Policy(nn.Module):
    """Both halves together, for training and checkpoints."""

    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.prefix = PrefixEncoder(cfg)
        self.head = FlowHead(cfg)
        # Training-only auxiliary head: the instructed target's and the obstacle's positions
        # (x, y each, metres) from the pooled prefix. A dense signal for the vision stem, which
        # the flow loss alone teaches slowly on a CPU budget; never exported.
        self.aux = nn.Linear(cfg.width, 4)

    def num_params(self) -> dict[str, int]:
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return {"prefix": count(self.prefix), "head": count(self.head), "total": count(self)}

    def forward(
        self,
        image: torch.Tensor,
        tokens: torch.Tensor,
        state: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor,
        omega: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training forward: the prefix of b observations is encoded once and shared by the
        n = b * draws flow-head inputs that follow it in order (draws consecutive rows per
        observation). Returns velocity (n, h, a) and the auxiliary positions (b, 4)."""
        draws = y.shape[0] // image.shape[0]
        feats = self.prefix.features(image, tokens, state)  # (b, p, c)
        kv = self.prefix.to_kv(feats).repeat_interleave(draws, 0)  # (n, L, 2, p, c)
        return self.head(y, t, omega, state.repeat_interleave(draws, 0), kv), self.aux(feats.mean(1))

"""Vision transformers for the literature rows: ChannelViT (Bao et al. 2024) and its plain twin.

Both are a ViT of about ViT-Tiny width for 32x32 inputs: patch 4, dim 192, 3 heads, MLP ratio 4,
pre-norm blocks (LayerNorm eps 1e-6, GELU, qkv bias), a CLS token read through a final LayerNorm
and a linear head, as in the paper's code (DINO's ViT). Depth is 6 rather than ViT-Tiny's 12 so
that a CPU can train it. Hierarchical channel sampling is the training recipe's (channel_sampling
=hcs), not the model's: the paper samples inside the model; prismlab's trainer samples per chunk.

Any spatial size of at least one patch works: the positional embedding is learned on the img_size
grid and resized bicubically for another grid; as in the paper's code (DINO's), the patch conv
floors, so the last H % p rows and W % p columns are not read.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prismlab.channels import CHANNEL_NAMES, GRAY_ID, RGB_IDS, check_declared, declared_names
from prismlab.errors import ConfigError
from prismlab.models.base import NaiveAdapter, channel_ids, grouped
from prismlab.models.registry import register_model

REFERENCE = (
    "Bao et al. 2024, Channel Vision Transformers: An Image Is Worth 1 x 16 x 16 Words (ICLR); code insitro/ChannelViT"
)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if q.is_cuda or self.training:
            out = F.scaled_dot_product_attention(q, k, v)
        else:  # the same maths as products: FlopCounterMode counts no CPU attention kernel, and cards count here
            out = ((q * self.scale) @ k.transpose(-2, -1)).softmax(-1) @ v
        return self.drop(self.proj(out.transpose(1, 2).reshape(n, t, d)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float = 0.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _ViT(nn.Module):
    """The shared body: patch tokens from `embed_patches` (per subclass), CLS token, blocks, head."""

    name = "vit"

    def __init__(
        self,
        num_classes: int,
        in_chans: int,
        patch_size: int = 4,
        dim: int = 192,
        depth: int = 6,
        heads: int = 3,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        img_size: int = 32,
    ):
        super().__init__()
        if patch_size < 1 or dim < 1 or heads < 1 or dim % heads:
            raise ConfigError(
                f"{self.name}: dim ({dim}) must be a positive multiple of heads ({heads}), "
                f"patch_size ({patch_size}) positive"
            )
        if img_size < patch_size or img_size % patch_size:
            raise ConfigError(f"{self.name}: img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.patch_size, self.dim, self.grid = patch_size, dim, img_size // patch_size
        # The conv keeps PyTorch's default init, as in the paper's code (and timm's): only linear
        # layers and the learned tokens get trunc_normal(0.02).
        self.patch_embed = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.empty(1, dim, self.grid, self.grid))
        self.cls_token = nn.Parameter(torch.empty(1, 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio, dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        for p in (self.pos_embed, self.cls_token):
            nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def pos(self, gh: int, gw: int) -> torch.Tensor:
        """The positional embedding for a gh x gw patch grid, [gh * gw, dim] in row-major order."""
        pos = self.pos_embed
        if (gh, gw) != (self.grid, self.grid):
            pos = F.interpolate(pos, size=(gh, gw), mode="bicubic", align_corners=False)
        return pos.flatten(2)[0].t()

    def _grid(self, h: int, w: int) -> tuple[int, int]:
        p = self.patch_size
        if h < p or w < p:
            raise ConfigError(f"{self.name}: input {h}x{w} is smaller than one patch ({p}x{p})")
        return h // p, w // p

    def embed_patches(self, x: torch.Tensor, ids: tuple[int, ...]) -> torch.Tensor:
        raise NotImplementedError

    def embed(self, x: torch.Tensor, channels: Sequence[int] | str | None = None) -> torch.Tensor:
        """[N, m, H, W] -> the encoder's input tokens [N, T, dim], the CLS token first."""
        ids = channel_ids(channels)
        if x.shape[1] != len(ids):
            raise ConfigError(f"{self.name}: input has {x.shape[1]} channels but {len(ids)} channel ids were given")
        tokens = self.embed_patches(x, ids)
        return torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], 1)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens -> logits, read from the CLS token."""
        return self.head(self.norm(self.blocks(tokens)[:, 0]))

    def forward(self, x: torch.Tensor | list[torch.Tensor], channels: Sequence | str | None = None) -> torch.Tensor:
        """channels: ids (0, 2) or a subset name "RB"; for a list of chunks, one of those per chunk."""
        if not isinstance(x, (list, tuple)):
            return self.encode(self.embed(x, channels))
        tokens = [self.embed(xi, ci) for xi, ci in zip(x, channels)]
        # A mixed batch: chunks of equal sequence length share one pass.
        return grouped(
            [t.shape[1] for t in tokens],
            [len(t) for t in tokens],
            lambda members: self.encode(torch.cat([tokens[i] for i in members])),
        )


class ChannelViT(_ViT):
    """Every present channel is tokenised separately (one shared 1 -> dim patch embedding), plus a
    learned embedding of its id and the positional embedding shared across channels.

    Tokens = m * (H/p) * (W/p) + 1, so attention and every linear layer cost grows with the number
    m of channels (attention faster than linearly). The tokens form a set tagged by id and position,
    so the order in which channels arrive does not matter. Channel ids: R, G, B, L by default;
    declare more with `channel_names=(..., "NIR")` or `num_channel_ids=5`.
    """

    name = "channelvit"

    def __init__(
        self, num_classes: int, num_channel_ids: int | None = None, channel_names: Sequence[str] | None = None, **kw
    ):
        super().__init__(num_classes, in_chans=1, **kw)
        self.channel_names = declared_names("channelvit", num_channel_ids, channel_names)
        self.channel_embed = nn.Parameter(torch.empty(len(self.channel_names), self.dim))
        nn.init.trunc_normal_(self.channel_embed, std=0.02)

    def embed_patches(self, x: torch.Tensor, ids: tuple[int, ...]) -> torch.Tensor:
        check_declared("channelvit", ids, self.channel_names)
        n, m, h, w = x.shape
        gh, gw = self._grid(h, w)
        # All channels of all images through the one patch embedding, as a batch of n * m planes.
        t = self.patch_embed(x.reshape(n * m, 1, h, w)).flatten(2).transpose(1, 2)  # [n*m, gh*gw, dim]
        t = t.reshape(n, m, gh * gw, self.dim) + self.channel_embed[list(ids)].view(1, m, 1, self.dim)
        return (t + self.pos(gh, gw)).reshape(n, m * gh * gw, self.dim)


class PlainViT(_ViT):
    """The same ViT over a fixed RGB input: missing channels zero-filled, gray (L) repeated into R,
    G and B (prismlab's naive adapter); tokens = (H/p) * (W/p) + 1 whatever the channels.

    The paper's HCS-ViT also scales the kept channels by (channels present) / (channels kept) while
    training; this twin keeps the naive row's policy, so that the two differ in the first layer only.
    """

    name = "vit_hcs"
    channel_names = CHANNEL_NAMES

    def __init__(self, num_classes: int, **kw):
        super().__init__(num_classes, in_chans=3, **kw)
        self.adapter = NaiveAdapter()

    def embed_patches(self, x: torch.Tensor, ids: tuple[int, ...]) -> torch.Tensor:
        if ids != (GRAY_ID,) and not (set(ids) <= set(RGB_IDS) and len(set(ids)) == len(ids)):
            raise ConfigError(
                f"vit_hcs: channel ids {ids}: the zero-fill policy takes distinct R, G, B ids "
                f"(0-2) or L ({GRAY_ID}) alone"
            )
        gh, gw = self._grid(*x.shape[2:])
        t = self.patch_embed(self.adapter(x, ids)).flatten(2).transpose(1, 2)
        return t + self.pos(gh, gw)


@register_model("channelvit", reference=REFERENCE)
def channelvit(**kw) -> nn.Module:
    """ChannelViT: each channel is tokenised alone with a learned channel embedding, so tokens and cost grow
    with the channels present; ViT-Tiny width (192, 3 heads, MLP 4), depth 6, patch 4 (32x32: 64 tokens each)."""
    return ChannelViT(**kw)


@register_model("vit_hcs", reference=REFERENCE + " (its HCS-ViT baseline)")
def vit_hcs(**kw) -> nn.Module:
    """ChannelViT's plain twin: one patch embedding over RGB with missing channels zero-filled, so its cost
    is fixed; ViT-Tiny width (192, 3 heads, MLP 4), depth 6, patch 4 (32x32: 64 tokens)."""
    return PlainViT(**kw)

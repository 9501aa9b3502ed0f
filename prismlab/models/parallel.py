"""The original report's Method 1: four parallel branches on one input, joined by an MLP head.

Branches: a 3-conv block, a self-attention block (SAGAN-style, Zhang et al. 2019), an RRDB
(residual-in-residual dense block, ESRGAN, Wang et al. 2018) and a GCN (Kipf & Welling 2017) over
the feature map's pixels as the nodes of their 4-neighbour grid graph.

Deviations from the report, both for cost:
- A shared strided stem (two 3x3 stride-2 convs, /4) feeds the branches instead of the raw image,
  so attention and GCN see 16x16 = 256 pixels at 64px (self-attention over 64x64 = 4096 tokens
  costs ~4096^2 per channel, far beyond a 2-core CPU budget).
- The report's head flattened the whole feature map (billions of weights at 224px); here each
  branch is global-average-pooled and the MLP head sees the concatenated pooled vectors.
Any spatial size works: attention and GCN act on however many pixels arrive.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prismlab.models.base import classifier
from prismlab.models.fuse import conv_bn_relu
from prismlab.models.registry import register_model


class ConvBlock(nn.Module):
    """The report's 3-conv block: conv-BN-ReLU x3, widening, with a 2x2 max-pool between convs."""

    def __init__(self, cin: int, widths=(64, 128, 128)):
        super().__init__()
        layers, c = [], cin
        for i, w in enumerate(widths):
            layers += ([nn.MaxPool2d(2, ceil_mode=True)] if i else []) + [conv_bn_relu(c, w)]
            c = w
        self.body = nn.Sequential(*layers)
        self.out_channels = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SelfAttention(nn.Module):
    """SAGAN self-attention over all H*W pixels: out = x + gamma * V softmax(Q^T K / sqrt(d))^T,
    with 1x1-conv projections and gamma a learned scalar that starts at 0 (as in SAGAN)."""

    def __init__(self, c: int, qk: int | None = None):
        super().__init__()
        qk = qk or max(c // 4, 1)
        self.q, self.k, self.v = nn.Conv2d(c, qk, 1), nn.Conv2d(c, qk, 1), nn.Conv2d(c, c, 1)
        self.gamma = nn.Parameter(torch.zeros(()))
        self.scale = qk**-0.5
        self.out_channels = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x).flatten(2), self.k(x).flatten(2), self.v(x).flatten(2)  # [N, d, HW]
        attn = torch.softmax(torch.bmm(q.transpose(1, 2), k) * self.scale, dim=-1)  # [N, HW, HW], rows sum to 1
        return x + self.gamma * torch.bmm(v, attn.transpose(1, 2)).reshape(x.shape)


class DenseBlock(nn.Module):
    """ESRGAN's residual dense block: 5 convs, each on the concatenation of the input and all
    preceding outputs (LeakyReLU 0.2, no BatchNorm), out = x + 0.2 * conv5(...)."""

    def __init__(self, c: int, growth: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(c + i * growth, growth if i < 4 else c, 3, padding=1) for i in range(5))
        for conv in self.convs:  # ESRGAN's initialisation: Kaiming scaled by 0.1
            nn.init.kaiming_normal_(conv.weight)
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in self.convs[:-1]:
            feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), 0.2))
        return x + 0.2 * self.convs[-1](torch.cat(feats, 1))


class RRDB(nn.Module):
    """ESRGAN's residual-in-residual dense block: out = x + 0.2 * RDB3(RDB2(RDB1(x)))."""

    def __init__(self, c: int, growth: int = 16):
        super().__init__()
        self.blocks = nn.Sequential(*(DenseBlock(c, growth) for _ in range(3)))
        self.out_channels = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.blocks(x)


def grid_propagate(x: torch.Tensor) -> torch.Tensor:
    """A_hat @ x over the pixels of x [N, C, H, W], A_hat = D^-1/2 (A + I) D^-1/2 with A the
    4-neighbour grid graph of the incoming H x W (degrees 3..5 with the self-loop, fewer at the
    border). Computed with shifts, not an N x N matrix: O(HW), any size, no parameters, and
    traceable by torch.fx (prismlab.analysis.layers counts no layer here)."""
    d_isqrt = _neighbour_sum(torch.ones_like(x[:, :1])).rsqrt()
    return d_isqrt * _neighbour_sum(d_isqrt * x)


def _neighbour_sum(x: torch.Tensor) -> torch.Tensor:
    """(A + I) @ x on the grid: each pixel plus its up, down, left and right neighbours (zero outside)."""
    p = F.pad(x, (1, 1, 1, 1))
    return p[..., 1:-1, 1:-1] + p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]


def grid_adjacency(h: int, w: int) -> torch.Tensor:
    """The dense [h*w, h*w] matrix that grid_propagate applies (row-major pixels), for inspection."""
    eye = torch.eye(h * w).reshape(h * w, 1, h, w)  # column j: the j-th basis image
    return grid_propagate(eye).reshape(h * w, h * w).T


class GCN(nn.Module):
    """Kipf & Welling graph convolutions over the pixels: H' = ReLU(A_hat BN(H W)) per layer, the
    weight W a 1x1 conv shared by all nodes (BN folds into it at inference)."""

    def __init__(self, cin: int, widths=(64, 64)):
        super().__init__()
        layers, c = [], cin
        for w in widths:
            layers.append(nn.Sequential(nn.Conv2d(c, w, 1, bias=False), nn.BatchNorm2d(w)))
            c = w
        self.layers = nn.ModuleList(layers)
        self.out_channels = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = F.relu(grid_propagate(layer(x)))
        return x


class ParallelNet(nn.Module):
    """Stem (/4), then conv block, self-attention, RRDB and GCN side by side, each pooled, then an
    MLP head on the concatenation. The layer count's longest path runs through the RRDB (15 convs)."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 50,
        stem_width: int = 32,
        growth: int = 16,
        hidden: int = 256,
        dropout: float = 0.3,
    ):
        super().__init__()
        c = stem_width
        self.stem = nn.Sequential(conv_bn_relu(in_channels, c, 2), conv_bn_relu(c, c, 2))
        self.branches = nn.ModuleList([ConvBlock(c), SelfAttention(c), RRDB(c, growth), GCN(c)])
        width = sum(b.out_channels for b in self.branches)
        self.head = nn.Sequential(
            nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
        )

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each branch's globally average-pooled output, [N, C_b] each."""
        x = self.stem(x)
        return [b(x).mean((2, 3)) for b in self.branches]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat(self.features(x), 1))


@register_model(
    "seed_parallel",
    reference="the original homework report; SAGAN (Zhang et al. 2019), ESRGAN's RRDB "
    "(Wang et al. 2018), GCN (Kipf & Welling 2017)",
)
def seed_parallel(**kw) -> nn.Module:
    """The original report's Method 1: conv block, self-attention, RRDB and GCN in parallel (after a /4 stem),
    GAP, MLP."""
    return classifier(ParallelNet, **kw)

"""The original report's "cool model": three residual conv blocks, spatial attention, GAP, linear."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from prismlab.models.base import classifier
from prismlab.models.fuse import conv_bn_relu
from prismlab.models.gate import SpatialGate
from prismlab.models.registry import register_model


class ResBlock(nn.Module):
    """conv3x3-BN-ReLU plus a 1x1 conv shortcut: out = block(x) + conv1x1(x)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.block = conv_bn_relu(cin, cout)
        self.shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) + self.shortcut(x)


class SpatialAttention(SpatialGate):
    """CBAM-style: every feature map weighted by the spatial gate."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class CoolCNN(nn.Module):
    """ResBlock + max-pool per width, spatial attention, dropout, GAP, linear.

    Counted layers (prismlab.analysis.layers): the three block convs (their shortcuts run in
    parallel), the attention conv and the linear head: 5 in total, 3 in the body.
    """

    def __init__(
        self, in_channels: int = 3, num_classes: int = 50, widths: Sequence[int] = (64, 128, 256), dropout: float = 0.3
    ):
        super().__init__()
        layers, c = [], in_channels
        for w in widths:
            layers += [ResBlock(c, w), nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.attention = SpatialAttention(7)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attention(self.features(x)))


@register_model("seed_cool_model", reference="the original homework report; its attention is CBAM's (Woo et al. 2018)")
def seed_cool_model(**kw) -> nn.Module:
    """The original report's cool model: 3 residual conv blocks (1x1 shortcuts), spatial attention, GAP, FC."""
    return classifier(CoolCNN, **kw)

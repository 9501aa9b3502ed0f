"""The original course report's two channel adapters, sigmoid and pool_channel_attention.

An adapter turns whatever channels arrive into the trunk's fixed input (see models/base.py). The
others: naive (models/base.py), dynamic_conv (models/dynamic.py), channelset, ours (models/channelset.py).
"""

from __future__ import annotations

import torch
from torch import nn

from prismlab.errors import ConfigError
from prismlab.models.base import NaiveAdapter
from prismlab.models.gate import SpatialGate
from prismlab.models.registry import register_adapter

REPORT = "the original homework report"


@register_adapter("sigmoid", reference=REPORT)
class SigmoidAdapter(NaiveAdapter):
    """The report's "sigmoid re-scaling of the input": naive zero-fill into R, G, B (L repeated),
    then x' = sigmoid(a_c * x + b_c) with a learned a_c, b_c per channel.

    Init a=1, b=0: on normalised inputs (mostly in [-2, 2]) sigmoid is close to linear there, so
    training starts from a squashed copy of the naive input rather than a saturated one.
    """

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, self.out_channels, 1, 1))
        self.shift = nn.Parameter(torch.zeros(1, self.out_channels, 1, 1))

    def forward(self, x: torch.Tensor, channels: tuple[int, ...]) -> torch.Tensor:
        return torch.sigmoid(self.scale * super().forward(x, channels) + self.shift)


@register_adapter(
    "pool_channel_attention", reference=REPORT + "; its gate is CBAM's spatial attention (Woo et al. 2018)"
)
class PoolChannelAttention(SpatialGate):
    """The report's PoolChannelAttention: mean and max over the channel axis (any m), a size-preserving
    conv and a sigmoid give a spatial gate; the output is the gated channel mean, for a 1-channel trunk.

    Channel ids are ignored by design."""

    out_channels = 1

    def __init__(self, kernel_size: int = 7):
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"pool_channel_attention: kernel_size must be odd and positive, got {kernel_size}")
        super().__init__(kernel_size)

    def forward(self, x: torch.Tensor, channels: tuple[int, ...]) -> torch.Tensor:
        return self.gate(x) * x.mean(1, keepdim=True)

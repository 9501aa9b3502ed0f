"""Channel adapters: whatever channels arrive -> the trunk's fixed input. See models/base.py.

naive: zero-fill missing channels (models/base.py); sigmoid and pool_channel_attention: the
original course report's baselines; dynamic_conv: dynamic convolution (models/dynamic.py), what most
other solutions built; channelset: ours (models/channelset.py).
"""

from __future__ import annotations

import torch
from torch import nn

from prismlab.errors import ConfigError
from prismlab.models.base import NaiveAdapter
from prismlab.models.channelset import ChannelSetAdapter
from prismlab.models.dynamic import DynamicConvAdapter
from prismlab.models.gate import SpatialGate


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


class PoolChannelAttention(SpatialGate):
    """The report's PoolChannelAttention: mean- and max-pool over the channel axis (any m) to two
    maps, a small conv (2 -> 1, size-preserving) and a sigmoid give a spatial gate; the output is
    the gated channel mean, one channel for a 1-channel trunk. Channel ids are ignored by design."""

    out_channels = 1

    def __init__(self, kernel_size: int = 7):
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"pool_channel_attention: kernel_size must be odd and positive, got {kernel_size}")
        super().__init__(kernel_size)

    def forward(self, x: torch.Tensor, channels: tuple[int, ...]) -> torch.Tensor:
        return self.gate(x) * x.mean(1, keepdim=True)


ADAPTERS = {
    "naive": NaiveAdapter,
    "sigmoid": SigmoidAdapter,
    "pool_channel_attention": PoolChannelAttention,
    "channelset": ChannelSetAdapter,
    "dynamic_conv": DynamicConvAdapter,
}


def make_adapter(name: str, **kw) -> nn.Module:
    if name not in ADAPTERS:
        raise ConfigError(f"unknown adapter {name!r} (known: {', '.join(ADAPTERS)})")
    try:
        return ADAPTERS[name](**kw)
    except TypeError as e:  # an unknown adapter_kw key is the user's mistake, not a crash
        raise ConfigError(f"adapter {name!r}: {e}") from None

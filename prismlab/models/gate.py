"""The mean+max spatial gate of CBAM (Woo et al. 2018), shared by the cool model's attention and
the PoolChannelAttention adapter."""

from __future__ import annotations

import torch
from torch import nn


class SpatialGate(nn.Module):
    """gate(x) = sigmoid(conv_k([mean over channels of x, max over channels of x])): one weight in
    (0, 1) per pixel, for any number of channels. Subclasses choose what the gate multiplies."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))

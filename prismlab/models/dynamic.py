"""Dynamic convolution as a channel adapter (Chen et al. 2020, "Dynamic Convolution: Attention
over Convolution Kernels"): the original report's reference, and the design most other solutions
of the assignment built.

Missing channels are zero-filled as in the naive net (gray repeated into R, G, B); then K 3x3
kernels are mixed per image by an attention computed from the image's channel means and the
mask of present channels, and the mixed kernel's output is added to the filled image. The kernels
start small and different (identical kernels would get identical gradients under the near-uniform
early attention and never part), so at init this is close to the naive adapter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prismlab.channels import GRAY_ID
from prismlab.errors import ConfigError
from prismlab.models.base import NaiveAdapter
from prismlab.models.registry import register_adapter


@register_adapter("dynamic_conv", reference="Chen et al. 2020, Dynamic Convolution: Attention over Convolution Kernels")
class DynamicConvAdapter(NaiveAdapter):
    """Dynamic convolution: zero-fill as naive, then K kernels mixed per image by an attention over its
    channel means and present-channel mask; the mixed kernel's output is added to the filled image."""

    out_channels = 3

    def __init__(self, kernels: int = 4, kernel_size: int = 3, hidden: int = 16, temperature: float = 30.0):
        super().__init__()
        if kernels < 1 or kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"dynamic_conv: kernels >= 1 and an odd kernel_size, got {kernels}, {kernel_size}")
        c = self.out_channels
        self.k, self.temperature = kernel_size, temperature
        self.weight = nn.Parameter(0.01 * torch.randn(kernels, c, c, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(kernels, c))
        # Attention input: per-channel means of the filled image and the 0/1 mask of present channels.
        self.attention = nn.Sequential(nn.Linear(2 * c, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, kernels))

    def forward(self, x: torch.Tensor, channels: tuple[int, ...]) -> torch.Tensor:
        filled = super().forward(x, channels)
        n, c, h, w = filled.shape
        mask = filled.new_zeros(n, c)
        mask[:, [0, 1, 2] if channels == (GRAY_ID,) else list(channels)] = 1.0
        # The paper's softmax temperature (30 at the start) keeps the kernels' attention near uniform early on.
        pi = (self.attention(torch.cat([filled.mean((2, 3)), mask], 1)) / self.temperature).softmax(1)  # [n, K]
        weight = torch.einsum("nk,koihw->noihw", pi, self.weight).reshape(n * c, c, self.k, self.k)
        bias = (pi @ self.bias).reshape(n * c)
        # One grouped conv applies each image's own kernel.
        out = F.conv2d(filled.reshape(1, n * c, h, w), weight, bias, padding=self.k // 2, groups=n)
        return filled + out.view(n, c, h, w)

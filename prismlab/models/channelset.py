"""ChannelSet adapter: the image's channels are a *set*, not a fixed stack.

Each present channel goes through the same small stem (the CHAMMI "Depthwise" / ChannelViT idea,
for a CNN), modulated by a learned embedding of *which* channel it is; the per-channel results are
then pooled over the channels. So one set of weights serves any subset, any order, any number of
channels, and any spatial size, and a new channel kind (e.g. NIR) only needs a new id.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from prismlab.channels import check_declared, declared_names
from prismlab.errors import ConfigError
from prismlab.models.registry import register_adapter

POOLS = ("mean", "attention")


@register_adapter(
    "channelset",
    reference="this project, after ChannelViT (Bao et al. 2024), CHAMMI's Depthwise "
    "baseline (Chen et al. 2023) and FiLM (Perez et al. 2018)",
)
class ChannelSetAdapter(nn.Module):
    """Ours: every present channel through one shared stem, modulated by a learned embedding of its id
    and pooled over the channels, plus a linear path that starts as mean imputation.

    [N, m, H, W] with channel ids -> [N, out_channels, H, W], the same for any m >= 1.

    Per channel c with id i: h = conv_kxk(x_c) (1 -> hidden), FiLM by id: h * (1 + gamma_i) + beta_i,
    GELU, then 1x1 conv (hidden -> out); pooled over the present channels by a mean or, with
    pool="attention", a softmax over channels of a per-pixel score (1x1 conv of h). To that a
    linear path adds s + sum_c (x_c - s) * w_i, with s the mean of the present channels and w_i in
    R^out one learned vector per id (mean imputation at init). Both parts are averages or centred
    sums, so the output's scale does not grow with m, and both are symmetric, so the order in
    which channels arrive does not matter.

    Channel ids: R, G, B, L by default; declare more with `channel_names=(..., "NIR")` or
    `num_channel_ids=5`.

    set_path=False keeps the linear path alone: no conv, so the adapter adds no layer and the
    trunk's own first conv does the work (the form in front of the 4-layer shallow net).
    """

    def __init__(
        self,
        out_channels: int = 3,
        hidden: int = 8,
        kernel_size: int = 3,
        pool: str = "mean",
        num_channel_ids: int | None = None,
        channel_names: Sequence[str] | None = None,
        set_path: bool = True,
    ):
        super().__init__()
        if pool not in POOLS:
            raise ConfigError(f"channelset: unknown pool {pool!r} (choose from {', '.join(POOLS)})")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"channelset: kernel_size must be odd and positive (keeps H, W), got {kernel_size}")
        self.channel_names = declared_names("channelset", num_channel_ids, channel_names)
        self.out_channels, self.hidden, self.pool = out_channels, hidden, pool

        self.stem = nn.Conv2d(1, hidden, kernel_size, padding=kernel_size // 2)
        # One row per channel id: [gamma | beta]. Zero init: every channel starts with the same
        # shared stem, and the ids learn how to differ from there.
        self.channel_embed = nn.Embedding(len(self.channel_names), 2 * hidden)
        nn.init.zeros_(self.channel_embed.weight)
        # The linear path: s = the mean of the present channels fills every output, and each
        # channel adds its difference from s along its id's vector. At init (R -> e_R, G -> e_G,
        # B -> e_B) a present channel passes unchanged and a missing one is filled with s: RGB stays
        # RGB, R alone becomes (R, R, R), a gray-like image, rather than the zero-filled (R, 0, 0)
        # that a trunk at a fixed stem handles badly. L and declared ids (NIR) join the mean too.
        # Named chroma so that a checkpoint with the zero-filling design's `linear` table fails to
        # load instead of loading into different maths.
        self.chroma = nn.Embedding(len(self.channel_names), out_channels)
        with torch.no_grad():
            self.chroma.weight.zero_()
            for i in range(min(3, out_channels, len(self.channel_names))):
                self.chroma.weight[i, i] = 1.0
        if not set_path:
            self.stem = self.channel_embed = None
            return
        self.act = nn.GELU()
        self.proj = nn.Conv2d(hidden, out_channels, 1)
        self.score = nn.Conv2d(hidden, 1, 1) if pool == "attention" else None

    def _ids(self, channels: Sequence[int], m: int, device: torch.device) -> torch.Tensor:
        channels = tuple(int(c) for c in channels)
        if len(channels) != m:
            raise ValueError(f"channelset: input has {m} channels but {len(channels)} channel ids were given")
        check_declared("channelset", channels, self.channel_names)
        return torch.tensor(channels, device=device)

    def forward(self, x: torch.Tensor, channels: Sequence[int]) -> torch.Tensor:
        n, m, height, width = x.shape
        ids = self._ids(channels, m, x.device)
        s = x.mean(1, keepdim=True)
        w = self.chroma(ids).view(1, m, self.out_channels, 1, 1)
        linear = s + ((x - s).view(n, m, 1, height, width) * w).sum(1)
        if self.stem is None:
            return linear
        # All channels of all images through the shared stem in one batched conv.
        h = self.stem(x.reshape(n * m, 1, height, width)).view(n, m, self.hidden, height, width)
        gamma, beta = self.channel_embed(ids).view(1, m, 2, self.hidden, 1, 1).unbind(2)
        h = self.act(h * (1 + gamma) + beta).view(n * m, self.hidden, height, width)
        out = self.proj(h).view(n, m, self.out_channels, height, width)
        if self.score is None:
            out = out.mean(1)
        else:
            out = (self.score(h).view(n, m, 1, height, width).softmax(1) * out).sum(1)
        return out + linear

    def forward_masked(self, x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """forward() for the channels marked present: x [N, K, H, W] holds every declared id in id
        order, present [K] is 1.0 where a channel is there (models/any_subset.py). The absent planes
        are computed and weighted by zero, so one graph serves every subset."""
        n, k, height, width = x.shape
        p = present.to(x.dtype).view(1, k, 1, 1)
        m = p.sum()
        s = (x * p).sum(1, keepdim=True) / m
        w = self.chroma.weight.view(1, k, self.out_channels, 1, 1)
        linear = s + (((x - s) * p).view(n, k, 1, height, width) * w).sum(1)
        if self.stem is None:
            return linear
        h = self.stem(x.reshape(n * k, 1, height, width)).view(n, k, self.hidden, height, width)
        gamma, beta = self.channel_embed.weight.view(1, k, 2, self.hidden, 1, 1).unbind(2)
        h = self.act(h * (1 + gamma) + beta).view(n * k, self.hidden, height, width)
        out = self.proj(h).view(n, k, self.out_channels, height, width)
        weight = p.view(1, k, 1, 1, 1)
        if self.score is None:
            out = (out * weight).sum(1) / m
        else:
            score = self.score(h).view(n, k, 1, height, width).masked_fill(weight == 0, float("-inf"))
            out = (score.softmax(1) * out).sum(1)
        return out + linear

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

from prismlab.data.channels import CHANNEL_NAMES
from prismlab.errors import ConfigError

POOLS = ("mean", "attention")
LINEAR = ("impute", "zero")


class ChannelSetAdapter(nn.Module):
    """[N, m, H, W] with channel ids -> [N, out_channels, H, W], the same for any m >= 1.

    Per channel c with id i: h = conv_kxk(x_c) (1 -> hidden), FiLM by id: h * (1 + gamma_i) + beta_i,
    GELU, then 1x1 conv (hidden -> out), plus a linear path x_c * w_i (w_i in R^out, one per id).
    Pooling over the present channels is a mean or, with
    pool="attention", a softmax over channels of a per-pixel score (1x1 conv of h). Both are
    averages, so the output's scale does not grow with m, and both are symmetric, so the order in
    which channels arrive does not matter.

    Channel ids: R, G, B, L by default; declare more with `channel_names=(..., "NIR")` or
    `num_channel_ids=5`.
    """

    def __init__(
        self,
        out_channels: int = 3,
        hidden: int = 8,
        kernel_size: int = 3,
        pool: str = "mean",
        num_channel_ids: int | None = None,
        channel_names: Sequence[str] | None = None,
        linear: str = "impute",
    ):
        super().__init__()
        if pool not in POOLS:
            raise ConfigError(f"channelset: unknown pool {pool!r} (choose from {', '.join(POOLS)})")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"channelset: kernel_size must be odd and positive (keeps H, W), got {kernel_size}")
        if channel_names is None:
            n = len(CHANNEL_NAMES) if num_channel_ids is None else int(num_channel_ids)
            # Undeclared names beyond R, G, B, L are shown by their id.
            channel_names = tuple(CHANNEL_NAMES[:n]) + tuple(f"#{i}" for i in range(len(CHANNEL_NAMES), n))
        elif num_channel_ids is not None and num_channel_ids != len(channel_names):
            raise ConfigError(
                f"channelset: num_channel_ids={num_channel_ids} but {len(channel_names)} channel_names given"
            )
        if len(channel_names) < 1:
            raise ConfigError("channelset: at least one channel id must be declared")
        self.channel_names = tuple(channel_names)
        if linear not in LINEAR:
            raise ConfigError(f"channelset: unknown linear {linear!r} (choose from {', '.join(LINEAR)})")
        self.out_channels, self.hidden, self.pool, self.linear_mode = out_channels, hidden, pool, linear

        self.stem = nn.Conv2d(1, hidden, kernel_size, padding=kernel_size // 2)
        # One row per channel id: [gamma | beta]. Zero init: every channel starts with the same
        # shared stem, and the ids learn how to differ from there.
        self.channel_embed = nn.Embedding(len(self.channel_names), 2 * hidden)
        nn.init.zeros_(self.channel_embed.weight)
        # A linear path per id (a 1x1 map of the channel into the output space), so the adapter can
        # pass colour straight through: for RGB it starts as the identity, and the trunk sees the
        # image as a naive net would. The nonlinear stem above adds what one channel alone needs.
        self.linear = nn.Embedding(len(self.channel_names), out_channels)
        with torch.no_grad():
            self.linear.weight.zero_()
            rgb_gain = 1.0 if linear == "impute" else 3.0  # "zero": the mean over R, G, B divides by 3
            for i in range(min(3, out_channels, len(self.channel_names))):
                self.linear.weight[i, i] = rgb_gain
            if len(self.channel_names) > 3 and linear == "zero":
                self.linear.weight[3] = 1.0  # L: gray into every output, like R=G=B
        self.act = nn.GELU()
        self.proj = nn.Conv2d(hidden, out_channels, 1)
        self.score = nn.Conv2d(hidden, 1, 1) if pool == "attention" else None

    def _ids(self, channels: Sequence[int], m: int, device: torch.device) -> torch.Tensor:
        channels = tuple(int(c) for c in channels)
        if len(channels) != m:
            raise ValueError(f"channelset: input has {m} channels but {len(channels)} channel ids were given")
        for c in channels:
            if not 0 <= c < len(self.channel_names):
                raise ConfigError(
                    f"channelset: channel id {c} was not declared (known: "
                    + ", ".join(f"{i}={n}" for i, n in enumerate(self.channel_names))
                    + "; declare more with num_channel_ids= or channel_names=)"
                )
        return torch.tensor(channels, device=device)

    def forward(self, x: torch.Tensor, channels: Sequence[int]) -> torch.Tensor:
        n, m, height, width = x.shape
        ids = self._ids(channels, m, x.device)
        # All channels of all images through the shared stem in one batched conv.
        h = self.stem(x.reshape(n * m, 1, height, width)).view(n, m, self.hidden, height, width)
        gamma, beta = self.channel_embed(ids).view(1, m, 2, self.hidden, 1, 1).unbind(2)
        h = self.act(h * (1 + gamma) + beta).view(n * m, self.hidden, height, width)
        out = self.proj(h).view(n, m, self.out_channels, height, width)
        w = self.linear(ids).view(1, m, self.out_channels, 1, 1)
        if self.score is None:
            out = out.mean(1)
        else:
            out = (self.score(h).view(n, m, 1, height, width).softmax(1) * out).sum(1)
        if self.linear_mode == "zero":
            return out + (x.view(n, m, 1, height, width) * w).mean(1)
        # "impute": s = the mean of the present channels fills every output, and each channel adds
        # its difference from s along its id's vector. At init (w_R = e_R, ...) a present channel
        # passes unchanged and a missing one is filled with s: RGB stays RGB, R alone becomes
        # (R, R, R), a gray-like image, instead of the zero-filled (R, 0, 0) a naive net never sees.
        s = x.mean(1, keepdim=True)
        return out + s + ((x - s).view(n, m, 1, height, width) * w).sum(1)

"""Bag of channels: late fusion, each channel encoded alone and the features averaged (after DINO BoC, "Scaling
Channel-Adaptive Self-Supervised Learning", TMLR 2025, which found independent encoding of channels beating joint
encoding at scale).

The trunk (baseline_cnn's) runs once per present channel, the m passes of a batch batched as N * m images, so an
image with m channels costs m trunk passes; the head runs once per image on the mean of its channels' pooled
features, which makes the result independent of the order in which channels arrive.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from prismlab.errors import ConfigError
from prismlab.models.base import channel_ids, declared_ids, grouped
from prismlab.models.registry import make_adapter, register_model
from prismlab.models.subset_bn import convert_subset_bn, subset_index, subset_norms, use_subset
from prismlab.models.trunks import BaselineCNN

BOC = "after DINO BoC (Scaling Channel-Adaptive Self-Supervised Learning, TMLR 2025); this project's CNN form"


class BagOfChannels(nn.Module):
    """Each present channel alone through `adapter` (called with that one channel and its id) and the trunk's
    body, a per-id FiLM of the first conv's normalised output, pooled features averaged over channels, then
    the head."""

    def __init__(self, adapter: nn.Module, trunk: BaselineCNN, num_ids: int):
        super().__init__()
        if not (isinstance(trunk.features[1], nn.BatchNorm2d) and isinstance(trunk.head[1], nn.Flatten)):
            raise ValueError(
                "bag_of_channels needs a trunk laid out as BaselineCNN's (conv, BatchNorm, ...; pool, flatten, ...)"
            )
        self.adapter = adapter
        # The trunk in four parts, so that the id can enter after the first conv and the channels can be
        # averaged between the pooled features and the head. Each part stays a Sequential: conv+BN still fold.
        self.stem, self.body = trunk.features[:2], trunk.features[2:]
        self.pool, self.head = trunk.head[:2], trunk.head[2:]
        # One row per id: [gamma | beta]. Zero init: every channel starts through the same trunk.
        self.film = nn.Embedding(num_ids, 2 * trunk.features[0].out_channels)
        nn.init.zeros_(self.film.weight)

    def forward(self, x: torch.Tensor | list[torch.Tensor], channels: Sequence | str | None = None) -> torch.Tensor:
        """channels: ids (0, 2) or a subset name "RB"; for a list of chunks (a mixed batch), one of those per chunk."""
        if not isinstance(x, (list, tuple)):
            x, channels = [x], [channels]
        chunks = [(xi, channel_ids(ci)) for xi, ci in zip(x, channels)]
        norms = subset_norms(self.body)
        if not norms:  # the body's BatchNorm sees the whole mix, as in Classifier
            return self._logits(chunks)

        def run(members: list[int]) -> torch.Tensor:  # per-subset statistics: a subset's chunks together
            with use_subset(self, chunks[members[0]][1]):
                return self._logits([chunks[i] for i in members])

        return grouped([subset_index(ids, norms[0].num_ids) for _, ids in chunks], [len(xi) for xi, _ in chunks], run)

    def _logits(self, chunks: list[tuple[torch.Tensor, tuple[int, ...]]]) -> torch.Tensor:
        singles, ids = [], []
        for xi, ci in chunks:
            if xi.shape[1] != len(ci):
                raise ValueError(f"bag_of_channels: input has {xi.shape[1]} channels but {len(ci)} channel ids")
            unknown = [c for c in ci if not 0 <= c < self.film.num_embeddings]
            if unknown:
                raise ConfigError(
                    f"bag_of_channels: channel id {unknown[0]} was not declared ({self.film.num_embeddings} ids known)"
                )
            # [N, m, C, H, W] -> [N * m, C, H, W], image-major: image n's channels are rows n*m .. n*m + m - 1.
            alone = [self.adapter(xi[:, j : j + 1], (c,)) for j, c in enumerate(ci)]
            singles.append(torch.stack(alone, 1).flatten(0, 1))
            ids += list(ci) * len(xi)
        h = self.stem(torch.cat(singles))
        gamma, beta = self.film(torch.tensor(ids, device=h.device))[:, :, None, None].chunk(2, 1)
        feats = self.pool(self.body(h * (1 + gamma) + beta))
        sizes = [len(xi) * len(ci) for xi, ci in chunks]
        mean = [f.view(len(xi), len(ci), -1).mean(1) for f, (xi, ci) in zip(feats.split(sizes), chunks)]
        return self.head(torch.cat(mean))


@register_model("bag_of_channels", reference=BOC)
def bag_of_channels(
    num_classes: int = 50, adapter: str = "naive", adapter_kw: dict | None = None, subset_bn: bool = False, **trunk_kw
) -> nn.Module:
    """Bag of channels (late fusion): baseline_cnn sees each present channel alone, with its id, and its pooled
    features are averaged over the channels before the head; m channels cost m trunk passes.

    Each channel goes alone through the adapter (called with that one channel and its id; naive by default: the
    channel in its own slot, zeros elsewhere, L repeated, so the id is where it sits) and then the trunk, whose
    first conv's normalised output is modulated by a learned FiLM of the id, h * (1 + gamma_i) + beta_i (zero
    init). subset_bn: the BatchNorm statistics are kept per subset of the image, as in classifier().
    """
    ad = make_adapter(adapter, **(adapter_kw or {}))
    model = BagOfChannels(
        ad, BaselineCNN(in_channels=ad.out_channels, num_classes=num_classes, **trunk_kw), declared_ids(ad)
    )
    if subset_bn:
        convert_subset_bn(model.stem, declared_ids(ad))
        convert_subset_bn(model.body, declared_ids(ad))
    return model

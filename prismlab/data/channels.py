"""RGB pixels -> a channel subset: luminance, normalisation, and the per-batch subset sampler.

Channel names, ids and subsets are in prismlab.channels. Normalisation happens here, in float,
after the uint8 cache: never cast a normalised image back to uint8 (that clips every negative value).
"""

from __future__ import annotations

import random

import torch

from prismlab.channels import GRAY_ID, RGB_IDS, SUBSETS, subset_ids, subset_name
from prismlab.errors import ConfigError

# ITU-R BT.601 luma, the weights PIL's convert("L") uses.
LUMA = (0.299, 0.587, 0.114)
# ImageNet statistics; L's follow from the luma weights.
MEAN = (0.485, 0.456, 0.406, 0.299 * 0.485 + 0.587 * 0.456 + 0.114 * 0.406)
STD = (0.229, 0.224, 0.225, 0.226)
# A declared extra band (NIR, id 4 on) has no statistics of its own here: in [0, 1], centred at 0.5
# with about a uniform band's spread.
EXTRA_MEAN, EXTRA_STD = 0.5, 0.25


def band_stats(ids: tuple[int, ...]) -> tuple[list[float], list[float]]:
    """Each id's mean and std (declared extra ids: EXTRA_MEAN and EXTRA_STD)."""
    return (
        [MEAN[i] if i < len(MEAN) else EXTRA_MEAN for i in ids],
        [STD[i] if i < len(STD) else EXTRA_STD for i in ids],
    )


def to_subset(images: torch.Tensor, subset: str) -> tuple[torch.Tensor, tuple[int, ...]]:
    """uint8 or [0,1] float images [N,3,H,W] in RGB order -> (normalised float [N,m,H,W], channel ids).

    Gray photos are stored with R=G=B, so every subset of them is consistent with their luminance.
    """
    ids = subset_ids(subset)
    images = torch.as_tensor(images)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"to_subset takes RGB images [N, 3, H, W], got shape {tuple(images.shape)} (one image: "
            "x[None]; an [H, W, 3] array: x.permute(2, 0, 1)[None])"
        )
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    if GRAY_ID in ids:  # L is the luma of R, G and B, alone or beside colour channels (R+L)
        w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        planes = {c: x[:, c : c + 1] for c in RGB_IDS} | {GRAY_ID: (x * w).sum(1, keepdim=True)}
        x = torch.cat([planes[c] for c in ids], 1)
    else:
        x = x[:, list(ids)]
    return normalise(x, ids), ids


def normalise(x: torch.Tensor, ids: tuple[int, ...]) -> torch.Tensor:
    """[0,1] float [N, m, H, W] whose m channels are `ids` -> normalised with each id's mean and std."""
    m, d = band_stats(ids)
    mean = torch.tensor(m, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(d, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


class ChannelSampler:
    """Picks the subset for each training batch.

    mode "rgb": always RGB (the naive recipe).
    mode "hcs": hierarchical channel sampling (ChannelViT): m ~ U{1..3}, then a uniform m-subset of
    RGB; with probability `gray_prob` the batch is converted to gray (L) instead.
    mode "fixed:<SUBSET>": always that subset (a per-subset expert).
    """

    def __init__(self, mode: str = "rgb", gray_prob: float = 0.125, seed: int = 0):
        if mode not in ("rgb", "hcs") and not (mode.startswith("fixed:") and mode[6:] in SUBSETS):
            raise ConfigError(f"unknown channel sampling {mode!r} (rgb, hcs or fixed:<SUBSET>)")
        if not 0.0 <= gray_prob <= 1.0:
            raise ConfigError(f"gray_prob must be in [0, 1], got {gray_prob}")
        self.mode, self.gray_prob = mode, gray_prob
        self.rng = random.Random(seed)

    def seed(self, seed: int) -> None:
        self.rng.seed(seed)

    def sample(self) -> str:
        if self.mode == "rgb":
            return "RGB"
        if self.mode.startswith("fixed:"):
            return self.mode[6:]
        if self.rng.random() < self.gray_prob:
            return "L"
        m = self.rng.randint(1, 3)
        return subset_name(self.rng.sample(RGB_IDS, m))

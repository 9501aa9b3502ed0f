"""Per-subset BatchNorm statistics: one trunk, one set of weights, and for each channel subset its
own normalisation statistics, chosen by the subset that arrives.

A trunk shared by RGB and by single channels sees features whose statistics differ by subset;
one set of running statistics is then a compromise that fits none of them (slimmable networks
found the same for widths, Yu et al. 2019). Here each subset keeps its own running mean and
variance, and the affine weight and bias stay shared: no learnable parameter is added. In
training each subset's part of a mixed batch is normalised with its own batch statistics.

Deployed for one subset (`freeze_subset`), each layer is a plain BatchNorm with that subset's
statistics, so it folds into the conv before it and costs nothing at inference.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prismlab.channels import ALL_SUBSETS, RGB_IDS, SUBSETS
from prismlab.errors import ConfigError

BASE_IDS = 4  # R, G, B, L


@functools.lru_cache(maxsize=None)
def slots(num_ids: int = BASE_IDS) -> tuple[tuple[int, ...], ...]:
    """The channel sets a SubsetBatchNorm2d keeps statistics for, in slot order: the named subsets
    (ALL_SUBSETS order), then, where ids beyond R, G, B, L are declared (NIR, say), every set of
    ids that holds one of them."""
    named = tuple(SUBSETS[s] for s in ALL_SUBSETS)
    extra = tuple(
        ids
        for mask in range(1, 1 << num_ids)
        for ids in [tuple(i for i in range(num_ids) if mask >> i & 1)]
        if ids[-1] >= BASE_IDS
    )
    return named + extra


def subset_index(channels: Sequence[int], num_ids: int = BASE_IDS) -> int:
    """The statistics slot of a channel set (any order)."""
    key = tuple(sorted(int(c) for c in channels))
    table = slots(num_ids)
    if key in table:
        return table.index(key)
    raise ConfigError(
        f"per-subset BatchNorm keeps statistics for the named subsets ({', '.join(ALL_SUBSETS)}) and, "
        f"with more channel ids declared, the sets that hold them; channel ids {tuple(channels)} "
        f"are none of these ({num_ids} ids declared)"
    )


class SubsetBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d with running statistics per named subset (ALL_SUBSETS order) and shared affine.

    `subset` (an index, set through `use_subset`) says which statistics a call uses and updates.
    momentum=None averages cumulatively per subset, as BatchNorm does with one set."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, num_ids: int = BASE_IDS):
        super().__init__(num_features, eps, momentum, affine=True, track_running_stats=False)
        self.num_ids = num_ids
        k = len(slots(num_ids))
        self.register_buffer("subset_mean", torch.zeros(k, num_features))
        self.register_buffer("subset_var", torch.ones(k, num_features))
        self.register_buffer("subset_batches", torch.zeros(k, dtype=torch.long))
        self.subset: int | None = None

    def reset_running_stats(self) -> None:
        if hasattr(self, "subset_mean"):  # the parent's __init__ calls this before the buffers exist
            self.subset_mean.zero_()
            self.subset_var.fill_(1)
            self.subset_batches.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.subset
        if k is None:
            raise RuntimeError(
                "SubsetBatchNorm2d called without a subset: call the model through "
                "model(x, channels), or wrap the call in use_subset(model, channels)"
            )
        mean, var = self.subset_mean[k], self.subset_var[k]  # row views: batch_norm updates them in place
        factor = 0.0
        if self.training:
            self.subset_batches[k] += 1
            factor = 1.0 / float(self.subset_batches[k]) if self.momentum is None else self.momentum
        return F.batch_norm(x, mean, var, self.weight, self.bias, self.training, factor, self.eps)

    def frozen(self, k: int) -> nn.BatchNorm2d:
        """A plain eval-mode BatchNorm2d with subset k's statistics and the shared affine."""
        bn = nn.BatchNorm2d(self.num_features, self.eps).to(self.weight.device)
        with torch.no_grad():
            bn.weight.copy_(self.weight)
            bn.bias.copy_(self.bias)
            bn.running_mean.copy_(self.subset_mean[k])
            bn.running_var.copy_(self.subset_var[k])
        return bn.eval()


def convert_subset_bn(module: nn.Module, num_ids: int = BASE_IDS) -> nn.Module:
    """Replace every BatchNorm2d in `module` by a SubsetBatchNorm2d of the same width (in place), with
    statistics for the channel sets of `num_ids` declared channel ids (slots)."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            setattr(module, name, SubsetBatchNorm2d(child.num_features, child.eps, child.momentum, num_ids))
        else:
            convert_subset_bn(child, num_ids)
    return module


def subset_norms(module: nn.Module) -> list[SubsetBatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, SubsetBatchNorm2d)]


@contextlib.contextmanager
def use_subset(module: nn.Module, channels: Sequence[int]) -> Iterator[None]:
    """Inside, every SubsetBatchNorm2d of `module` uses the statistics of this channel set."""
    norms = subset_norms(module)
    k = subset_index(channels, norms[0].num_ids) if norms else None
    for m in norms:
        m.subset = k
    try:
        yield
    finally:
        for m in norms:
            m.subset = None


def freeze_subset(module: nn.Module, channels: Sequence[int] | None = None) -> nn.Module:
    """Replace every SubsetBatchNorm2d in `module` by a plain BatchNorm2d with the statistics of
    `channels` (RGB by default), in place: the form deployed for that subset."""
    for name, child in module.named_children():
        if isinstance(child, SubsetBatchNorm2d):
            setattr(module, name, child.frozen(subset_index(RGB_IDS if channels is None else channels, child.num_ids)))
        else:
            freeze_subset(child, channels)
    return module

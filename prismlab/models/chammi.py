"""CHAMMI's first-layer strategies as channel adapters (Chen et al., NeurIPS 2023 Datasets and Benchmarks,
"CHAMMI: A benchmark for channel-adaptive models in microscopy imaging"; code: chaudatascience/channel_adaptive_models).

Each is an adapter: a size-preserving kxk conv (stride 1, padding k // 2, no bias, as CHAMMI's
F.conv2d(..., bias=None)) from the present channels to out_channels. In CHAMMI each strategy replaces the
backbone's first conv: a model's first_layer=True does that (prismlab.models.base.classifier; the task-1 rows),
the adapter then making the trunk's first conv's channels. Without it, the adapter feeds the trunk's 3 input
channels like any adapter. They differ in where a channel's kernel comes from: a slice of one bank (slice_param),
a mix of shared templates (template_mixing), a hypernetwork on a channel embedding (hypernet), or a whole first
layer per channel subset (target_param).

Combining channels: CHAMMI applies the present channels' kernels as one ordinary conv over them, so their
responses are *summed*, without scaling by the number of channels (combine="sum", the default). combine="mean"
divides by m, so the output's scale does not grow with m. Both are symmetric in the channels: the order in which
channels arrive does not matter. target_param orders the channels by id before its subset's conv.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prismlab.channels import ALL_SUBSETS, check_declared, declared_names, parse_subsets, subset_ids
from prismlab.errors import ConfigError
from prismlab.models.registry import register_adapter

CHAMMI = "Chen et al. 2023, CHAMMI: A benchmark for channel-adaptive models in microscopy imaging (NeurIPS D&B)"
COMBINES = ("sum", "mean")


def _check(name: str, out_channels: int, kernel_size: int, **positive: int) -> None:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ConfigError(f"{name}: kernel_size must be odd and positive (keeps H, W), got {kernel_size}")
    for key, value in {"out_channels": out_channels, **positive}.items():
        if value < 1:
            raise ConfigError(f"{name}: {key} must be at least 1, got {value}")


class PerIdConv(nn.Module):
    """Base of the per-id strategies: each present channel's id gives a [out, k, k] kernel (`kernels`), and the
    channels' responses are combined by a sum (CHAMMI) or a mean."""

    name = "per_id_conv"

    def __init__(
        self,
        out_channels: int,
        kernel_size: int,
        combine: str,
        num_channel_ids: int | None,
        channel_names: Sequence[str] | None,
        **positive: int,
    ):
        super().__init__()
        _check(self.name, out_channels, kernel_size, **positive)
        if combine not in COMBINES:
            raise ConfigError(f"{self.name}: unknown combine {combine!r} (choose from {', '.join(COMBINES)})")
        self.channel_names = declared_names(self.name, num_channel_ids, channel_names)
        self.out_channels, self.kernel_size, self.combine = out_channels, kernel_size, combine

    def kernels(self, ids: torch.Tensor) -> torch.Tensor:
        """[m, out, k, k]: the kernel of each id in `ids`."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, channels: Sequence[int]) -> torch.Tensor:
        ids = tuple(int(c) for c in channels)
        if len(ids) != x.shape[1]:
            raise ValueError(f"{self.name}: input has {x.shape[1]} channels but {len(ids)} channel ids were given")
        check_declared(self.name, ids, self.channel_names)
        weight = self.kernels(torch.tensor(ids, device=x.device)).transpose(0, 1)  # [out, m, k, k]
        out = F.conv2d(x, weight, padding=self.kernel_size // 2)
        return out / len(ids) if self.combine == "mean" else out


@register_adapter("slice_param", reference=CHAMMI + ", SliceParam")
class SliceParamAdapter(PerIdConv):
    """CHAMMI's SliceParam: one kernel bank with a slice per channel id; the present channels' slices are applied
    as one conv, their responses summed as in CHAMMI (combine="mean": averaged over the m channels).

    bank: [K, out, 1, k, k] for the K declared ids, drawn as CHAMMI draws its bank: Kaiming normal over the whole
    bank's fan-in (K * k * k), so that all K slices together start at unit gain.
    """

    name = "slice_param"

    def __init__(
        self,
        out_channels: int = 3,
        kernel_size: int = 3,
        combine: str = "sum",
        num_channel_ids: int | None = None,
        channel_names: Sequence[str] | None = None,
    ):
        super().__init__(out_channels, kernel_size, combine, num_channel_ids, channel_names)
        k = len(self.channel_names)
        std = math.sqrt(2.0 / (k * kernel_size**2))
        self.bank = nn.Parameter(std * torch.randn(k, out_channels, 1, kernel_size, kernel_size))

    def kernels(self, ids: torch.Tensor) -> torch.Tensor:
        return self.bank[ids, :, 0]


@register_adapter("template_mixing", reference=CHAMMI + ", TemplateMixing")
class TemplateMixingAdapter(PerIdConv):
    """CHAMMI's TemplateMixing: T shared kernel templates, each channel id's kernel a learned mix of them (one
    coefficient row per id); the present channels' kernels are applied as one conv and summed (or averaged).

    CHAMMI's init: templates [T, out, k, k] Kaiming normal over fan-in T * k * k, coefficients [K, T] orthogonal.
    Its released checkpoints keep one coefficient row per position of each dataset's fixed channel list
    (separate_coef); here the rows are per channel id (its shared form), so one set serves any subset.
    """

    name = "template_mixing"

    def __init__(
        self,
        out_channels: int = 3,
        kernel_size: int = 3,
        templates: int = 8,
        combine: str = "sum",
        num_channel_ids: int | None = None,
        channel_names: Sequence[str] | None = None,
    ):
        super().__init__(out_channels, kernel_size, combine, num_channel_ids, channel_names, templates=templates)
        std = math.sqrt(2.0 / (templates * kernel_size**2))
        self.templates = nn.Parameter(std * torch.randn(templates, out_channels, kernel_size, kernel_size))
        self.coefs = nn.Parameter(nn.init.orthogonal_(torch.empty(len(self.channel_names), templates)))

    def kernels(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.einsum("mt,tohw->mohw", self.coefs[ids], self.templates)


@register_adapter("hypernet", reference=CHAMMI + ", HyperNet (after Ha et al. 2017, HyperNetworks)")
class HyperNetAdapter(PerIdConv):
    """CHAMMI's HyperNet: a learned embedding of each channel id, through a small two-layer network, yields that
    channel's kernel; the present channels' kernels are applied as one conv and summed (or averaged).

    z_i (z_dim) -> Linear -> hidden -> Linear -> out * k * k. As in CHAMMI's HyperNetwork there is no nonlinearity
    between the two layers (an affine map of the embedding). Embeddings start N(0, 1), the layers as nn.Linear.
    """

    name = "hypernet"

    def __init__(
        self,
        out_channels: int = 3,
        kernel_size: int = 3,
        z_dim: int = 8,
        hidden: int = 16,
        combine: str = "sum",
        num_channel_ids: int | None = None,
        channel_names: Sequence[str] | None = None,
    ):
        super().__init__(out_channels, kernel_size, combine, num_channel_ids, channel_names, z_dim=z_dim, hidden=hidden)
        self.embed = nn.Embedding(len(self.channel_names), z_dim)
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.Linear(hidden, out_channels * kernel_size**2))

    def kernels(self, ids: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size
        return self.net(self.embed(ids)).view(len(ids), self.out_channels, k, k)


@register_adapter("target_param", reference=CHAMMI + ", TargetParam")
class TargetParamAdapter(nn.Module):
    """CHAMMI's TargetParam: one first-layer conv per channel subset, picked by the set of ids that arrives, with
    one shared trunk behind; the "specialist stems, shared body" point between DIY and a set adapter.

    The layers are keyed by the sorted id tuple of the named subsets in `subsets` (prismlab.channels.SUBSETS; all
    eight by default). The channels are put in id order before the subset's conv, so any order of the same set
    gives the same output; a set without a layer is refused.
    """

    def __init__(self, out_channels: int = 3, kernel_size: int = 3, subsets: str | Sequence[str] = ALL_SUBSETS):
        super().__init__()
        _check("target_param", out_channels, kernel_size)
        try:
            names = parse_subsets(subsets)
        except ConfigError as e:
            raise ConfigError(f"target_param: {e}") from None
        self.out_channels, self.kernel_size = out_channels, kernel_size
        pad = kernel_size // 2
        self.layers = nn.ModuleDict(
            {s: nn.Conv2d(len(subset_ids(s)), out_channels, kernel_size, padding=pad, bias=False) for s in names}
        )
        self.subset_of = {tuple(sorted(subset_ids(s))): s for s in names}

    def forward(self, x: torch.Tensor, channels: Sequence[int]) -> torch.Tensor:
        ids = tuple(int(c) for c in channels)
        if len(ids) != x.shape[1]:
            raise ValueError(f"target_param: input has {x.shape[1]} channels but {len(ids)} channel ids were given")
        key = tuple(sorted(ids))
        if key not in self.subset_of:
            raise ConfigError(
                f"target_param: no first layer for channel ids {key} (it has one per subset: {', '.join(self.layers)})"
            )
        order = sorted(range(len(ids)), key=ids.__getitem__)
        if order != list(range(len(ids))):
            x = x[:, order]
        return self.layers[self.subset_of[key]](x)

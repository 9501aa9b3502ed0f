"""A classifier is a channel adapter in front of a trunk.

Every prismlab model is called as `model(x, channels)`: `x` is [N, m, H, W] normalised float and
`channels` the ids of its m channels (R=0, G=1, B=2, L=3; see prismlab.channels). `None`
means full RGB. The adapter turns whatever channels arrive into the trunk's fixed input.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from prismlab.channels import CHANNEL_NAMES, GRAY_ID, RGB_IDS, subset_ids
from prismlab.errors import ConfigError, first_line
from prismlab.models.registry import make_adapter, register_adapter
from prismlab.models.subset_bn import BASE_IDS, convert_subset_bn, subset_index, subset_norms, use_subset


class Classifier(nn.Module):
    def __init__(self, adapter: nn.Module, trunk: nn.Module):
        super().__init__()
        self.adapter = adapter
        self.trunk = trunk

    def forward(self, x: torch.Tensor | list[torch.Tensor], channels: Sequence | str | None = None) -> torch.Tensor:
        """channels: ids (0, 2) or a subset name "RB"; for a list of chunks, one of those per chunk."""
        if not isinstance(x, (list, tuple)):
            ids = channel_ids(channels)
            with use_subset(self.trunk, ids):
                return self.trunk(self.adapter(x, ids))
        # A mixed batch: chunk i holds channels[i].
        channels = [channel_ids(ci) for ci in channels]
        feats = [self.adapter(xi, ci) for xi, ci in zip(x, channels)]
        if not subset_norms(self.trunk):
            # The trunk's BatchNorm sees the whole subset mix in every batch, the same mix its
            # running statistics describe at test time.
            return self.trunk(torch.cat(feats))
        # Per-subset statistics: the chunks of each subset go through the trunk together.
        num_ids = subset_norms(self.trunk)[0].num_ids

        def run(members: list[int]) -> torch.Tensor:
            with use_subset(self.trunk, channels[members[0]]):
                return self.trunk(torch.cat([feats[i] for i in members]))

        return grouped([subset_index(ci, num_ids) for ci in channels], [len(f) for f in feats], run)


def channel_ids(channels: Sequence | str | None) -> tuple[int, ...]:
    """Channel ids (0, 2), a subset name "RB", or None (RGB) -> the ids."""
    if channels is None:
        return RGB_IDS
    return subset_ids(channels) if isinstance(channels, str) else tuple(int(c) for c in channels)


def grouped(keys: Sequence, sizes: Sequence[int], run: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
    """A mixed batch's chunks of equal key through `run(members)` together (it returns their outputs
    concatenated in members' order), the outputs put back in the chunks' order."""
    groups: dict = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    out: list[torch.Tensor | None] = [None] * len(keys)
    for members in groups.values():
        for i, part in zip(members, run(members).split([sizes[i] for i in members])):
            out[i] = part
    return torch.cat(out)


def classifier(
    trunk: Callable[..., nn.Module],
    adapter: str = "naive",
    adapter_kw: dict | None = None,
    subset_bn: bool = False,
    first_layer: bool = False,
    **trunk_kw,
) -> Classifier:
    """The named adapter in front of `trunk(in_channels=<the adapter's output>, **trunk_kw)`; every
    other default is the trunk's own. subset_bn: the trunk's BatchNorms keep statistics per channel
    subset (prismlab.models.subset_bn). first_layer: the adapter *is* the trunk's first conv, as
    CHAMMI's strategies are: it outputs that conv's channels at its kernel size, and the conv is dropped
    (what followed it, BatchNorm and ReLU, stays)."""
    kw = dict(adapter_kw or {})
    if first_layer:
        net = trunk(**trunk_kw)
        name, conv = first_conv(net)
        if conv.stride != (1, 1) or conv.groups != 1 or conv.dilation != (1, 1) or conv.padding_mode != "zeros":
            raise ConfigError(f"first_layer: the trunk's first conv ({name}) is not a plain stride-1 conv")
        if conv.kernel_size[0] != conv.kernel_size[1] or conv.padding != (conv.kernel_size[0] // 2,) * 2:
            raise ConfigError(f"first_layer: the trunk's first conv ({name}) does not keep H and W")
        for key, value in {"out_channels": conv.out_channels, "kernel_size": conv.kernel_size[0]}.items():
            if kw.setdefault(key, value) != value:
                raise ConfigError(f"first_layer: adapter_kw {key}={kw[key]}, but the trunk's {name} has {value}")
        try:
            ad = make_adapter(adapter, **kw)
        except ConfigError as e:
            raise ConfigError(f"first_layer: the adapter cannot be the trunk's first conv: {e}") from None
        parent, _, leaf = name.rpartition(".")
        setattr(net.get_submodule(parent), leaf, nn.Identity())
    else:
        ad = make_adapter(adapter, **kw)
        net = trunk(in_channels=ad.out_channels, **trunk_kw)
    return Classifier(ad, convert_subset_bn(net, declared_ids(ad)) if subset_bn else net)


def first_conv(net: nn.Module) -> tuple[str, nn.Conv2d]:
    """The conv that a trunk's input meets, traced by torch.fx: its name and module. Refused where the
    input meets anything else too, or where dropping the conv's bias would change the maths (no
    BatchNorm right after it)."""
    from torch.fx import symbolic_trace

    try:
        gm = symbolic_trace(net)
    except Exception as e:  # a trunk fx cannot trace cannot be checked
        raise ConfigError(f"first_layer: cannot trace {type(net).__name__} ({first_line(e)})") from None
    x = next(n for n in gm.graph.nodes if n.op == "placeholder")
    users = list(x.users)
    mods = dict(gm.named_modules())
    if len(users) != 1 or users[0].op != "call_module" or not isinstance(mods[users[0].target], nn.Conv2d):
        raise ConfigError(f"first_layer: {type(net).__name__}'s input does not go to one conv alone")
    name, after = str(users[0].target), list(users[0].users)
    conv = net.get_submodule(name)
    bn = len(after) == 1 and after[0].op == "call_module" and isinstance(mods[after[0].target], nn.BatchNorm2d)
    if conv.bias is not None and not bn:
        raise ConfigError(f"first_layer: {type(net).__name__}'s {name} has a bias and no BatchNorm after it")
    return name, conv


def declared_of(model: nn.Module) -> tuple[str, ...]:
    """The channel names a model declares (R, G, B, L, and extras such as NIR): its adapter's or its own."""
    return tuple(getattr(getattr(model, "adapter", model), "channel_names", CHANNEL_NAMES))


def declared_ids(adapter: nn.Module) -> int:
    """How many channel ids an adapter knows: R, G, B, L and any it declares (channelset's NIR)."""
    return max(len(getattr(adapter, "channel_names", ())), BASE_IDS)


@register_adapter("naive", reference="the assignment's plain RGB baseline; the zero-fill policy: this project")
class NaiveAdapter(nn.Module):
    """The naive RGB net's input policy: missing channels are zero-filled (zero is the channel's
    mean after normalisation). Gray policy: a gray (L) image is repeated into R, G and B."""

    out_channels = 3

    def forward(self, x: torch.Tensor, channels: tuple[int, ...]) -> torch.Tensor:
        if channels == RGB_IDS:
            return x
        if channels == (GRAY_ID,):
            return x.expand(-1, 3, -1, -1)
        out = x.new_zeros(x.shape[0], 3, *x.shape[2:])
        out[:, list(channels)] = x
        return out

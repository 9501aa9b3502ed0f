"""One graph for every channel subset: `AnySubset(model)(image, present)`, the subset given as data.

`image` [N, K, H, W] holds a plane for every declared channel id, in id order (R, G, B, L, then
declared extras such as NIR); `present` [K] is 1.0 for a channel that is there and 0.0 for one
that is not. An absent plane is never read into the result, but it must be finite (0 * NaN is NaN):
fill it with zeros.

Built from the inference form of every subset: the adapter runs masked (its `forward_masked`),
and each conv, BatchNorm or linear layer whose folded weights differ between subsets (per-subset
statistics fold into them) keeps one copy per subset, of which the subset's slot is gathered. So
one file costs what a per-subset file costs, plus the adapter's absent planes.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prismlab.errors import ConfigError
from prismlab.models.fuse import inference_form
from prismlab.models.subset_bn import BASE_IDS, slots, subset_norms

STACKABLE = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)


class Slot:
    """The subset's slot, shared by the stacked layers of one graph (set by AnySubset.forward)."""

    index: torch.Tensor | None = None


class Stacked(nn.Module):
    """A conv, eval BatchNorm or linear layer with one copy of its tensors per subset slot."""

    def __init__(self, layers: Sequence[nn.Module], slot: Slot):
        super().__init__()
        first = layers[0]
        self.kind = type(first).__name__
        self.slot = slot
        names = [n for n, _ in first.named_parameters(recurse=False)]
        if isinstance(first, nn.BatchNorm2d):
            # Eval BatchNorm as a per-slot scale and shift.
            scale = torch.stack([m.weight / torch.sqrt(m.running_var + m.eps) for m in layers])
            shift = torch.stack([m.bias for m in layers]) - torch.stack([m.running_mean for m in layers]) * scale
            self.register_buffer("scale", scale.detach())
            self.register_buffer("shift", shift.detach())
            return
        for n in names:
            self.register_buffer(n, torch.stack([getattr(m, n).detach() for m in layers]))
        if isinstance(first, nn.Conv2d):
            self.conv = dict(stride=first.stride, padding=first.padding, dilation=first.dilation, groups=first.groups)
            if first.padding_mode != "zeros":
                raise ConfigError(f"one graph for every subset: a conv with padding_mode={first.padding_mode!r}")
        self.has_bias = "bias" in names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.slot.index
        if self.kind == "BatchNorm2d":
            return x * self.scale[k].view(1, -1, 1, 1) + self.shift[k].view(1, -1, 1, 1)
        bias = self.bias[k] if self.has_bias else None
        if self.kind == "Conv2d":
            return F.conv2d(x, self.weight[k], bias, **self.conv)
        return F.linear(x, self.weight[k], bias)


def _stack(forms: list[nn.Module], slot: Slot) -> nn.Module:
    """forms[0] with every leaf whose tensors differ between the forms replaced by a Stacked layer."""
    out = forms[0]
    for name, child in list(out.named_children()):
        twins = [getattr(f, name) for f in forms]
        tensors = [dict(list(t.named_parameters(recurse=False)) + list(t.named_buffers(recurse=False))) for t in twins]
        same = all(
            tensors[0].keys() == t.keys() and all(torch.equal(tensors[0][k], t[k]) for k in t) for t in tensors[1:]
        )
        if not same:
            if not isinstance(child, STACKABLE):
                raise ConfigError(
                    f"one graph for every subset: {name} ({type(child).__name__}) differs between "
                    f"subsets and is not a conv, BatchNorm or linear layer"
                )
            setattr(out, name, Stacked(twins, slot))
        elif any(True for _ in child.children()):
            setattr(out, name, _stack(twins, slot))
    return out


class AnySubset(nn.Module):
    """model(x, channels) for the given subsets as one graph: forward(image [N, K, H, W], present [K])."""

    def __init__(self, model: nn.Module, subsets: Sequence[Sequence[int]] | None = None):
        super().__init__()
        adapter = getattr(model, "adapter", None)
        if not callable(getattr(adapter, "forward_masked", None)) or not hasattr(model, "trunk"):
            raise ConfigError(
                f"one graph for every subset needs an adapter that reads a presence mask (channelset); "
                f"in front of one trunk; this model is a {type(model).__name__} "
                f"with {type(adapter).__name__}"
            )
        k = len(adapter.channel_names)
        if subsets is None:  # the named subsets and every set that holds a declared extra id, within the declared
            norms = subset_norms(model.trunk)
            subsets = [s for s in slots(norms[0].num_ids if norms else max(k, BASE_IDS)) if max(s) < k]
        self.subsets = [tuple(sorted(int(c) for c in s)) for s in subsets]
        for s in self.subsets:
            if not s or s[-1] >= k:
                raise ConfigError(f"one graph for every subset: channel ids {s} are not a subset of the {k} declared")
        forms = [inference_form(model, s) for s in self.subsets]
        self.slot = Slot()
        self.adapter = forms[0].adapter
        self.trunk = _stack([f.trunk for f in forms], self.slot)
        self.channel_names = tuple(adapter.channel_names)
        # A subset's presence mask read as a binary number -> its slot (-1: not one of the subsets).
        table = torch.full((1 << k,), -1, dtype=torch.long)
        for i, s in enumerate(self.subsets):
            table[sum(1 << c for c in s)] = i
        self.register_buffer("slot_of", table)
        self.register_buffer("bits", 2 ** torch.arange(k))

    def forward(self, image: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        slot = self.slot_of[(present.round().long() * self.bits).sum()]
        self.slot.index = slot.clamp(min=0)
        out = self.trunk(self.adapter.forward_masked(image, present))
        # A mask that is none of the subsets gives NaN logits, not another subset's: a graph cannot raise.
        return torch.where(slot >= 0, out, torch.full_like(out, float("nan")))


def full_input(x: torch.Tensor, channels: Sequence[int], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, m, H, W] with its channel ids -> (image [N, k, H, W] with zeros for absent ids, present [k])."""
    image = x.new_zeros(x.shape[0], k, *x.shape[2:])
    present = x.new_zeros(k)
    for i, c in enumerate(channels):
        image[:, int(c)] = x[:, i]
        present[int(c)] = 1.0
    return image, present

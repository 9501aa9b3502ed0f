"""Conv+BatchNorm parts and the inference form every model is deployed, timed and counted in.

The inference form (`inference_form`) is a deep copy in eval mode in which every module that
defines `fuse()` has been replaced by what its `fuse()` returns, and every conv+BatchNorm pair
is folded into one conv.

The fuse protocol: `module.fuse()` returns the module's inference form (eval mode), which takes
the module's place; prismlab's modules build a new module and leave themselves unchanged. Only
the outermost module with a `fuse` method is asked: it is responsible for its children.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from prismlab.models.subset_bn import freeze_subset


def fold_bn(w: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel and bias of a bias-free conv with kernel `w` followed by `bn` in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return w * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


def conv_from(w: torch.Tensor, b: torch.Tensor, stride: int) -> nn.Conv2d:
    """A size-preserving (at stride 1) eval-mode conv holding kernel `w` and bias `b`."""
    conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], stride, w.shape[2] // 2, bias=True)
    conv.weight.data.copy_(w)
    conv.bias.data.copy_(b)
    return conv.eval()


class ConvBN(nn.Module):
    """A bias-free kxk conv (padding k // 2) and a BatchNorm; `kernel()` is the pair folded."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        return fold_bn(self.conv.weight, self.bn)


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv (no bias), BatchNorm, ReLU as a Sequential (weights named 0.* and 1.*)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def inference_form(model: nn.Module, channels: Sequence[int] | None = None) -> nn.Module:
    """A deep copy of `model` in eval mode with every fusable module fused (see the module doc)
    and every conv+BatchNorm pair folded, for every model alike (ResNet34's too), so that speed
    and size are compared between deployable forms. A model with per-subset BatchNorm statistics
    is deployed for one subset: `channels` (RGB by default); every subset costs the same."""
    return fold_batchnorm(_fuse(freeze_subset(copy.deepcopy(model).eval(), channels)))


def fold_batchnorm(m: nn.Module) -> nn.Module:
    """Fold each conv followed by a BatchNorm into the conv (torch.fx's fuse pass), on the largest
    parts of the model that torch.fx can trace."""
    from torch.fx.experimental.optimization import fuse as fx_fuse

    if not any(isinstance(x, nn.modules.batchnorm._BatchNorm) for x in m.modules()):
        return m
    try:
        return fx_fuse(m)
    except Exception:  # not traceable as a whole (e.g. a model(x, channels) wrapper): its parts may be
        for name, child in m.named_children():
            setattr(m, name, fold_batchnorm(child))
        return m


def _fuse(m: nn.Module) -> nn.Module:
    # Looked up on the class: a child module that happens to be called `fuse` is not a method.
    if callable(getattr(type(m), "fuse", None)):
        return m.fuse().eval()
    for name, child in m.named_children():
        new = _fuse(child)
        if new is not child:
            setattr(m, name, new)
    return m

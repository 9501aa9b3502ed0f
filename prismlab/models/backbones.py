"""Any backbone as a prismlab model: a channel adapter in front of its first Conv2d.

`any_channel(net)` wraps a module built in one's own code; `create_model("tv:resnet18")` and
`create_model("timm:resnet18")` build torchvision's or timm's classifier from scratch (no
pretrained weights: nothing is downloaded) and wrap it the same way, so the CLI takes
`model=tv:mobilenet_v3_small` with the builder's own keywords through `model_kw`. The result is
called as every prismlab model is, `model(x, channels)`, and trains, evaluates, counts its FLOPs and
layers and exports like the built-in ones.
"""

from __future__ import annotations

import importlib

from torch import nn

from prismlab.errors import ConfigError
from prismlab.models.base import Classifier, declared_ids
from prismlab.models.registry import make_adapter, register_source
from prismlab.models.subset_bn import convert_subset_bn

TIMM_HINT = "pip install 'prismlab[timm]'"


def first_conv(net: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    """(parent, attribute name, conv) of the first Conv2d in `net`'s registration order."""
    for qualname, m in net.named_modules():
        if isinstance(m, nn.Conv2d):
            parent_name, _, attr = qualname.rpartition(".")
            return net.get_submodule(parent_name) if parent_name else net, attr, m
    raise ConfigError(f"{type(net).__name__}: no Conv2d to put a channel adapter in front of")


def any_channel(
    backbone: nn.Module, adapter: str = "channelset", adapter_kw: dict | None = None, subset_bn: bool = False
) -> Classifier:
    """`backbone` behind the named channel adapter: model(x, channels) for any channel subset.

    The adapter's output feeds the backbone's first conv; where their widths differ (an adapter
    with out_channels=16 in front of an RGB net), that conv is replaced by a freshly initialised one
    of the adapter's width. subset_bn: the backbone's BatchNorms keep statistics per channel subset
    (prismlab.models.subset_bn)."""
    ad = make_adapter(adapter, **(adapter_kw or {}))
    parent, attr, conv = first_conv(backbone)
    if conv.in_channels != ad.out_channels:
        if conv.groups != 1:
            raise ConfigError(
                f"{type(backbone).__name__}: its first conv is grouped; the adapter must give "
                f"its {conv.in_channels} channels (adapter_kw.out_channels={conv.in_channels})"
            )
        setattr(
            parent,
            attr,
            nn.Conv2d(
                ad.out_channels,
                conv.out_channels,
                conv.kernel_size,
                conv.stride,
                conv.padding,
                conv.dilation,
                1,
                conv.bias is not None,
                conv.padding_mode,
            ),
        )
    return Classifier(ad, convert_subset_bn(backbone, declared_ids(ad)) if subset_bn else backbone)


def torchvision_model(
    arch: str, num_classes: int, adapter: str = "naive", adapter_kw: dict | None = None, subset_bn: bool = False, **kw
) -> Classifier:
    """create_model("tv:<arch>"): torchvision's classifier from scratch behind the adapter."""
    import torchvision.models

    try:
        net = torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kw)
    except ValueError:
        raise ConfigError(f"unknown torchvision model {arch!r} (torchvision.models.list_models() names them)") from None
    return any_channel(net, adapter, adapter_kw, subset_bn)


def timm_model(
    arch: str, num_classes: int, adapter: str = "naive", adapter_kw: dict | None = None, subset_bn: bool = False, **kw
) -> Classifier:
    """create_model("timm:<arch>"): timm's classifier from scratch (pretrained=False) behind the adapter."""
    try:
        timm = importlib.import_module("timm")
    except ImportError:
        raise ConfigError(f"model 'timm:{arch}' needs timm ({TIMM_HINT})") from None
    if not timm.is_model(arch):
        raise ConfigError(f"unknown timm model {arch!r} (timm.list_models() names them)")
    return any_channel(
        timm.create_model(arch, pretrained=False, num_classes=num_classes, **kw), adapter, adapter_kw, subset_bn
    )


register_source("tv", torchvision_model)
register_source("timm", timm_model)

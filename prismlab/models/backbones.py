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
from prismlab.models.base import Classifier
from prismlab.models.registry import make_adapter
from prismlab.models.subset_bn import convert_subset_bn

SOURCES = ("tv", "timm")  # model=<source>:<architecture>
TIMM_HINT = "pip install 'prismlab[timm]'"


def first_conv(net: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    """(parent, attribute name, conv) of the first Conv2d in `net`'s registration order."""
    for qualname, m in net.named_modules():
        if isinstance(m, nn.Conv2d):
            parent_name, _, attr = qualname.rpartition(".")
            return net.get_submodule(parent_name) if parent_name else net, attr, m
    raise ConfigError(f"{type(net).__name__}: no Conv2d to put a channel adapter in front of")


def any_channel(backbone: nn.Module, adapter: str = "channelset", adapter_kw: dict | None = None,
                subset_bn: bool = False) -> Classifier:
    """`backbone` behind the named channel adapter: model(x, channels) for any channel subset.

    The adapter's output feeds the backbone's first conv; where their widths differ (an adapter
    with out_channels=16 in front of an RGB net), that conv is replaced by a freshly initialised one
    of the adapter's width. subset_bn: the backbone's BatchNorms keep statistics per channel subset
    (prismlab.models.subset_bn)."""
    ad = make_adapter(adapter, **(adapter_kw or {}))
    parent, attr, conv = first_conv(backbone)
    if conv.in_channels != ad.out_channels:
        if conv.groups != 1:
            raise ConfigError(f"{type(backbone).__name__}: its first conv is grouped; the adapter must give "
                              f"its {conv.in_channels} channels (adapter_kw.out_channels={conv.in_channels})")
        setattr(parent, attr, nn.Conv2d(ad.out_channels, conv.out_channels, conv.kernel_size, conv.stride,
                                        conv.padding, conv.dilation, 1, conv.bias is not None, conv.padding_mode))
    return Classifier(ad, convert_subset_bn(backbone) if subset_bn else backbone)


def external(name: str, num_classes: int, adapter: str = "naive", adapter_kw: dict | None = None,
             subset_bn: bool = False, **kw) -> Classifier:
    """create_model's builder for `tv:<architecture>` and `timm:<architecture>`."""
    source, _, arch = name.partition(":")
    if source == "tv":
        import torchvision.models

        try:
            net = torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kw)
        except ValueError:
            raise ConfigError(f"unknown torchvision model {arch!r} (torchvision.models.list_models() names them)") from None
    elif source == "timm":
        try:
            timm = importlib.import_module("timm")
        except ImportError:
            raise ConfigError(f"model {name!r} needs timm ({TIMM_HINT})") from None
        if not timm.is_model(arch):
            raise ConfigError(f"unknown timm model {arch!r} (timm.list_models() names them)")
        net = timm.create_model(arch, pretrained=False, num_classes=num_classes, **kw)
    else:
        raise ConfigError(f"unknown model source {source!r} in {name!r} (known: {', '.join(SOURCES)})")
    return any_channel(net, adapter, adapter_kw, subset_bn)


def is_external(name: str) -> bool:
    return name.partition(":")[0] in SOURCES and ":" in name

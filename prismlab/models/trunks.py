"""Plain CNN trunks that take a fixed number of input channels, and their registered models."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from prismlab.models.base import classifier
from prismlab.models.registry import register_model


class BaselineCNN(nn.Module):
    """The original report's 3-layer CNN: conv 32-64-128 with max-pool, GAP, FC 512, FC."""

    def __init__(self, in_channels: int = 3, num_classes: int = 50):
        super().__init__()
        layers, c = [], in_channels
        for w in (32, 64, 128):
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 512), nn.ReLU(inplace=True), nn.Linear(512, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def tv_resnet(depth: int, in_channels: int = 3, num_classes: int = 50, small_input: bool = False) -> nn.Module:
    """torchvision's ResNet18 or 34, untouched unless `small_input` swaps the stem (7x7 stride 2 and a
    max-pool, made for 224 px) for the low-resolution one: a 3x3 stride-1 conv without max-pool, so the
    first stage runs at the input's resolution (at 32 px the standard stem leaves a 1x1 final map)."""
    from torchvision.models import resnet18, resnet34  # imported here: torchvision pulls in seconds of imports

    net = {18: resnet18, 34: resnet34}[depth](weights=None, num_classes=num_classes)
    if small_input:
        net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    return net


@register_model("baseline_cnn", reference="the original homework report")
def baseline_cnn(**kw) -> nn.Module:
    """The original report's 3-layer CNN (conv 32-64-128, GAP, FC 512, FC)."""
    return classifier(BaselineCNN, **kw)


RESNET = "He et al. 2016, Deep Residual Learning for Image Recognition (torchvision's)"
LOWRES = (
    RESNET + "; the 3x3 stride-1 stem without max-pool of CIFAR and Tiny-ImageNet practice "
    "(He et al. 2016, section 4.2)"
)


@register_model("resnet34", reference=RESNET)
def resnet34_model(**kw) -> nn.Module:
    """torchvision's ResNet34 from scratch, the deep reference for the shallow net: 16 residual blocks
    of two 3x3 convs after its standard stem (small_input=True: a 3x3 stride-1 stem, no max-pool)."""
    return classifier(partial(tv_resnet, 34), **kw)


@register_model("resnet34_lowres", reference=LOWRES)
def resnet34_lowres(**kw) -> nn.Module:
    """torchvision's ResNet34 with the low-resolution stem (3x3 stride 1, no max-pool): the fair deep
    reference at 32-64 px, where the standard stem's 4x downsampling leaves 1x1 or 2x2 final maps."""
    return classifier(partial(tv_resnet, 34, small_input=True), **kw)


@register_model("resnet18_lowres", reference=LOWRES)
def resnet18_lowres(**kw) -> nn.Module:
    """torchvision's ResNet18 with the low-resolution stem (3x3 stride 1, no max-pool): the cheaper deep
    reference, 8 residual blocks of two 3x3 convs."""
    return classifier(partial(tv_resnet, 18, small_input=True), **kw)

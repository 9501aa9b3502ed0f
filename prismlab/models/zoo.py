"""Registered models: a trunk with a channel adapter in front (adapter="naive" by default)."""

from __future__ import annotations

from prismlab.models.adapters import make_adapter
from prismlab.models.base import Classifier
from prismlab.models.cool import CoolCNN
from prismlab.models.parallel import ParallelNet
from prismlab.models.registry import register_model
from prismlab.models.shallow import ShallowNet
from prismlab.models.trunks import BaselineCNN, resnet34


def _classifier(trunk_fn, adapter: str, adapter_kw: dict | None, **trunk_kw) -> Classifier:
    ad = make_adapter(adapter, **(adapter_kw or {}))
    return Classifier(ad, trunk_fn(in_channels=ad.out_channels, **trunk_kw))


@register_model("baseline_cnn")
def baseline_cnn(num_classes=50, adapter="naive", adapter_kw=None):
    """The original report's 3-layer CNN (conv 32-64-128, GAP, FC 512, FC)."""
    return _classifier(BaselineCNN, adapter, adapter_kw, num_classes=num_classes)


@register_model("resnet34")
def resnet34_model(num_classes=50, adapter="naive", adapter_kw=None, small_input=False):
    """torchvision ResNet34 from scratch (small_input=True: 3x3 stem, no max-pool)."""
    return _classifier(resnet34, adapter, adapter_kw, num_classes=num_classes, small_input=small_input)


@register_model("seed_cool_model")
def seed_cool_model(num_classes=50, adapter="naive", adapter_kw=None, widths=(64, 128, 256), dropout=0.3):
    """The original report's cool model: 3 residual conv blocks (1x1 shortcuts), spatial attention, GAP, FC."""
    return _classifier(CoolCNN, adapter, adapter_kw, num_classes=num_classes, widths=widths, dropout=dropout)


@register_model("seed_parallel")
def seed_parallel(num_classes=50, adapter="naive", adapter_kw=None, stem_width=32, growth=16, hidden=256, dropout=0.3):
    """The original report's Method 1: conv block, self-attention, RRDB and GCN in parallel (after a /4 stem), GAP, MLP."""
    return _classifier(ParallelNet, adapter, adapter_kw, num_classes=num_classes, stem_width=stem_width,
                       growth=growth, hidden=hidden, dropout=dropout)


def _shallow(num_classes, adapter, adapter_kw, **kw) -> Classifier:
    return _classifier(ShallowNet, adapter, adapter_kw, num_classes=num_classes, **kw)


@register_model("shallow")
def shallow(num_classes=50, adapter="naive", adapter_kw=None, widths=(64, 128, 256, 512), stem_width=32,
            deep_train=True, anneal=0.6, dropout=0.0):
    """Ours: 4 body layers at inference (RepVGG branches + annealed deep training fuse away), 64-128-256-512."""
    return _shallow(num_classes, adapter, adapter_kw, widths=widths, stem_width=stem_width,
                    deep_train=deep_train, anneal=anneal, dropout=dropout)


@register_model("shallow_s")
def shallow_s(num_classes=50, adapter="naive", adapter_kw=None, deep_train=True, anneal=0.6, dropout=0.0):
    """Ours, small: the shallow net at 48-96-192-384 (about 0.55x the FLOPs)."""
    return _shallow(num_classes, adapter, adapter_kw, widths=(48, 96, 192, 384), stem_width=24,
                    deep_train=deep_train, anneal=anneal, dropout=dropout)

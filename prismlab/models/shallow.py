"""A shallow network: six parametric layers at inference (stem conv, four body convs, linear head).

Training uses extra structure that fuses away (`ShallowNet.fuse()`):
- RepVGG blocks (`RepConv`): a 3x3 conv+BN is trained beside a 1x1 conv+BN, plus an identity BN
  when shapes allow; the branches are summed, so they fold into one 3x3 conv.
- VanillaNet-style deep training (`DeepTrainConv`): each body layer is conv -> act -> 1x1 conv,
  where act(x) = lam*x + (1-lam)*relu(x) is annealed from ReLU (lam=0) to the identity (lam=1)
  during training; at lam=1 the two convs are one. The activation holds no conv on purpose:
  VanillaNet's depthwise-conv activation would be a layer of its own on the counted path.
Every BN folds into the conv before it. Before lam reaches 1 the fused form keeps both convs of
each body layer, so it stays exact and its layer count honestly doubles.

A fresh model starts at lam=1 (its fused form is already the 6-layer net); the training loop's
`on_epoch(epoch, total_epochs)` sets lam=0 at epoch 0 and anneals it to 1 before the last epoch.
lam is a buffer, so checkpoints keep it.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prismlab.models.base import classifier
from prismlab.models.fuse import ConvBN, conv_from, fold_bn
from prismlab.models.registry import register_model


class RepConv(nn.Module):
    """RepVGG block: kxk conv+BN + 1x1 conv+BN (+ identity BN when cin == cout and stride 1)."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1):
        super().__init__()
        self.stride = stride
        self.kxk = ConvBN(cin, cout, k, stride)
        self.pw = ConvBN(cin, cout, 1, stride) if k > 1 else None
        self.identity = nn.BatchNorm2d(cout) if cin == cout and stride == 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.kxk(x)
        if self.pw is not None:
            y = y + self.pw(x)
        if self.identity is not None:
            y = y + self.identity(x)
        return y

    def kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single kxk kernel and bias equal to the sum of the branches (eval mode)."""
        w, b = self.kxk.kernel()
        k = w.shape[2]
        if self.pw is not None:
            w1, b1 = self.pw.kernel()
            w, b = w + F.pad(w1, [k // 2] * 4), b + b1  # a 1x1 kernel is a kxk one, zero but the centre
        if self.identity is not None:
            eye = torch.zeros_like(w)
            eye[range(w.shape[0]), range(w.shape[0]), k // 2, k // 2] = 1
            wi, bi = fold_bn(eye, self.identity)
            w, b = w + wi, b + bi
        return w, b

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        return conv_from(*self.kernel(), self.stride)


class AnnealedReLU(nn.Module):
    """lam*x + (1-lam)*relu(x): ReLU at lam=0, the identity at lam=1.

    That is a leaky ReLU of slope lam. lam is a buffer, so checkpoints keep it. Eager code reads it
    as a number for leaky_relu, whose backward on CPU is about 8x faster than PReLU's (which also
    reduces a gradient for the slope that nobody uses); under torch.compile it stays a tensor, since
    reading it would break the graph, and inductor fuses PReLU anyway.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("lam", torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling() or x.is_meta:  # a meta tensor has no value to read either
            return F.prelu(x, self.lam.to(x.dtype))
        return F.leaky_relu(x, float(self.lam))


class DeepTrainConv(nn.Module):
    """RepConv -> AnnealedReLU -> 1x1 conv+BN; one kxk conv once the activation is the identity."""

    def __init__(self, cin: int, cout: int, k: int = 3):
        super().__init__()
        self.conv = RepConv(cin, cout, k)
        self.act = AnnealedReLU()
        self.pw = ConvBN(cout, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.act(self.conv(x)))

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        (w1, b1), (w2, b2) = self.conv.kernel(), self.pw.kernel()
        if float(self.act.lam) == 1.0:
            w2 = w2.flatten(1)  # [out, mid]: a 1x1 conv after a kxk conv is a kxk conv
            return conv_from(torch.einsum("om,mikl->oikl", w2, w1), w2 @ b1 + b2, 1)
        parts = OrderedDict(conv=conv_from(w1, b1, 1), act=copy.deepcopy(self.act), pw=conv_from(w2, b2, 1))
        return nn.Sequential(parts).eval()


class ShallowNet(nn.Module):
    """Stem 3x3/2 -> four 3x3 layers with max-pool between -> global average pool -> linear.

    At 64x64 input the body layers run at 32, 16, 8 and 4 pixels. deep_train=False drops the
    annealed activation and its 1x1 conv (RepVGG branches only). `anneal`: the fraction of the
    run (in epochs) over which lam goes from 0 to 1.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_width: int = 32,
        deep_train: bool = True,
        anneal: float = 0.6,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.deep_train, self.anneal = deep_train, anneal
        parts = [("stem", RepConv(in_channels, stem_width, 3, stride=2)), ("stem_act", nn.ReLU(inplace=True))]
        c = stem_width
        for i, w in enumerate(widths, 1):
            if i > 1:  # ceil_mode: any input size, even one that shrinks to 1x1, still gets through
                parts.append((f"pool{i - 1}", nn.MaxPool2d(2, ceil_mode=True)))
            parts += [
                (f"layer{i}", DeepTrainConv(c, w) if deep_train else RepConv(c, w)),
                (f"act{i}", nn.ReLU(inplace=True)),
            ]
            c = w
        parts += [
            ("gap", nn.AdaptiveAvgPool2d(1)),
            ("flatten", nn.Flatten()),
            ("drop", nn.Dropout(dropout)),
            ("head", nn.Linear(c, num_classes)),
        ]
        self.net = nn.Sequential(OrderedDict(parts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @property
    def act_lambda(self) -> float:
        lams = [float(m.lam) for m in self.modules() if isinstance(m, AnnealedReLU)]
        return lams[0] if lams else 1.0

    @property
    def deployable(self) -> bool:
        """Only fully annealed weights fuse to 4 body layers (see engine.train.deployable)."""
        return not self.deep_train or self.act_lambda >= 1.0

    def set_act_lambda(self, lam: float) -> None:
        """0 = ReLU, 1 = identity (mergeable)."""
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"act lambda must be in [0, 1], got {lam}")
        for m in self.modules():
            if isinstance(m, AnnealedReLU):
                m.lam.fill_(lam)

    def on_epoch(self, epoch: int, total_epochs: int) -> None:
        """Called by the trainer at the start of each epoch (0-based): lam rises linearly from 0 at
        epoch 0 to 1 at `anneal` of the run, so the last epoch always trains the mergeable form."""
        if not self.deep_train:
            return
        span = self.anneal * (total_epochs - 1)
        self.set_act_lambda(1.0 if span <= 0 else min(1.0, epoch / span))

    @torch.no_grad()
    def fuse(self) -> nn.Sequential:
        """Inference form: a plain eval-mode nn.Sequential with the same layer names; self is unchanged."""
        return nn.Sequential(
            OrderedDict(
                (name, m.fuse() if isinstance(m, (RepConv, DeepTrainConv)) else copy.deepcopy(m))
                for name, m in self.net.named_children()
            )
        ).eval()


REFERENCE = "this project, after RepVGG (Ding et al. 2021) and VanillaNet's deep training (Chen et al. 2023)"


@register_model("shallow", reference=REFERENCE)
def shallow(**kw) -> nn.Module:
    """Ours: 4 body layers at inference (RepVGG branches + annealed deep training fuse away), 64-128-256-512."""
    return classifier(ShallowNet, **kw)


@register_model("shallow_xs", reference=REFERENCE)
def shallow_xs(**kw) -> nn.Module:
    """Ours, extra small: the shallow net at 32-64-128-256 (about a quarter of the FLOPs)."""
    return classifier(ShallowNet, widths=(32, 64, 128, 256), stem_width=16, **kw)


@register_model("shallow_s", reference=REFERENCE)
def shallow_s(**kw) -> nn.Module:
    """Ours, small: the shallow net at 48-96-192-384 (about 0.55x the FLOPs)."""
    return classifier(ShallowNet, widths=(48, 96, 192, 384), stem_width=24, **kw)


@register_model("shallow_l", reference=REFERENCE)
def shallow_l(**kw) -> nn.Module:
    """Ours, large: the shallow net at 96-192-384-768 (about 2.2x the FLOPs)."""
    return classifier(ShallowNet, widths=(96, 192, 384, 768), stem_width=48, **kw)

"""FLOPs and parameter counts. FLOPs follow torch's FlopCounterMode: a multiply-add is 2 FLOPs,
and only matrix products and convolutions are counted (norms, activations and pooling are not).

The model is counted as given: for a model's deployed cost pass `inference_form(model)`
(prismlab.models.fuse), which fuses re-parameterised blocks first.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from prismlab.analysis.layers import takes_channels
from prismlab.errors import ConfigError


def count_flops(
    model: nn.Module,
    input_size: int | tuple[int, int] = 32,
    in_channels: int | None = None,
    channels: Sequence[int] | None = None,
) -> int:
    """FLOPs of one forward of a single [in_channels, H, W] image in eval mode.

    in_channels defaults to len(channels), or 3 when channels is None (RGB).
    """
    if channels is not None and not takes_channels(model):
        raise ConfigError(f"{type(model).__name__} takes no channels argument")
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    c = in_channels if in_channels is not None else (len(channels) if channels is not None else 3)
    p = next(model.parameters(), None)
    x = torch.randn(
        1, c, h, w, device=p.device if p is not None else "cpu", dtype=p.dtype if p is not None else torch.float32
    )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x, channels) if takes_channels(model) else model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

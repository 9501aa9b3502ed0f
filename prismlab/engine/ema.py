"""An exponential moving average of a model's weights (`ema_decay`): the copy that is validated,
picked as best.pt and deployed, while the optimiser trains the live model.

Averaged: the parameters and the BatchNorm running statistics (whose float buffers follow the
weights they normalise). Copied from the live model: every other buffer, because it is schedule
state, not a weight: the shallow net's deep-training slope must reach exactly 1 for its two convs
to fuse into one, and an average would only approach 1.

The decay warms up as min(decay, (1 + t) / (10 + t)) over the updates t, as in TensorFlow's
ExponentialMovingAverage: early averages are not held back by the random initialisation.
"""

from __future__ import annotations

import copy

import torch
from torch.nn.modules.batchnorm import _BatchNorm


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        averaged = {name for name, _ in model.named_parameters()}
        for prefix, m in model.named_modules():
            if isinstance(m, _BatchNorm):
                averaged |= {f"{prefix}.{n}" if prefix else n for n, b in m.named_buffers(recurse=False)
                             if b.is_floating_point()}
        self.averaged = averaged

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = self.current_decay()
        live = model.state_dict()
        for name, avg in self.model.state_dict().items():
            if name in self.averaged:
                avg.lerp_(live[name].to(avg.dtype), 1.0 - d)
            else:
                avg.copy_(live[name])
        self.updates += 1

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates}

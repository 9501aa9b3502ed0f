"""An exponential moving average of a model's weights (`ema_decay`): the copy that is validated,
picked as best.pt and deployed, while the optimiser trains the live model.

Averaged: the parameters and the BatchNorm running statistics (whose float buffers follow the
weights they normalise). Copied from the live model: every other buffer, because it is schedule
state, not a weight: the shallow net's deep-training slope must reach exactly 1 for its two convs
to fuse into one, and an average would only approach 1.

After t updates the average is sum_s d^(t-s) w_s / sum_s d^(t-s) over the weights w_1..w_t seen
after each step: bias-corrected as Adam's moments are, so the random initialisation has no share
and the configured decay d holds from the first step (its time constant: 1 / (1 - d) steps).
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
        averaged = {name for name, _ in model.named_parameters(remove_duplicate=False)}
        for prefix, m in model.named_modules():
            if isinstance(m, _BatchNorm):
                buffers = m.named_buffers(recurse=False, remove_duplicate=False)
                averaged |= {f"{prefix}.{n}" if prefix else n for n, b in buffers if b.is_floating_point()}
        self.averaged = averaged

    def step_weight(self) -> float:
        """The new weights' share at the next update: (1 - d) / (1 - d^(t+1)), which is 1 at the
        first (the average starts as the live weights) and falls towards 1 - d."""
        d, t = self.decay, self.updates
        return (1 - d) / (1 - d ** (t + 1))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        share = self.step_weight()
        live = model.state_dict()
        seen = set()
        for name, avg in self.model.state_dict().items():
            if avg.data_ptr() in seen:  # a tied tensor under a second name: updated once
                continue
            seen.add(avg.data_ptr())
            if name in self.averaged:
                avg.lerp_(live[name].to(avg.dtype), share)
            else:
                avg.copy_(live[name])
        self.updates += 1

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates}

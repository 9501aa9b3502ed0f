"""Batched train-time augmentation on tensors: random resized crop + horizontal flip in one
grid_sample call for the whole batch (no per-sample Python), on whatever device the batch is on."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_resized_crop_flip(images: torch.Tensor, generator: torch.Generator, scale=(0.35, 1.0),
                             ratio=(3 / 4, 4 / 3), flip: bool = True) -> torch.Tensor:
    """uint8 [N,3,H,W] -> float [N,3,H,W] in [0, 1], each sample cropped (area fraction in `scale`,
    aspect ratio in `ratio`, as torchvision's RandomResizedCrop) and resized back to HxW, then
    flipped left-right with probability 1/2."""
    n = images.shape[0]
    x = images.float().div_(255.0)
    g = generator
    area = torch.empty(n).uniform_(scale[0], scale[1], generator=g)
    log_r = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=g)
    r = log_r.exp()
    w = (area * r).sqrt().clamp(max=1.0)  # crop width/height as fractions of the image
    h = (area / r).sqrt().clamp(max=1.0)
    cx = (torch.rand(n, generator=g) * 2 - 1) * (1 - w)  # centre, kept inside the image
    cy = (torch.rand(n, generator=g) * 2 - 1) * (1 - h)
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0) if flip else torch.ones(n)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = w * sign
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

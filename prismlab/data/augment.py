"""Batched train-time augmentation on tensors: random resized crop + horizontal flip in one
grid_sample call for the whole batch (no per-sample Python), on whatever device the batch is on."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_resized_crop_flip(
    images: torch.Tensor, generator: torch.Generator, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3), flip: bool = True
) -> torch.Tensor:
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
    # The crop is axis-aligned, so the sampling grid is an outer sum: x depends on the column only,
    # y on the row only (what affine_grid computes with a 2x3 matrix, at a tenth of its cost).
    hh, ww = x.shape[-2:]
    u = (torch.arange(ww, dtype=x.dtype) * 2 + 1) / ww - 1  # pixel centres in [-1, 1] (align_corners=False)
    v = (torch.arange(hh, dtype=x.dtype) * 2 + 1) / hh - 1
    gx = (w * sign)[:, None] * u + cx[:, None]
    gy = h[:, None] * v + cy[:, None]
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    return F.grid_sample(x, grid.to(x.device), mode="bilinear", padding_mode="border", align_corners=False)

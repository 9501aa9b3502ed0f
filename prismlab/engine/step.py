"""One training step and what it is made of: the optimiser and its schedule, the views a batch is
seen through, their loss, and the BatchNorm re-estimation at an epoch's end."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from prismlab.data.channels import ChannelSampler, to_subset
from prismlab.data.loader import BatchLoader
from prismlab.engine import distributed
from prismlab.engine.config import TrainConfig


def lr_at(step: int, total: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """Linear warm-up, then cosine to zero. 'onecycle' warms up over the first 30% of steps."""
    warm = int(0.3 * total) if cfg.schedule == "onecycle" else int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * t))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on norms, biases and embeddings (1-d parameters), as is standard.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def forward_subsets(
    model, x: torch.Tensor, subsets: list[str], channels_last: bool = False, rgb_view: bool = False
) -> torch.Tensor:
    """Logits for a batch seen through one subset, or through several: equal chunks, one subset each.
    rgb_view: the whole batch is also seen in RGB, first: logits [2N] = RGB view, then the subsets'."""
    parts = [to_subset(c, s) for c, s in zip(x.chunk(len(subsets)), subsets)]
    if rgb_view:
        parts.insert(0, to_subset(x, "RGB"))
    if channels_last:
        parts = [(xs.contiguous(memory_format=torch.channels_last), ids) for xs, ids in parts]
    if len(parts) == 1:
        return model(*parts[0])
    return model([xs for xs, _ in parts], [ids for _, ids in parts])


Targets = list[tuple[torch.Tensor, float]]  # (labels, weight): one pair, or two for a mixed batch


def mix_batch(
    x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, Targets]:
    """mixup (Zhang et al. 2018) or cutmix (Yun et al. 2019) of a uint8 or [0,1] batch with a
    permutation of itself -> ([0,1] float batch, [(y, lam), (y[perm], 1 - lam)]); with both alphas
    set, each batch uses one of the two at random. Without either: (x, [(y, 1)]) unchanged."""
    modes = [m for m, a in (("mixup", cfg.mixup_alpha), ("cutmix", cfg.cutmix_alpha)) if a > 0]
    if not modes:
        return x, [(y, 1.0)]
    mode = modes[rng.integers(len(modes))]
    lam = float(rng.beta(*[cfg.mixup_alpha if mode == "mixup" else cfg.cutmix_alpha] * 2))
    perm = torch.from_numpy(rng.permutation(len(y))).to(y.device)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if mode == "mixup":
        x = lam * x + (1 - lam) * x[perm]
    else:  # a box of area (1 - lam) from the partner; lam becomes the share the box left
        h, w = x.shape[-2:]
        bh, bw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = max(cy - bh // 2, 0), min(cy + bh - bh // 2, h)
        x0, x1 = max(cx - bw // 2, 0), min(cx + bw - bw // 2, w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    return x, [(y, lam), (y[perm], 1 - lam)]


def view_loss(logits: torch.Tensor, y: torch.Tensor | Targets, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (loss, the subset views' logits). y: labels, or mix_batch's weighted targets (cross-entropy
    is linear in its target, so their weighted sum is the loss of the mixed soft target). With
    rgb_view, logits hold the RGB view then the subset views of the same images: both are trained
    on the labels, and with view_distill > 0 each subset view also matches the RGB view's
    predictions (detached: the RGB view teaches, it is not pulled towards the weaker views)."""
    targets = [(y, 1.0)] if isinstance(y, torch.Tensor) else y

    def ce(z: torch.Tensor) -> torch.Tensor:
        return sum(w * F.cross_entropy(z.float(), t, label_smoothing=cfg.label_smoothing) for t, w in targets)

    if not cfg.rgb_view:
        return ce(logits), logits
    rgb, views = logits.chunk(2)
    loss = ce(rgb) + ce(views)
    if cfg.view_distill > 0:
        loss = loss + cfg.view_distill * F.kl_div(
            views.float().log_softmax(1), rgb.detach().float().log_softmax(1), log_target=True, reduction="batchmean"
        )
    return loss, views


def hits(logits: torch.Tensor, y: torch.Tensor | Targets) -> float:
    """Correct predictions in a batch; for a mixed batch each label counts with its weight."""
    targets = [(y, 1.0)] if isinstance(y, torch.Tensor) else y
    pred = logits.argmax(1)
    return sum(w * (pred == t).sum().item() for t, w in targets)


def train_step(
    model,
    optimizer,
    x,
    y: torch.Tensor | Targets,
    subsets: list[str],
    cfg: TrainConfig,
    bf16: bool,
    channels_last: bool = False,
):
    """One optimisation step on a uint8 or [0,1] batch and its labels (or mix_batch's targets) ->
    (logits, loss, finite). A non-finite loss skips the update, so the caller can stop with the
    weights still good. channels_last: the input is made channels-last, as the model is."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = forward_subsets(model, x, subsets, channels_last, cfg.rgb_view)
        loss, logits = view_loss(logits, y, cfg)
    # Under DDP every rank must agree, or the ranks that skip would leave the others in all-reduce.
    finite = distributed.all_true(bool(torch.isfinite(loss)), x.device)
    if finite:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return logits, loss, finite


@torch.no_grad()
def recalibrate_bn(
    model: torch.nn.Module,
    loader: BatchLoader,
    sampler: ChannelSampler,
    batches: int,
    subsets_per_batch: int = 1,
    rgb_view: bool = False,
) -> None:
    """Re-estimate BatchNorm running statistics as a plain average over `batches` batches whose
    subsets follow the training mix. With one subset per batch, the usual moving average is
    dominated by the last few batches' subsets; evaluation on any subset then suffers."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or batches <= 0:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = model.training
    model.train()
    for i, (x, _, _) in enumerate(loader):
        if i >= batches:
            break
        subsets = [sampler.sample() for _ in range(subsets_per_batch)]
        forward_subsets(model, x, subsets, rgb_view=rgb_view)  # the views training saw
    for m, mom in zip(norms, momenta):
        m.momentum = mom
    model.train(was_training)

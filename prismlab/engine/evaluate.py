"""Evaluation on channel subsets: one pass over the data, every subset per batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from prismlab.channels import parse_subsets, subset_ids
from prismlab.data.cache import CachedSplit, build_cache
from prismlab.data.channels import to_subset
from prismlab.data.loader import BatchLoader
from prismlab.data.splits import check_classes, load_split
from prismlab.engine import distributed
from prismlab.engine.checkpoint import model_from_checkpoint
from prismlab.engine.precision import precision_name
from prismlab.engine.rundir import load_checkpoint


def _subset_logits(model, loader: BatchLoader, subsets: list[str], device: torch.device, amp: bool):
    """One pass over the data, every subset per batch -> (subset, logits, labels, indices)."""
    model.eval()
    for x, y, idx in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        for s in subsets:
            xs, ids = to_subset(x, s)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                yield s, model(xs, ids).float(), y, idx


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: BatchLoader, subsets: list[str], device: torch.device,
             amp: bool = False) -> dict[str, dict]:
    """-> {subset: {"accuracy", "loss", "n"}}, summed over all DDP ranks."""
    sums = {s: [0.0, 0.0, 0.0] for s in subsets}  # loss sum, correct, n
    for s, logits, y, _ in _subset_logits(model, loader, subsets, device, amp):
        acc = sums[s]
        acc[0] += F.cross_entropy(logits, y, reduction="sum").item()
        acc[1] += (logits.argmax(1) == y).sum().item()
        acc[2] += len(y)
    out = {}
    for s in subsets:
        loss, correct, n = distributed.all_sum(sums[s], device)
        out[s] = {"accuracy": correct / max(n, 1), "loss": loss / max(n, 1), "n": int(n)}
    return out


@torch.no_grad()
def correct_per_image(model: torch.nn.Module, loader: BatchLoader, subsets: list[str],
                      device: torch.device = torch.device("cpu"), amp: bool = False) -> dict[str, np.ndarray]:
    """-> {subset: one bool per image of the split, in split order}: what bootstrap intervals resample."""
    out = {s: np.zeros(len(loader.labels), dtype=bool) for s in subsets}
    for s, logits, y, idx in _subset_logits(model, loader, subsets, device, amp):
        out[s][idx.numpy()] = (logits.argmax(1) == y).cpu().numpy()
    return out


def eval_report(model: torch.nn.Module, data: CachedSplit, split: str | Path, checkpoint: str | Path,
                subsets: list[str], device: torch.device, amp: bool = False, batch_size: int = 256,
                rank: int = 0, world: int = 1) -> dict:
    """The weights of `checkpoint` on a split, per subset: what eval-test.json and `prismlab eval
    --json` hold (summed over DDP ranks)."""
    loader = BatchLoader(data, batch_size, train=False, rank=rank, world_size=world)
    return {"checkpoint": str(checkpoint), "split": str(split), "n": len(data), "size": data.size,
            "precision": precision_name(amp), "skipped": data.skipped,
            "results": evaluate(model, loader, subsets, device, amp)}


def evaluate_checkpoint(checkpoint: str | Path, split: str | Path, channels: str = "all", size: int | None = None,
                        batch_size: int = 256, cache_dir: str | None = None, skip_bad: bool = False,
                        bands: bool = False) -> dict:
    """The `prismlab eval` job: any split file in the course layout, wherever it lies. bands: every
    file's bands are the one subset of `channels` (see evaluate_bands)."""
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, checkpoint)
    size = size or int(ckpt["config"]["image_size"])
    if bands:
        return evaluate_bands(model, ckpt, checkpoint, split, channels, size, batch_size)
    subsets = parse_subsets(channels)
    entries = load_split(split, num_classes=ckpt["model_spec"]["num_classes"], skip_bad=skip_bad)
    check_classes(entries, ckpt.get("classes"), f"the checkpoint ({checkpoint})")
    data = build_cache(entries, size, cache_dir=cache_dir or None, skip_bad=skip_bad)
    return eval_report(model, data, split, checkpoint, subsets, torch.device("cpu"), batch_size=batch_size)


@torch.no_grad()
def evaluate_bands(model: torch.nn.Module, ckpt: dict, checkpoint: str | Path, split: str | Path, channels: str,
                   size: int, batch_size: int = 256) -> dict:
    """Files whose bands are one subset's channels, band by band, as predict reads them (.npy [C, H, W]
    or [H, W, C], PNG, TIFF of any band count, and RGB photos for RGB), of any declared ids (R+NIR
    for a model that declares NIR). Decoded file by file: no cache."""
    from prismlab.engine.predict import ARRAY, file_bands, one_subset
    from prismlab.models.base import declared_of
    from prismlab.data.splits import IMAGE_EXTENSIONS

    declared = declared_of(model)
    subset = one_subset(channels, declared, "eval --bands")
    ids = subset_ids(subset, declared)
    entries = load_split(split, num_classes=ckpt["model_spec"]["num_classes"], extensions=(*IMAGE_EXTENSIONS, ARRAY))
    check_classes(entries, ckpt.get("classes"), f"the checkpoint ({checkpoint})")
    model.eval()
    loss, correct = 0.0, 0
    for start in range(0, len(entries), batch_size):
        chunk = entries.entries[start:start + batch_size]
        x = torch.cat([file_bands(e.path, subset, ids, size) for e in chunk])
        y = torch.tensor([e.label for e in chunk])
        logits = model(x, ids).float()
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(1) == y).sum())
    n = len(entries)
    return {"checkpoint": str(checkpoint), "split": str(split), "n": n, "size": size, "precision": precision_name(False),
            "skipped": [], "bands": subset,
            "results": {subset: {"accuracy": correct / max(n, 1), "loss": loss / max(n, 1), "n": n}}}


"""Evaluation on channel subsets: one pass over the data, every subset per batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from prismlab.analysis.stats import from_bits, to_bits
from prismlab.channels import parse_subsets, subset_ids
from prismlab.data.cache import CachedSplit, build_cache
from prismlab.data.channels import to_subset
from prismlab.data.loader import BatchLoader
from prismlab.data.splits import check_classes, load_split
from prismlab.engine import distributed
from prismlab.engine.checkpoint import model_from_checkpoint
from prismlab.engine.precision import precision_name
from prismlab.engine.rundir import BEST, TEST, RunDir, load_checkpoint
from prismlab.errors import DataError


def _subset_logits(model, loader: BatchLoader, subsets: list[str], device: torch.device, bf16: bool):
    """One pass over the data, every subset per batch -> (subset, logits, labels, indices)."""
    model.eval()
    for x, y, idx in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        for s in subsets:
            xs, ids = to_subset(x, s)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                yield s, model(xs, ids).float(), y, idx


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, loader: BatchLoader, subsets: list[str], device: torch.device, bf16: bool = False
) -> dict[str, dict]:
    """-> {subset: {"accuracy", "loss", "n"}}, summed over all DDP ranks."""
    return _score(model, loader, subsets, device, bf16, per_image=False)[0]


@torch.no_grad()
def correct_per_image(
    model: torch.nn.Module,
    loader: BatchLoader,
    subsets: list[str],
    device: torch.device = torch.device("cpu"),
    bf16: bool = False,
) -> dict[str, np.ndarray]:
    """-> {subset: one bool per image of the split, in split order}: what bootstrap intervals resample."""
    return _score(model, loader, subsets, device, bf16, per_image=True)[1]


def _score(
    model, loader: BatchLoader, subsets: list[str], device: torch.device, bf16: bool, per_image: bool
) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """One pass -> ({subset: {"accuracy", "loss", "n"}}, {subset: one bool per image} if per_image),
    both over all DDP ranks: each rank scores its stride of the split, the sums and bits are added up."""
    sums = {s: [0.0, 0.0, 0.0] for s in subsets}  # loss sum, correct, n
    hit = {s: np.zeros(len(loader.labels), dtype=np.int64) for s in subsets} if per_image else {}
    for s, logits, y, idx in _subset_logits(model, loader, subsets, device, bf16):
        right = logits.argmax(1) == y
        acc = sums[s]
        acc[0] += F.cross_entropy(logits, y, reduction="sum").item()
        acc[1] += right.sum().item()
        acc[2] += len(y)
        if per_image:
            hit[s][idx.numpy()] = right.cpu().numpy()
    results = {}
    for s in subsets:
        loss, correct, n = distributed.all_sum(sums[s], device)
        results[s] = {"accuracy": correct / max(n, 1), "loss": loss / max(n, 1), "n": int(n)}
    # The ranks' strides are disjoint, so the sum of their arrays is each image's own score.
    return results, {s: distributed.all_sum_array(h, device) > 0 for s, h in hit.items()}


def eval_report(
    model: torch.nn.Module,
    data: CachedSplit,
    split: str | Path,
    checkpoint: str | Path,
    subsets: list[str],
    device: torch.device,
    bf16: bool = False,
    batch_size: int = 256,
    rank: int = 0,
    world: int = 1,
    per_image: bool = False,
) -> dict:
    """The weights of `checkpoint` on a split, per subset: what eval-test.json and `prismlab eval
    --json` hold (summed over DDP ranks). per_image: with "test_correct": {subset: to_bits(one 0/1
    per image, in split order)}, what test_correct() reads back."""
    loader = BatchLoader(data, batch_size, train=False, rank=rank, world_size=world)
    results, correct = _score(model, loader, subsets, device, bf16, per_image)
    return {
        "checkpoint": str(checkpoint),
        "split": str(split),
        "n": len(data),
        "size": data.size,
        "precision": precision_name(bf16),
        "skipped": data.skipped,
        "results": results,
        **({"test_correct": {s: to_bits(c) for s, c in correct.items()}} if per_image else {}),
    }


def test_correct(run: RunDir) -> dict[str, np.ndarray]:
    """One 0/1 per test image and subset (in split order) for a finished run's best.pt: what its
    eval-test.json holds, or, for a run whose eval-test.json lacks them, best.pt scored again as the
    test scored it (the device training picks, the test's precision, fp32 where none is named, and
    batch size), so an interval resamples the evaluation its accuracy comes from."""
    report = run.test()
    if report is None:
        raise DataError(f"{run / TEST}: not found; the run has not finished")
    if "test_correct" in report:
        return {s: from_bits(b) for s, b in report["test_correct"].items()}
    cfg = run.config()
    model = model_from_checkpoint(run.checkpoint(BEST), run / BEST)
    split = load_split(Path(cfg.data) / cfg.test_split, num_classes=model.spec["num_classes"], skip_bad=cfg.skip_bad)
    data = build_cache(split, cfg.image_size, cfg.cache_dir or None, cfg.skip_bad)
    device = distributed.local_device()
    loader = BatchLoader(data, cfg.batch_size, train=False)
    return correct_per_image(
        model.to(device), loader, list(report["results"]), device, report.get("precision") == "bf16"
    )


test_correct.__test__ = False  # pytest: a test module that imports it must not collect it


def evaluate_checkpoint(
    checkpoint: str | Path,
    split: str | Path,
    channels: str = "all",
    size: int | None = None,
    batch_size: int = 256,
    cache_dir: str | None = None,
    skip_bad: bool = False,
    bands: bool = False,
) -> dict:
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
def evaluate_bands(
    model: torch.nn.Module,
    ckpt: dict,
    checkpoint: str | Path,
    split: str | Path,
    channels: str,
    size: int,
    batch_size: int = 256,
) -> dict:
    """Files whose bands are one subset's channels, band by band, as predict reads them (.npy [C, H, W]
    or [H, W, C], PNG, TIFF of any band count, and RGB photos for RGB), of any declared ids (R+NIR
    for a model that declares NIR). Decoded file by file: no cache."""
    from prismlab.data.splits import IMAGE_EXTENSIONS
    from prismlab.engine.predict import ARRAY, file_bands, one_subset
    from prismlab.models.base import declared_of

    declared = declared_of(model)
    subset = one_subset(channels, declared, "eval --bands")
    ids = subset_ids(subset, declared)
    entries = load_split(split, num_classes=ckpt["model_spec"]["num_classes"], extensions=(*IMAGE_EXTENSIONS, ARRAY))
    check_classes(entries, ckpt.get("classes"), f"the checkpoint ({checkpoint})")
    model.eval()
    loss, correct = 0.0, 0
    for start in range(0, len(entries), batch_size):
        chunk = entries.entries[start : start + batch_size]
        x = torch.cat([file_bands(e.path, subset, ids, size) for e in chunk])
        y = torch.tensor([e.label for e in chunk])
        logits = model(x, ids).float()
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(1) == y).sum())
    n = len(entries)
    return {
        "checkpoint": str(checkpoint),
        "split": str(split),
        "n": n,
        "size": size,
        "precision": precision_name(False),
        "skipped": [],
        "bands": subset,
        "results": {subset: {"accuracy": correct / max(n, 1), "loss": loss / max(n, 1), "n": n}},
    }

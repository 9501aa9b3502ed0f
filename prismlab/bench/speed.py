"""Speed study: is the model ever waiting for data?

For each model, training img/s (1) on random in-memory tensors, (2) through prismlab's data path
(cache + batched augmentation), (3) through a naive per-sample pipeline like the original homework
(PIL decode + torchvision v2 transforms per sample in a DataLoader). Same batch, device, precision
(what amp=auto trains in), threads. Beside them, (1) again in fp32 and in bf16 autocast: what
amp=bf16 would buy on this machine.
"""

from __future__ import annotations

import itertools
import os
import time

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from prismlab.analysis.report import md_table
from prismlab.bench.common import StudyArgs, frame, preset, study_provenance, write_results
from prismlab.data.cache import build_cache
from prismlab.data.channels import MEAN, STD
from prismlab.data.loader import BatchLoader
from prismlab.data.splits import load_split
from prismlab.engine.config import make_config
from prismlab.engine.precision import cpu_has_native_bf16, use_bf16
from prismlab.engine.step import make_optimizer, train_step
from prismlab.errors import PrismError
from prismlab.models import create_model

MODELS = {"resnet34": "resnet34", "ours": "shallow"}


def default_workers() -> int:
    """Loader processes: leave the model most cores (1 on 2 cores, 8 on 16)."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


class NaiveDataset(Dataset):
    """The homework's pipeline: decode each JPEG and transform it, per sample."""

    def __init__(self, entries, size: int, scale_min: float):
        self.entries = entries
        self.tf = v2.Compose([v2.PILToTensor(), v2.RandomResizedCrop(size, scale=(scale_min, 1.0), antialias=True),
                              v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True),
                              v2.Normalize(MEAN[:3], STD[:3])])

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i):
        e = self.entries[i]
        with Image.open(e.path) as im:
            return self.tf(im.convert("RGB")), e.label


def measure(model, batches, cfg, steps: int, warmup: int, device: torch.device, amp: bool,
            normalized: bool = False, max_seconds: float | None = None) -> float:
    """Training img/s over `steps` steps after `warmup`, pulling batches from the iterator;
    with max_seconds, fewer timed steps (at least one) once that much time has passed."""
    model.to(device).train()
    opt = make_optimizer(model, cfg)
    it = iter(batches)
    n, t0 = 0, None
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        x, y = (t.to(device, non_blocking=True) for t in next(it)[:2])
        if normalized:  # the naive pipeline already normalised: feed the model directly
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = F.cross_entropy(model(x).float(), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            train_step(model, opt, x, y, ["RGB"], cfg, amp)
        if i >= warmup:
            n += len(y)
            if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
                break
    sync(device)
    return n / (time.perf_counter() - t0)


def sync(device: torch.device) -> None:
    """CUDA runs asynchronously: wait for the queued work before reading the clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forever(loader):
    while True:
        yield from loader


def run(args: StudyArgs) -> None:
    data = args.data_dir()
    base = preset(f"task2-{args.tier}")
    size, bs = base["image_size"], base["batch_size"]
    cfg = make_config(None, {**base, "data": str(data)})
    split = load_split(data / cfg.train_split)
    if len(split.entries) < bs:  # else no full batch exists and the loaders below would spin forever
        raise PrismError(f"{data / cfg.train_split}: {len(split.entries)} images, fewer than one batch of {bs}")
    cache = build_cache(split, size, progress=True)
    steps, warmup = (12, 3) if args.tier == "cpu" else (50, 10)
    if args.steps:  # a quick look (or a longer, steadier one): a quarter as many warm-up steps
        steps, warmup = args.steps, args.steps // 4
    # The device and precision training would use (amp=auto), for all three pipelines.
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    amp = use_bf16(cfg.amp, device)
    # Emulated bf16 (a CPU without native bf16) is many times slower: cap its timing, not its warm-up.
    native = device.type == "cuda" or cpu_has_native_bf16()
    bf16_cap = None if native else 60.0
    workers = default_workers()
    models = {}
    for key, name in MODELS.items():
        torch.manual_seed(args.seed)
        make = lambda: create_model(name, num_classes=split.num_classes)  # noqa: E731
        # (1) one random batch, already on the device, again and again: the model alone
        batch = (torch.randint(0, 256, (bs, 3, size, size), dtype=torch.uint8, device=device),
                 torch.randint(0, split.num_classes, (bs,), device=device))
        model_only = measure(make(), itertools.repeat(batch), cfg, steps, warmup, device, amp)
        fp32 = model_only if not amp else measure(make(), itertools.repeat(batch), cfg, steps, warmup, device, False)
        bf16 = model_only if amp else measure(make(), itertools.repeat(batch), cfg, steps, min(warmup, 1), device,
                                              True, max_seconds=bf16_cap)
        loader = BatchLoader(cache, bs, train=True, seed=args.seed, scale_min=cfg.scale_min, device=device)
        end_to_end = measure(make(), forever(loader), cfg, steps, warmup, device, amp)
        naive_loader = DataLoader(NaiveDataset(split.entries, size, cfg.scale_min), batch_size=bs, shuffle=True,
                                  num_workers=workers, drop_last=True, persistent_workers=True,
                                  pin_memory=device.type == "cuda")
        naive = measure(make(), forever(naive_loader), cfg, steps, warmup, device, amp, normalized=True)
        del naive_loader  # stops its worker processes before the next model's start
        models[key] = {"model": name, "model_only_img_s": model_only, "end_to_end_img_s": end_to_end,
                       "naive_pipeline_img_s": naive, "end_to_end_over_model_only": end_to_end / model_only,
                       "end_to_end_over_naive": end_to_end / naive,
                       "train_img_s_fp32": fp32, "train_img_s_bf16": bf16, "bf16_over_fp32": bf16 / fp32}
        print(f"[speed] {key}: {models[key]}", flush=True)
    doc = study_provenance(
        args, data=str(data), image_size=size, batch_size=bs, steps=steps, warmup_steps=warmup,
        steps_overridden=bool(args.steps), device=str(device), amp_bf16=amp, native_bf16=native,
        bf16_max_seconds=bf16_cap, naive_loader_workers=workers, models=models,
        **{"target_end_to_end_over_model_only>=0.90": all(m["end_to_end_over_model_only"] >= 0.90
                                                          for m in models.values())})
    md = markdown(doc)
    write_results(args.results_dir, f"speed-{args.tier}", doc, md)
    print(md)


def _targets(doc: dict) -> list[str]:
    found = {k[len("target_"):]: v for k, v in doc.items() if k.startswith("target_")}
    return ["Targets: " + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in found.items()), ""] if found else []


def markdown(doc: dict) -> str:
    rows = [[k, m["model"], f"{m['model_only_img_s']:.1f}", f"{m['end_to_end_img_s']:.1f}", f"{m['naive_pipeline_img_s']:.1f}",
             f"{m['end_to_end_over_model_only']:.2f}", f"{m['end_to_end_over_naive']:.2f}",
             f"{m['train_img_s_fp32']:.1f}", f"{m['train_img_s_bf16']:.1f}", f"{m['bf16_over_fp32']:.2f}"]
            for k, m in doc["models"].items()]
    size, device, native, cap = doc["image_size"], doc["device"], doc["native_bf16"], doc["bf16_max_seconds"]
    return frame(doc, f"Speed: data path vs model ({doc['tier']} tier)", [
        md_table(["key", "model", "(1) model-only img/s", "(2) end-to-end img/s", "(3) naive pipeline img/s",
                  "(2)/(1)", "(2)/(3)", "(1) fp32 img/s", "(1) bf16 img/s", "bf16/fp32"], rows), "",
        f"bf16 is autocast around the forward pass; {device} {'has' if native else 'has no'} native bf16"
        f"{'' if native else f' (emulated: its timing stops after {cap:.0f} s, at least one step)'}.", "",
        *_targets(doc)],
        recipe=f", {size}x{size}, batch {doc['batch_size']}, {doc['steps']} timed steps after {doc['warmup_steps']} "
        f"warm-up{' (--steps)' if doc['steps_overridden'] else ''}, on {device}{' (bf16 autocast)' if doc['amp_bf16'] else ''}",
        cores=f", {doc['machine']['torch_threads']} torch threads", gpu=True,
        machine_note=f"; naive loader workers: {doc['naive_loader_workers']}")

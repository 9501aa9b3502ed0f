"""The timing machinery of `prismlab bench speed` (see speed.py): the GEMM peak, training steps fed
from each source, alternated in rounds so a shared machine's drift cancels, and one row's measurements."""

from __future__ import annotations

import copy
import itertools
import statistics
import time

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from prismlab.analysis.flops import count_flops
from prismlab.data.channels import MEAN, STD
from prismlab.data.loader import BatchLoader
from prismlab.deploy.runtimes import PROFILED_BATCHES, time_share
from prismlab.engine.precision import compile_model, use_channels_last
from prismlab.engine.step import make_optimizer, train_step
from prismlab.models import create_model

TRAIN_OP_KINDS = {"conv": ("conv",), "norm": ("norm",), "pool": ("pool",)}  # by aten op name; the rest is "other"
EMULATED_CAP_S = 60.0  # emulated bf16 is 10-25x slower: its timing stops after this long


class NaiveDataset(Dataset):
    """The homework's pipeline: decode each JPEG and transform it, per sample."""

    def __init__(self, entries, size: int, scale_min: float):
        self.entries = entries
        self.tf = v2.Compose(
            [
                v2.PILToTensor(),
                v2.RandomResizedCrop(size, scale=(scale_min, 1.0), antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(MEAN[:3], STD[:3]),
            ]
        )

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i):
        e = self.entries[i]
        with Image.open(e.path) as im:
            return self.tf(im.convert("RGB")), e.label


def sync(device: torch.device) -> None:
    """CUDA runs asynchronously: wait for the queued work before reading the clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forever(loader):
    while True:
        yield from loader


def gemm_peak(device: torch.device, dtype: torch.dtype, seconds: float, emulated: bool = False) -> dict:
    """GFLOP/s of torch.mm on square matrices and of a 1x1 convolution over a channels-last batch
    (a GEMM through oneDNN on CPU), each the best of two sizes. emulated: bf16 on a CPU without it,
    about 100x slower than fp32 here, so sizes a quarter as wide (a 2048-wide product took 18 s)."""

    def rate(fn, flops: float) -> float:
        fn()
        fn()
        sync(device)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or n < 2:
            fn()
            n += 1
        sync(device)
        return flops * n / (time.perf_counter() - t0) / 1e9

    big = device.type == "cuda"
    mm, conv = 0.0, 0.0
    for n in (4096, 8192) if big else (256, 512) if emulated else (1024, 2048):
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        mm = max(mm, rate(lambda: a @ b, 2 * n**3))
    for c in (1024, 2048) if big else (128, 256) if emulated else (512, 1024):
        x = torch.randn(64, c, 32, 32, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(c, c, 1, 1, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        conv = max(conv, rate(lambda: F.conv2d(x, w), 2 * 64 * 32 * 32 * c * c))
    return {"matmul_gflop_s": mm, "conv1x1_gflop_s": conv, "peak_gflop_s": max(mm, conv)}


class Source:
    """One way of feeding a training step: a model, its optimiser and where its batches come from."""

    def __init__(self, model, batches, cfg, device, bf16: bool, channels_last: bool):
        self.model, self.opt, self.batches = model, make_optimizer(model, cfg), iter(batches)
        self.cfg, self.device, self.bf16, self.channels_last = cfg, device, bf16, channels_last

    def step(self) -> int:
        x, y = (t.to(self.device, non_blocking=True) for t in next(self.batches)[:2])
        train_step(self.model, self.opt, x, y, ["RGB"], self.cfg, self.bf16, self.channels_last)
        return len(y)

    def timed(self, steps: int) -> tuple[int, float]:
        sync(self.device)
        n, t0 = 0, time.perf_counter()
        for _ in range(steps):
            n += self.step()
        sync(self.device)
        return n, time.perf_counter() - t0


def alternate(sources: dict[str, Source], steps: int, warmup: int, cap_s: float | None = None) -> dict:
    """Every source trains `warmup` steps, then rounds of 3 timed steps each, one source after the
    other, until each has `steps` (fewer, at least one round, after cap_s seconds) -> {"img_s": {key:
    its median round}, "rounds": {key: [img/s per round]}}. Each round starts with an untimed
    step: the one after a switch runs on caches the other source's weights have filled."""
    for s in sources.values():
        for _ in range(warmup):
            s.step()
    per = min(3, steps)
    rounds = {k: [] for k in sources}
    t0 = time.perf_counter()
    for _ in range(max(1, steps // per)):
        for k, s in sources.items():
            if len(sources) > 1:
                s.step()
            n, dt = s.timed(per)
            rounds[k].append(n / dt)
        if cap_s is not None and time.perf_counter() - t0 > cap_s:
            break
    # the median round: a shared machine's passing slowdowns do not move it
    img_s = {k: statistics.median(r) for k, r in rounds.items()}
    return {"img_s": img_s, "rounds": rounds}


def median_ratio(rounds: dict, a: str, b: str) -> float:
    """Median over rounds of a's img/s over b's in the same round."""
    return statistics.median(x / y for x, y in zip(rounds[a], rounds[b]))


def measure(
    name: str, precision: str, cache, split, cfg, device, steps: int, warmup: int, native: bool, seed: int, workers: int
) -> dict:
    """One model in one precision: every measurement of the table's row."""
    size, bs = cfg.image_size, cfg.batch_size
    bf16 = precision == "bf16"
    emulated = bf16 and not native
    cl = use_channels_last(cfg.channels_last, device)
    batch = (
        torch.randint(0, 256, (bs, 3, size, size), dtype=torch.uint8, device=device),
        torch.randint(0, split.num_classes, (bs,), device=device),
    )

    def source(batches=None, channels_last: bool = cl, kind=Source) -> Source:
        """A fresh model (the same weights each time) fed `batches`, by default `batch` again and again."""
        torch.manual_seed(seed)
        m = create_model(name, num_classes=split.num_classes).to(device)
        m = m.to(memory_format=torch.channels_last) if channels_last else m
        return kind(m, itertools.repeat(batch) if batches is None else batches, cfg, device, bf16, channels_last)

    sources = {"model_only": source()}
    flops = count_flops(copy.deepcopy(sources["model_only"].model).float(), size)  # every branch it trains
    if not emulated:
        loader = BatchLoader(cache, bs, train=True, seed=seed, scale_min=cfg.scale_min, device=device)
        sources["end_to_end"] = source(forever(loader))
        if cl:
            sources["model_only_nchw"] = source(channels_last=False)
        sources["compiled"] = compiled = source()
        compiled.model = compile_model(compiled.model, device)
        sources["model_only"].step()
        steady_s = sources["model_only"].timed(1)[1]
        compile_s = max(0.0, compiled.timed(1)[1] - steady_s)  # its first step compiles forward and backward
    res = alternate(sources, steps, warmup, EMULATED_CAP_S if emulated else None)
    img_s, rounds = res["img_s"], res["rounds"]
    m = sources["model_only"]
    # one profiled step where bf16 is emulated: each costs 10-25 ordinary ones, and the shares are what matters
    share = time_share(lambda _: m.step(), None, kinds=TRAIN_OP_KINDS, batches=1 if emulated else PROFILED_BATCHES)
    row = {
        "model": name,
        "precision": precision,
        "emulated": emulated,
        "channels_last": cl,
        "train_flops_per_image": 3 * flops,
        "model_only_img_s": img_s["model_only"],
        "rounds": len(rounds["model_only"]),
        "time_share": share,
    }
    row["achieved_gflop_s"] = 3 * flops * img_s["model_only"] / 1e9
    if emulated:
        return row
    # spawned, not forked: this process runs OpenMP and compiled-kernel threads a fork would copy mid-flight
    naive_loader = DataLoader(
        NaiveDataset(split.entries, size, cfg.scale_min),
        batch_size=bs,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=True,
        pin_memory=device.type == "cuda",
        multiprocessing_context="spawn",
    )
    naive_img_s = alternate({"naive": source(forever(naive_loader), kind=NaiveSource)}, steps, warmup)["img_s"]["naive"]
    del naive_loader  # stops its worker processes before the next row's start
    row.update(
        end_to_end_img_s=img_s["end_to_end"],
        end_to_end_over_model_only=median_ratio(rounds, "end_to_end", "model_only"),
        naive_pipeline_img_s=naive_img_s,
        end_to_end_over_naive=img_s["end_to_end"] / naive_img_s,
        compile_s=compile_s,
        compiled_img_s=img_s["compiled"],
        compiled_over_eager=median_ratio(rounds, "compiled", "model_only"),
    )
    if cl:
        row["model_only_nchw_img_s"] = img_s["model_only_nchw"]
        row["channels_last_over_nchw"] = median_ratio(rounds, "model_only", "model_only_nchw")
    return row


class NaiveSource(Source):
    """The naive pipeline's batches are normalised already: straight into the model."""

    def step(self) -> int:
        x, y = (t.to(self.device, non_blocking=True) for t in next(self.batches))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = F.cross_entropy(self.model(x).float(), y, label_smoothing=self.cfg.label_smoothing)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return len(y)

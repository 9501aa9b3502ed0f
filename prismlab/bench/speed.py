"""Speed study: how close training comes to what the machine can do, and is it ever waiting for data?

In one run on one machine:
- the peak: dense GEMM GFLOP/s per precision through torch's own kernels, torch.mm (on x86 CPUs
  MKL for fp32, oneDNN for bf16) and a 1x1 convolution (oneDNN), on every thread training uses;
  a precision's peak is the faster of the two;
- for each model and precision, training img/s (1) model-only: one uint8 batch again and again
  through the training step (normalisation included), in the memory layout training picks
  (channels_last=auto) and in NCHW; (2) end-to-end: batches from prismlab's data path (cache
  slices, batched augmentation in a background thread); (4) torch.compile'd, model-only. The
  sources alternate in rounds on one machine state, and each ratio is the median of the rounds'
  ratios, so a shared machine's drift cancels;
- (3) the original homework's pipeline (PIL decode + torchvision v2 per sample in a DataLoader);
- achieved training GFLOP/s: forward FLOPs of the training form x 3 per image (forward, and a
  backward of about twice its cost) x img/s (1), as a share of the peak of that precision, and the
  share of a step's CPU time in convolutions, normalisation, pooling and the rest (torch.profiler).
"""

from __future__ import annotations

import copy
import itertools
import os
import statistics
import time

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from prismlab.analysis.flops import count_flops
from prismlab.analysis.report import md_table
from prismlab.bench.common import StudyArgs, frame, preset, study_provenance, write_results
from prismlab.data.cache import build_cache
from prismlab.data.channels import MEAN, STD
from prismlab.data.loader import BatchLoader
from prismlab.data.splits import load_split
from prismlab.deploy.runtimes import PROFILED_BATCHES, time_share
from prismlab.engine.config import make_config
from prismlab.engine.precision import cpu_has_native_bf16, use_channels_last
from prismlab.engine.step import make_optimizer, train_step
from prismlab.errors import PrismError
from prismlab.models import create_model

MODELS = {"resnet34": "resnet34", "ours": "shallow"}
PRECISIONS = ("fp32", "bf16")
TRAIN_OP_KINDS = {"conv": ("conv",), "norm": ("norm",), "pool": ("pool",)}  # by aten op name; the rest is "other"
TARGET_RATIO, TARGET_PEAK_SHARE = 0.95, 0.50
EMULATED_CAP_S = 60.0  # emulated bf16 is 10-25x slower: its timing stops after this long


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
    for n in ((4096, 8192) if big else (256, 512) if emulated else (1024, 2048)):
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        mm = max(mm, rate(lambda: a @ b, 2 * n ** 3))
    for c in ((1024, 2048) if big else (128, 256) if emulated else (512, 1024)):
        x = torch.randn(64, c, 32, 32, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(c, c, 1, 1, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        conv = max(conv, rate(lambda: F.conv2d(x, w), 2 * 64 * 32 * 32 * c * c))
    return {"matmul_gflop_s": mm, "conv1x1_gflop_s": conv, "peak_gflop_s": max(mm, conv)}


class Source:
    """One way of feeding a training step: a model, its optimiser and where its batches come from."""

    def __init__(self, model, batches, cfg, device, amp: bool, channels_last: bool):
        self.model, self.opt, self.batches = model, make_optimizer(model, cfg), iter(batches)
        self.cfg, self.device, self.amp, self.channels_last = cfg, device, amp, channels_last

    def step(self) -> int:
        x, y = (t.to(self.device, non_blocking=True) for t in next(self.batches)[:2])
        train_step(self.model, self.opt, x, y, ["RGB"], self.cfg, self.amp, self.channels_last)
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


def compile_seconds(source: Source, steady_step_s: float) -> float:
    """The first step of a compiled model (it compiles the forward and the backward) less a steady step."""
    sync(source.device)
    t0 = time.perf_counter()
    source.step()
    sync(source.device)
    return max(0.0, time.perf_counter() - t0 - steady_step_s)


def measure(name: str, precision: str, cache, split, cfg, device, steps: int, warmup: int, native: bool,
            seed: int, workers: int) -> dict:
    """One model in one precision: every measurement of the table's row."""
    size, bs = cfg.image_size, cfg.batch_size
    amp = precision == "bf16"
    emulated = amp and not native
    cl = use_channels_last(cfg.channels_last, device)

    def make(channels_last: bool) -> torch.nn.Module:
        torch.manual_seed(seed)
        m = create_model(name, num_classes=split.num_classes).to(device)
        return m.to(memory_format=torch.channels_last) if channels_last else m

    batch = (torch.randint(0, 256, (bs, 3, size, size), dtype=torch.uint8, device=device),
             torch.randint(0, split.num_classes, (bs,), device=device))
    model = make(cl)
    flops = count_flops(copy.deepcopy(model).float(), size)  # training form: every branch it computes
    sources = {"model_only": Source(model, itertools.repeat(batch), cfg, device, amp, cl)}
    if not emulated:
        loader = BatchLoader(cache, bs, train=True, seed=seed, scale_min=cfg.scale_min, device=device)
        sources["end_to_end"] = Source(make(cl), forever(loader), cfg, device, amp, cl)
        if cl:
            sources["model_only_nchw"] = Source(make(False), itertools.repeat(batch), cfg, device, amp, False)
        compiled = Source(make(cl), itertools.repeat(batch), cfg, device, amp, cl)
        compiled.model = torch.compile(compiled.model)
        sources["compiled"] = compiled
        sources["model_only"].step()
        compile_s = compile_seconds(compiled, sources["model_only"].timed(1)[1])
    res = alternate(sources, steps, warmup, EMULATED_CAP_S if emulated else None)
    img_s, rounds = res["img_s"], res["rounds"]
    m = sources["model_only"]
    # one profiled step where bf16 is emulated: each costs 10-25 ordinary ones, and the shares are what matters
    share = time_share(lambda _: m.step(), None, kinds=TRAIN_OP_KINDS, batches=1 if emulated else PROFILED_BATCHES)
    row = {"model": name, "precision": precision, "emulated": emulated, "channels_last": cl,
           "train_flops_per_image": 3 * flops, "model_only_img_s": img_s["model_only"],
           "rounds": len(rounds["model_only"]), "time_share": share}
    row["achieved_gflop_s"] = 3 * flops * img_s["model_only"] / 1e9
    if emulated:
        return row
    # spawned, not forked: this process runs OpenMP and compiled-kernel threads a fork would copy mid-flight
    naive_loader = DataLoader(NaiveDataset(split.entries, size, cfg.scale_min), batch_size=bs, shuffle=True,
                              num_workers=workers, drop_last=True, persistent_workers=True,
                              pin_memory=device.type == "cuda", multiprocessing_context="spawn")
    naive = Source(make(cl), forever(naive_loader), cfg, device, amp, cl)
    naive.step = lambda: _naive_step(naive)
    naive_img_s = alternate({"naive": naive}, steps, warmup)["img_s"]["naive"]
    del naive_loader  # stops its worker processes before the next row's start
    row.update({
        "end_to_end_img_s": img_s["end_to_end"],
        "end_to_end_over_model_only": median_ratio(rounds, "end_to_end", "model_only"),
        "naive_pipeline_img_s": naive_img_s, "end_to_end_over_naive": img_s["end_to_end"] / naive_img_s,
        "compile_s": compile_s, "compiled_img_s": img_s["compiled"],
        "compiled_over_eager": median_ratio(rounds, "compiled", "model_only"),
    })
    if cl:
        row["model_only_nchw_img_s"] = img_s["model_only_nchw"]
        row["channels_last_over_nchw"] = median_ratio(rounds, "model_only", "model_only_nchw")
    return row


def _naive_step(s: Source) -> int:
    """The naive pipeline's batches are normalised already: straight into the model."""
    x, y = (t.to(s.device, non_blocking=True) for t in next(s.batches))
    if s.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=s.amp):
        loss = F.cross_entropy(s.model(x).float(), y, label_smoothing=s.cfg.label_smoothing)
    s.opt.zero_grad(set_to_none=True)
    loss.backward()
    s.opt.step()
    return len(y)


def targets(rows: dict, peak: dict) -> dict:
    """Each target: its value, whether it is met, and the rows it covers."""
    native = [r for r in rows.values() if not r["emulated"]]
    out = {f"end_to_end_over_model_only>={TARGET_RATIO:.2f}": {
        "met": bool(native) and all(r["end_to_end_over_model_only"] >= TARGET_RATIO for r in native),
        "worst": min((r["end_to_end_over_model_only"] for r in native), default=None)}}
    best = {}
    for r in native:
        share = r["achieved_gflop_s"] / peak[r["precision"]]["peak_gflop_s"]
        key = r["model"]
        if key not in best or r["model_only_img_s"] > best[key][1]:
            best[key] = (share, r["model_only_img_s"], r["precision"])
    out[f"achieved>={TARGET_PEAK_SHARE:.0%}_of_peak_in_the_faster_precision"] = {
        "met": bool(best) and all(s >= TARGET_PEAK_SHARE for s, _, _ in best.values()),
        "shares": {k: {"share": s, "precision": p} for k, (s, _, p) in best.items()}}
    return out


def run(args: StudyArgs) -> None:
    data = args.data_dir()
    base = preset(f"task2-{args.tier}")
    size, bs = base["image_size"], base["batch_size"]
    cfg = make_config(None, {**base, "data": str(data)})
    split = load_split(data / cfg.train_split)
    if len(split.entries) < bs:  # else no full batch exists and the loaders below would spin forever
        raise PrismError(f"{data / cfg.train_split}: {len(split.entries)} images, fewer than one batch of {bs}")
    cache = build_cache(split, size, progress=True)
    steps, warmup = (24, 2) if args.tier == "cpu" else (99, 10)
    if args.steps:  # a quick look (or a longer, steadier one): a quarter as many warm-up steps
        steps, warmup = args.steps, args.steps // 4
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    native = device.type == "cuda" or cpu_has_native_bf16()
    workers = default_workers()
    peak_s = 2.0 if not args.steps else 0.2
    peak = {p: gemm_peak(device, torch.float32 if p == "fp32" else torch.bfloat16, peak_s, p == "bf16" and not native)
            for p in PRECISIONS}
    print(f"[speed] peak: {peak}", flush=True)
    rows = {}
    for key, name in MODELS.items():
        for precision in PRECISIONS:
            rows[f"{key}/{precision}"] = {"key": key, **measure(name, precision, cache, split, cfg, device, steps,
                                                                 warmup, native, args.seed, workers)}
            print(f"[speed] {key} {precision}: {rows[f'{key}/{precision}']}", flush=True)
    for r in rows.values():
        r["share_of_peak"] = r["achieved_gflop_s"] / peak[r["precision"]]["peak_gflop_s"]
    doc = study_provenance(args, data=str(data), image_size=size, batch_size=bs, steps=steps, warmup_steps=warmup,
                           steps_overridden=bool(args.steps), device=str(device), native_bf16=native,
                           layout=cfg.channels_last, naive_loader_workers=workers, peak=peak, rows=rows,
                           targets=targets(rows, peak))
    md = markdown(doc)
    write_results(args.results_dir, f"speed-{args.tier}", doc, md)
    print(md)


def _f(x, fmt="{:.0f}") -> str:
    return "—" if x is None else fmt.format(x)


def markdown(doc: dict) -> str:
    peak = doc["peak"]
    emulated = " (emulated: sizes a quarter as wide)"
    peak_rows = [[p + (emulated if p == "bf16" and not doc["native_bf16"] else ""), _f(v["matmul_gflop_s"]),
                  _f(v["conv1x1_gflop_s"]), _f(v["peak_gflop_s"])] for p, v in peak.items()]
    rows = []
    for r in doc["rows"].values():
        s = r["time_share"]
        rows.append([r["key"], r["precision"] + (" (emulated)" if r["emulated"] else ""),
                     "channels-last" if r["channels_last"] else "NCHW",
                     _f(r["model_only_img_s"], "{:.1f}"), _f(r.get("end_to_end_img_s"), "{:.1f}"),
                     _f(r.get("end_to_end_over_model_only"), "{:.3f}"), _f(r.get("naive_pipeline_img_s"), "{:.1f}"),
                     _f(r.get("channels_last_over_nchw"), "{:.2f}"),
                     _f(r.get("compiled_over_eager"), "{:.2f}"), _f(r.get("compile_s"), "{:.0f}"),
                     _f(r["achieved_gflop_s"]), f"{100 * r['share_of_peak']:.0f}%",
                     " / ".join(f"{100 * s[k]:.0f}" for k in (*TRAIN_OP_KINDS, "other"))])
    lines = [md_table(["precision", "torch.mm GFLOP/s", "1x1 conv GFLOP/s", "peak GFLOP/s"], peak_rows), "",
             md_table(["key", "precision", "layout", "(1) model-only img/s", "(2) end-to-end img/s", "(2)/(1)",
                       "(3) naive pipeline img/s", "channels-last / NCHW", "(4) compiled / eager", "compile s",
                       "achieved GFLOP/s", "of peak", "time in conv / norm / pool / other %"], rows), ""]
    lines += [f"Achieved GFLOP/s: forward FLOPs of the training form (every branch it computes) x 3 per image "
              f"x (1). Ratios are medians over rounds that alternate the sources (each round one untimed "
              f"step, then 3 timed ones, per source); img/s are the median rounds. Layout: what channels_last={doc['layout']} picks on "
              f"{doc['device']}.", ""]
    emulated = [r["key"] for r in doc["rows"].values() if r["emulated"]]
    if emulated:
        lines += [f"bf16 is emulated on this CPU (no native bf16): model-only only, its timing stopped after "
                  f"{EMULATED_CAP_S:.0f} s ({', '.join(emulated)}).", ""]
    t = doc["targets"]
    parts = []
    for k, v in t.items():
        detail = ""
        if "worst" in v and v["worst"] is not None:
            detail = f" (lowest {v['worst']:.3f})"
        if "shares" in v:
            detail = " (" + ", ".join(f"{m} {100 * s['share']:.0f}% in {s['precision']}" for m, s in v["shares"].items()) + ")"
        parts.append(f"{k}: {'met' if v['met'] else 'NOT met'}{detail}")
    lines += ["Targets: " + "; ".join(parts), ""]
    return frame(doc, f"Speed: training against the machine's peak ({doc['tier']} tier)", lines,
                 recipe=f", {doc['image_size']}x{doc['image_size']}, batch {doc['batch_size']}, {doc['steps']} "
                 f"timed steps per source after {doc['warmup_steps']} warm-up"
                 f"{' (--steps)' if doc['steps_overridden'] else ''}, on {doc['device']}",
                 cores=f", {doc['machine']['torch_threads']} torch threads", gpu=True,
                 machine_note=f"; naive loader workers: {doc['naive_loader_workers']}")

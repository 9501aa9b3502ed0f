"""Speed study: how close training comes to what the machine can do, and is it ever waiting for data?

In one run on one machine (timing.py): the GEMM peak per precision (torch.mm and a 1x1 convolution,
the faster of the two); for each model and precision, training img/s (1) model-only, one uint8 batch
again and again, in the layout training picks and in NCHW, (2) end-to-end from prismlab's data path,
(3) through the homework's pipeline (PIL decode + torchvision v2 per sample), (4) torch.compile'd;
achieved training GFLOP/s (forward FLOPs of the training form x 3 per image x (1)) as a share of the
peak, and the share of a step's CPU time per kind of op (torch.profiler).
"""

from __future__ import annotations

import os

import torch

from prismlab.bench.common import StudyArgs, preset
from prismlab.bench.results import Col, header, provenance, shares, table, targets_line, write_results
from prismlab.bench.timing import EMULATED_CAP_S, TRAIN_OP_KINDS, gemm_peak, measure
from prismlab.data.cache import build_cache
from prismlab.data.splits import load_split
from prismlab.engine.config import make_config
from prismlab.engine.precision import cpu_has_native_bf16
from prismlab.errors import PrismError

MODELS = {"resnet34": "resnet34", "ours": "shallow"}
PRECISIONS = ("fp32", "bf16")
TARGET_RATIO, TARGET_PEAK_SHARE = 0.95, 0.50


def targets(rows: dict, peak: dict) -> dict:
    """Each target: its value, whether it is met, and the rows it covers."""
    native = [r for r in rows.values() if not r["emulated"]]
    out = {
        f"end_to_end_over_model_only>={TARGET_RATIO:.2f}": {
            "met": bool(native) and all(r["end_to_end_over_model_only"] >= TARGET_RATIO for r in native),
            "worst": min((r["end_to_end_over_model_only"] for r in native), default=None),
        }
    }
    faster = {}  # key -> its row in the faster precision
    for r in native:
        if r["key"] not in faster or r["model_only_img_s"] > faster[r["key"]]["model_only_img_s"]:
            faster[r["key"]] = r
    of_peak = {k: _of_peak(r, peak[r["precision"]]["peak_gflop_s"]) for k, r in faster.items()}
    out[f"achieved>={TARGET_PEAK_SHARE:.0%}_of_peak_in_the_faster_precision"] = {
        "met": bool(of_peak) and all(v["share"] >= TARGET_PEAK_SHARE for v in of_peak.values()),
        "shares": of_peak,
    }
    return out


def _of_peak(r: dict, peak_gflop_s: float) -> dict:
    """The step's share of the peak, and what bounds it: the convolutions' own share (nearly all the
    FLOPs are theirs) and the step time spent outside them (memory-bound ops: few FLOPs, much traffic)."""
    share, conv = r["achieved_gflop_s"] / peak_gflop_s, r["time_share"]["conv"]
    return {"share": share, "precision": r["precision"], "conv_share": share / conv, "outside_conv": 1 - conv}


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
    workers = max(1, min(8, (os.cpu_count() or 2) // 2))  # the naive loader's: leave the model most cores
    peak_s = 2.0 if not args.steps else 0.2
    peak = {
        p: gemm_peak(device, torch.float32 if p == "fp32" else torch.bfloat16, peak_s, p == "bf16" and not native)
        for p in PRECISIONS
    }
    print(f"[speed] peak: {peak}", flush=True)
    rows = {}
    for key, name in MODELS.items():
        for precision in PRECISIONS:
            row = measure(name, precision, cache, split, cfg, device, steps, warmup, native, args.seed, workers)
            rows[f"{key}/{precision}"] = row = {"key": key, **row}
            print(f"[speed] {key} {precision}: {row}", flush=True)
    for r in rows.values():
        r["share_of_peak"] = r["achieved_gflop_s"] / peak[r["precision"]]["peak_gflop_s"]
    setup = {"tier": args.tier, "data": str(data), "image_size": size, "batch_size": bs, "steps": steps}
    setup |= {"warmup_steps": warmup, "steps_overridden": bool(args.steps), "device": str(device)}
    setup |= {"native_bf16": native, "layout": cfg.channels_last, "naive_loader_workers": workers, "peak": peak}
    doc = provenance(args.argv, args.seed, **setup, rows=rows, targets=targets(rows, peak))
    md = markdown(doc)
    write_results(args.results_dir, f"speed-{args.tier}", doc, md)
    print(md)


PEAK = [
    Col("precision", lambda p, v: p),
    Col("torch.mm GFLOP/s", "matmul_gflop_s", "{:.0f}"),
    Col("1x1 conv GFLOP/s", "conv1x1_gflop_s", "{:.0f}"),
    Col("peak GFLOP/s", "peak_gflop_s", "{:.0f}"),
]
ROWS = [
    Col("key", "key"),
    Col("precision", lambda k, r: r["precision"] + (" (emulated)" if r["emulated"] else "")),
    Col("layout", lambda k, r: "channels-last" if r["channels_last"] else "NCHW"),
    Col("(1) model-only img/s", "model_only_img_s", "{:.1f}"),
    Col("(2) end-to-end img/s", "end_to_end_img_s", "{:.1f}"),
    Col("(2)/(1)", "end_to_end_over_model_only", "{:.3f}"),
    Col("(3) naive pipeline img/s", "naive_pipeline_img_s", "{:.1f}"),
    Col("channels-last / NCHW", "channels_last_over_nchw", "{:.2f}"),
    Col("(4) compiled / eager", "compiled_over_eager", "{:.2f}"),
    Col("compile s", "compile_s", "{:.0f}"),
    Col("achieved GFLOP/s", "achieved_gflop_s", "{:.0f}"),
    Col("of peak", lambda k, r: f"{100 * r['share_of_peak']:.0f}%"),
    Col("time in conv / norm / pool / other %", lambda k, r: shares(r["time_share"], (*TRAIN_OP_KINDS, "other"))),
]


def _detail(k: str, v: dict) -> str:
    if "shares" in v:
        each = ", ".join(
            f"{row} {100 * s['share']:.0f}% in {s['precision']}: its convolutions {100 * s['conv_share']:.0f}%, "
            f"{100 * s['outside_conv']:.0f}% of the step outside them"
            for row, s in v["shares"].items()
        )
        return f" ({each})"
    return f" (lowest {v['worst']:.3f})" if v.get("worst") is not None else ""


def markdown(doc: dict) -> str:
    emulated = " (emulated: sizes a quarter as wide)" * (not doc["native_bf16"])
    peak = [(p + emulated * (p == "bf16"), v) for p, v in doc["peak"].items()]
    lines = [
        table(PEAK, peak),
        "",
        table(ROWS, doc["rows"].items()),
        "",
        f"Achieved GFLOP/s: forward FLOPs of the training form (every branch it computes) x 3 per image "
        f"x (1). Ratios are medians over rounds that alternate the sources (each round one untimed "
        f"step, then 3 timed ones, per source); img/s are the median rounds. Layout: what "
        f"channels_last={doc['layout']} picks on {doc['device']}.",
        "",
    ]
    if emulated := [r["key"] for r in doc["rows"].values() if r["emulated"]]:
        lines += [
            f"bf16 is emulated on this CPU (no native bf16): model-only only, its timing stopped after "
            f"{EMULATED_CAP_S:.0f} s ({', '.join(emulated)}).",
            "",
        ]
    lines += targets_line(doc["targets"], sep="; ", detail=_detail)
    setup = (
        f", {doc['image_size']}x{doc['image_size']}, batch {doc['batch_size']}, {doc['steps']} timed steps per "
        f"source after {doc['warmup_steps']} warm-up{' (--steps)' if doc['steps_overridden'] else ''}, "
        f"on {doc['device']}"
    )
    title = f"Speed: training against the machine's peak ({doc['tier']} tier)"
    return "\n".join(header(doc, title, setup, f"; naive loader workers: {doc['naive_loader_workers']}") + lines)

"""The inference runtimes `prismlab bench infer` compares, and the timing of one (model, runtime).

Each measurement runs in a process of its own (`python -m prismlab.deploy.runtimes SPEC_JSON`, which
prints one JSON line): a runtime that kills its process (torch's channels_last has crashed CPU
training on torch 2.14 with "double free or corruption") costs its row, not the study, and one
runtime's idle thread pool (onnxruntime's spinning workers, OpenMP's) cannot slow the next one down.

Every runtime runs the inference form (fused, BatchNorm folded) of the same random-init weights:
the cost of a forward does not depend on what the weights learned.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from prismlab.channels import SUBSETS
from prismlab.deploy.onnx_export import FixedChannels, example, export_model
from prismlab.models import create_model
from prismlab.models.fuse import inference_form

RUNTIMES = {
    "pytorch_fp32": "PyTorch eager, fp32, NCHW",
    "pytorch_channels_last": "PyTorch eager, fp32, channels_last",
    "pytorch_channels_last_bf16": "PyTorch eager, channels_last, bf16 autocast (CPUs with native bf16 only)",
    "onnxruntime": "onnxruntime CPU on the `prismlab export` file, all graph optimisations (its default)",
}
WARMUP_BATCHES, WARMUP_CALLS, PROFILED_BATCHES = 3, 20, 3
OP_KINDS = {"conv": ("conv",), "pool": ("pool",)}  # by aten op name; the rest is "other"


def prepare(
    runtime: str, model: torch.nn.Module, channels: tuple[int, ...], size: int, threads: int, workdir: Path
) -> tuple[Callable, Callable]:
    """-> (run, convert): run(convert(x)) is one forward of a float [N, m, H, W] batch; convert is
    done once per input, outside the timing (a deployed caller hands over its input in that form)."""
    if runtime == "onnxruntime":
        import onnxruntime as ort

        path = workdir / "model.onnx"
        export_model(model, channels, size, path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return (lambda x: session.run(None, {"image": x})[0]), (lambda x: x.numpy())
    net = FixedChannels(inference_form(model, channels), channels).eval()
    if runtime == "pytorch_fp32":
        return net, (lambda x: x)
    net = net.to(memory_format=torch.channels_last)
    convert = lambda x: x.contiguous(memory_format=torch.channels_last)  # noqa: E731
    if runtime == "pytorch_channels_last":
        return net, convert
    if runtime == "pytorch_channels_last_bf16":

        def run(x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return net(x)

        return run, convert
    raise ValueError(f"unknown runtime {runtime!r}")


def throughput(run: Callable, x, batch: int, steps: int | None = None, seconds: float = 3.0, warmup: int = 2) -> float:
    """Images per second of `run(x)` after `warmup` calls: over `steps` calls when given, else over
    at least `seconds` and 3 calls. The one timing loop of every inference figure."""
    for _ in range(warmup):
        run(x)
    n, t0 = 0, time.perf_counter()
    while (n < steps) if steps else (time.perf_counter() - t0 < seconds or n < 3):
        run(x)
        n += 1
    return n * batch / (time.perf_counter() - t0)


def time_share(run: Callable, x, kinds: dict = OP_KINDS, batches: int = PROFILED_BATCHES) -> dict[str, float]:
    """The share of a batch's CPU time spent in each kind of op (by default convolutions, pooling
    and everything else), from torch.profiler's self time per aten op over `batches` calls: why one
    net turns FLOPs into img/s better than another."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(batches):
            run(x)
    totals = dict.fromkeys([*kinds, "other"], 0.0)
    for event in prof.key_averages():
        name = event.key.lower()
        kind = next((k for k, words in kinds.items() if any(w in name for w in words)), "other")
        totals[kind] += event.self_cpu_time_total
    total = sum(totals.values()) or 1.0
    return {kind: t / total for kind, t in totals.items()}


@torch.inference_mode()
def measure(spec: dict) -> dict:
    """spec: model, model_kw, channels (a subset name), runtime, size, batch, steps (timed batches),
    calls (timed batch-1 calls), threads, seed -> img/s at the batch, batch-1 latency median and p90,
    and the largest difference from PyTorch fp32's logits on the same batch. The caller's thread
    count is restored: later torch work in the same process must not run on the measured count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(spec["threads"])
    try:
        return _measure(spec)
    finally:
        torch.set_num_threads(threads)


def _measure(spec: dict) -> dict:
    torch.manual_seed(spec["seed"])
    model = create_model(spec["model"], num_classes=spec.get("num_classes", 50), **spec.get("model_kw", {}))
    ids = SUBSETS[spec["channels"]]
    size, batch = spec["size"], spec["batch"]
    with tempfile.TemporaryDirectory() as tmp:
        run, convert = prepare(spec["runtime"], model, ids, size, spec["threads"], Path(tmp))
        xb, x1 = example(batch, len(ids), size, seed=1), example(1, len(ids), size, seed=2)
        reference = FixedChannels(inference_form(model, ids), ids).eval()(xb)
        xb_in, x1_in = convert(xb), convert(x1)
        diff = float((torch.as_tensor(run(xb_in)).float() - reference).abs().max())
        img_s = throughput(run, xb_in, batch, steps=spec["steps"], warmup=WARMUP_BATCHES - 1)
        for _ in range(WARMUP_CALLS):
            run(x1_in)
        times = []
        for _ in range(spec["calls"]):
            t0 = time.perf_counter()
            run(x1_in)
            times.append(time.perf_counter() - t0)
        share = time_share(run, xb_in) if spec["runtime"].startswith("pytorch") else None
    ms = 1000 * np.asarray(times)
    return {
        "time_share_b64": share,
        "img_s_b64": img_s,
        "latency_ms_b1_median": float(np.median(ms)),
        "latency_ms_b1_p90": float(np.percentile(ms, 90)),
        "max_abs_diff_vs_pytorch_fp32": diff,
    }


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))), flush=True)

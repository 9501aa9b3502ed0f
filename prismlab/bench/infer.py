"""Inference study: ResNet34, ours and the any-channel model in every CPU runtime, each (model,
runtime) in its own process (deploy/runtimes.py): img/s at batch 64, batch-1 latency (median, p90)
and GFLOP/s. Random-init weights in inference form: they cost what trained ones do."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

import prismlab
from prismlab.analysis.flops import count_flops, count_params
from prismlab.bench.common import StudyArgs, pick, preset
from prismlab.bench.results import (
    Col,
    Target,
    header,
    judge,
    pending_lines,
    provenance,
    shares,
    table,
    targets_line,
    write_results,
)
from prismlab.deploy.onnx_export import DEPLOY_HINT
from prismlab.deploy.runtimes import RUNTIMES
from prismlab.engine.precision import NATIVE_BF16_FLAGS, cpu_has_native_bf16
from prismlab.models import create_model
from prismlab.models.fuse import inference_form

# key in the results -> (registered model, model_kw); each is timed on RGB input
MODELS = {
    "resnet34": ("resnet34", {}),
    "ours": ("shallow", {}),
    "ours_any_channel": ("shallow", {"adapter": "channelset"}),
}
BATCH, CALLS, STEPS = 64, 200, 30
WORKER = [sys.executable, "-m", "prismlab.deploy.runtimes"]
TIMEOUT_S = 1800


def skip_reason(runtime: str) -> str | None:
    """Why a runtime cannot run on this machine, or None."""
    if runtime == "pytorch_channels_last_bf16" and not cpu_has_native_bf16():
        return f"not run: no native bf16 ({' / '.join(NATIVE_BF16_FLAGS)} absent from /proc/cpuinfo)"
    if runtime == "onnxruntime":
        missing = [p for p in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(p) is None]
        if missing:
            return f"not run: {', '.join(missing)} not installed ({DEPLOY_HINT})"
    return None


def run_worker(spec: dict) -> tuple[dict | None, str | None]:
    """One measurement in its own process -> (result, None), or (None, why it gave none)."""
    # this checkout's prismlab, whatever the working directory
    paths = [str(Path(prismlab.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    try:
        proc = subprocess.run([*WORKER, json.dumps(spec)], capture_output=True, text=True, env=env, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"not run: no result within {TIMEOUT_S} s"
    if proc.returncode == 0:
        return json.loads(proc.stdout.strip().splitlines()[-1]), None
    rc = proc.returncode
    how = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
    last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
    return None, f"not run: its process crashed ({how}: {last[:200]})"


def measure_model(
    key: str, size: int, steps: int, threads: int, seed: int, name: str | None = None, kw: dict | None = None
) -> dict:
    """Every runtime on one model (MODELS[key], or `name` with `kw`) at size x size RGB."""
    name, kw = (name, kw or {}) if name else MODELS[key]
    torch.manual_seed(seed)
    fused = inference_form(create_model(name, num_classes=50, **kw))
    what = {"model": name, "model_kw": kw, "channels": "RGB"}
    row = {**what, "flops": count_flops(fused, size), "params": count_params(fused), "runtimes": {}, "not_run": {}}
    timing = {"size": size, "batch": BATCH, "steps": steps, "calls": CALLS, "threads": threads, "seed": seed}
    for runtime in RUNTIMES:
        result, why = None, skip_reason(runtime)
        if not why:
            result, why = run_worker({**what, "runtime": runtime, **timing})
        if result is None:
            row["not_run"][runtime] = why
            print(f"[infer] {key} {runtime}: {why}", flush=True)
            continue
        result["gflop_s_b64"] = row["flops"] * result["img_s_b64"] / 1e9
        row["runtimes"][runtime] = result
        speed = f"{result['img_s_b64']:.0f} img/s, batch 1 {result['latency_ms_b1_median']:.2f} ms"
        print(f"[infer] {key} {runtime}: {speed}", flush=True)
    if row["runtimes"]:
        row["best_b64"] = max(row["runtimes"], key=lambda r: row["runtimes"][r]["img_s_b64"])
        row["best_b1"] = min(row["runtimes"], key=lambda r: row["runtimes"][r]["latency_ms_b1_median"])
    return row


def best(m: dict, key: str) -> float:
    """A figure of a model's best runtime: img/s from the fastest at batch 64, any other from the
    quickest at batch 1 (the committed infer-cpu targets were judged so)."""
    return m["runtimes"][m["best_b64" if key == "img_s_b64" else "best_b1"]][key]


TARGETS = [
    Target("ours_speed>=3.0x_resnet34 (best runtime each)", lambda r: r["speed_best_over_best"] >= 3.0),
    Target("ours_b1_latency<=0.5x_resnet34 (best runtime each)", lambda r: r["latency_b1_best_over_best"] <= 0.5),
    Target(
        "ours_gflop_s>=resnet34_gflop_s (best runtime each)",
        lambda r: best(r["ours"], "gflop_s_b64") >= best(r["resnet34"], "gflop_s_b64"),
    ),
]


def comparisons(models: dict) -> tuple[dict, dict]:
    """ours against ResNet34 -> (ratios, targets); empty until both have a measured runtime."""
    ours, ref = models.get("ours"), models.get("resnet34")
    if not (ours and ref and ours["runtimes"] and ref["runtimes"]):
        return {}, {}

    def over(key: str, runtime: str | None = None) -> float:
        """Ours' figure over ResNet34's: in one runtime, or each in its best."""
        if runtime is None:
            return best(ours, key) / best(ref, key)
        return ours["runtimes"][runtime][key] / ref["runtimes"][runtime][key]

    both = [r for r in RUNTIMES if r in ours["runtimes"] and r in ref["runtimes"]]
    ratios = {
        "speed_best_over_best": over("img_s_b64"),
        "latency_b1_best_over_best": over("latency_ms_b1_median"),
        "flops_ratio": ref["flops"] / ours["flops"],
        "per_runtime": {
            r: {"speed": over("img_s_b64", r), "latency_b1": over("latency_ms_b1_median", r)} for r in both
        },
    }
    return ratios, judge(TARGETS, {**ratios, "ours": ours, "resnet34": ref})


COLS = [
    Col("key", lambda k, x: k[0]),
    Col("model", lambda k, x: k[1]),
    Col("runtime", lambda k, x: k[2]),
    Col("img/s (batch 64)", "img_s_b64", "{:.0f}"),
    Col("GFLOP/s", "gflop_s_b64", "{:.0f}"),
    Col("batch-1 ms (median)", "latency_ms_b1_median", "{:.2f}"),
    Col("batch-1 ms (p90)", "latency_ms_b1_p90", "{:.2f}"),
    Col("max abs diff vs fp32", "max_abs_diff_vs_pytorch_fp32", "{:.1e}"),
    Col("time in conv / pool / other %", lambda k, x: shares(x.get("time_share_b64"), ("conv", "pool", "other"))),
]


def markdown(doc: dict) -> str:
    rows = [
        ((key, r["model"] + (f" ({r['model_kw']['adapter']})" if r["model_kw"] else ""), rt), x)
        for key, r in doc["models"].items()
        for rt, x in r["runtimes"].items()
    ]
    lines = [
        table(COLS, rows),
        "",
        "The time shares come from torch.profiler (self CPU time per aten op, batch 64); onnxruntime's "
        "fused graph has no comparable per-op split.",
        "",
    ]
    lines += [f"- {key}: {rt} {why}" for key, r in doc["models"].items() for rt, why in r["not_run"].items()] + [""]
    if q := doc.get("ratios"):
        lines += [
            f"Ours over ResNet34 (FLOPs ratio {q['flops_ratio']:.2f}x), best runtime each: speed "
            f"{q['speed_best_over_best']:.2f}x, batch-1 latency {q['latency_b1_best_over_best']:.2f}x; "
            "per runtime: "
            + ", ".join(f"{rt} {v['speed']:.2f}x / {v['latency_b1']:.2f}x" for rt, v in q["per_runtime"].items()),
            "",
            *targets_line(doc["targets"]),
        ]
    setup = (
        f", {doc['image_size']}x{doc['image_size']} RGB, batch {doc['batch']} over {doc['timed_batches']} timed "
        f"batches, batch 1 over {doc['timed_calls']} timed calls, after warm-up; random-init weights in "
        "inference form"
    )
    ort = f", onnxruntime {doc['onnxruntime']}" if doc.get("onnxruntime") else ""
    note = f"; {doc['threads']} threads for every runtime{ort}"
    title = "Inference: ResNet34, ours and the any-channel model per runtime (cpu)"
    return "\n".join(header(doc, title, setup, note) + lines + pending_lines(doc))


def run(args: StudyArgs) -> None:
    keys = pick(args.methods, MODELS, list(MODELS), "infer")
    size, steps, threads = preset("task2-cpu")["image_size"], args.steps or STEPS, torch.get_num_threads()
    ort = importlib.util.find_spec("onnxruntime") and __import__("onnxruntime").__version__
    setup = {"tier": "cpu", "image_size": size, "batch": BATCH, "timed_batches": steps}
    setup |= {"steps_overridden": bool(args.steps), "timed_calls": CALLS, "threads": threads}
    setup |= {"onnxruntime": ort or None, "runtimes": RUNTIMES}
    models, path = {}, None
    for key in keys:
        models[key] = measure_model(key, size, steps, threads, args.seed)
        ratios, targets = comparisons(models)
        pending = [k for k in keys if k not in models]
        doc = provenance(args.argv, args.seed, **setup, models=models, ratios=ratios, targets=targets, pending=pending)
        path = write_results(args.results_dir, "infer-cpu", doc, markdown(doc))
    print(Path(path).with_suffix(".md").read_text())

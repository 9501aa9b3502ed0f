"""Task 2 as accuracy against cost: the rows of the task-2 files named per cell (CELLS: resolution x
budget; a missing one is listed as still to run), every model timed in this run with `prismlab bench
infer`'s code, so speeds compare across cells, and a chart of accuracy against batch-1 latency."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from prismlab.analysis.plots import plot_frontier
from prismlab.analysis.report import beyond_noise, ci
from prismlab.analysis.stats import from_bits, paired_ratio
from prismlab.bench.common import StudyArgs
from prismlab.bench.infer import STEPS, measure_model
from prismlab.bench.results import Col, header, pending_lines, provenance, table, targets_line, write_results
from prismlab.bench.task2 import MODELS, OURS
from prismlab.errors import ConfigError

# tier -> (image size, epochs, the task-2 studies that may have trained that cell, the first found
# read): bf16 where the CPU trains it natively, else fp32 (precision.py decides; the results say which)
CELLS = {
    "cpu": [
        (32, 4, ("task2-cpu-32px-bf16", "task2-cpu-32px")),
        (32, 12, ("task2-cpu-32px-12ep-bf16", "task2-cpu-32px-12ep")),
        (64, 4, ("task2-cpu-bf16", "task2-cpu")),
        (64, 12, ("task2-cpu-12ep-bf16", "task2-cpu-12ep")),
    ],
    "gpu": [(84, 4, ("task2-gpu-bf16", "task2-gpu")), (84, 12, ("task2-gpu-12ep-bf16", "task2-gpu-12ep"))],
}
FAMILIES = {
    "ours (4 body layers)": list(OURS),
    "ResNet, low-res stem": ["resnet18_lowres", "resnet34_lowres"],
    "ResNet34, standard stem": ["resnet34"],
}
BASELINES = [k for name, keys in FAMILIES.items() if not name.startswith("ours") for k in keys]
# target -> the task-2 target it needs in every cell that judged it (None: no baseline dominates ours)
TARGETS = {
    "ours>=90%_resnet34_lowres": "ours_accuracy>=90%_resnet34_lowres",
    "ours>=resnet34_lowres (stretch)": "ours_accuracy>=resnet34_lowres (stretch)",
    "ours_on_the_frontier": None,
    "ours>=resnet34": "ours_accuracy>=resnet34",
}


def dominated(rows: dict) -> list[str]:
    """'<baseline> over <ours member>' for each baseline row both faster at batch 1 and more accurate
    beyond noise (paired bootstrap over the test images) than a member of ours' family."""
    out = []
    for b in BASELINES:
        for o in OURS:
            if b not in rows or o not in rows:
                continue
            rb, ro = rows[b], rows[o]
            if rb["latency_ms_b1"] < ro["latency_ms_b1"]:
                ratio = paired_ratio(from_bits(rb["test_correct"]), from_bits(ro["test_correct"]))
                if beyond_noise(ratio) == "above":
                    out.append(f"{b} over {o}")
    return out


def run(args: StudyArgs) -> None:
    if args.tier not in CELLS:
        raise ConfigError(f"no frontier cells for tier {args.tier!r}")
    results = Path(args.results_dir)
    chosen = [
        (size, ep, next((n for n in names if (results / f"{n}.json").exists()), None), names)
        for size, ep, names in CELLS[args.tier]
    ]
    found = [
        (size, ep, name, json.loads((results / f"{name}.json").read_text())) for size, ep, name, _ in chosen if name
    ]
    pending = [" or ".join(f"{n}.json" for n in names) for _, _, name, names in chosen if not name]
    if not found:
        raise ConfigError(f"{results}: none of the frontier's task2 results files exists yet ({'; '.join(pending)})")
    steps, threads = args.steps or STEPS, torch.get_num_threads()
    timed: dict[tuple[str, int], dict] = {}  # (model, size) -> best runtime figures, each timed once
    cells = {}
    for size, ep, name, doc in found:
        rows = {}
        for key, r in doc["models"].items():
            if key not in MODELS:
                continue
            if (r["model"], size) not in timed:
                m = measure_model(key, size, steps, threads, args.seed, name=r["model"])
                timed[(r["model"], size)] = {
                    "img_s_b64": m["runtimes"][m["best_b64"]]["img_s_b64"],
                    "runtime_b64": m["best_b64"],
                    "latency_ms_b1": m["runtimes"][m["best_b1"]]["latency_ms_b1_median"],
                    "runtime_b1": m["best_b1"],
                }
            rows[key] = {
                k: r.get(k)
                for k in (
                    "model",
                    "accuracy",
                    "accuracy_ci",
                    "accuracy_over_resnet34",
                    "accuracy_over_resnet34_ci",
                    "accuracy_over_resnet34_lowres",
                    "accuracy_over_resnet34_lowres_ci",
                    "body_layers",
                    "params",
                    "flops",
                    "precision",
                    "test_correct",
                )
            } | timed[(r["model"], size)]
        cells[f"{size}px-{ep}ep"] = {
            "size": size,
            "epochs": ep,
            "file": f"{name}.json",
            "commit": doc["commit"],
            "rows": rows,
            "dominated": dominated(rows),
            "targets": doc.get("targets") or {},
        }
    frontier = all(not c["dominated"] for c in cells.values())
    targets = {k: _every(cells, t) if t else frontier for k, t in TARGETS.items()}
    doc = provenance(
        args.argv,
        args.seed,
        tier=args.tier,
        cells=cells,
        pending=pending,
        timed_batches=steps,
        threads=threads,
        families=FAMILIES,
        targets=targets,
    )
    name = f"task2-{args.tier}-frontier"
    plot_frontier(
        {
            k: {
                fam: [
                    (c["rows"][m]["latency_ms_b1"], c["rows"][m]["accuracy"], *_interval(c["rows"][m]), m)
                    for m in keys
                    if m in c["rows"]
                ]
                for fam, keys in FAMILIES.items()
            }
            for k, c in cells.items()
        },
        results / f"{name}.png",
        f"Task 2 ({args.tier} tier): accuracy against cost",
    )
    path = write_results(results, name, doc, markdown(doc))
    print(path.with_suffix(".md").read_text())


def _every(cells: dict, target: str) -> bool | None:
    """Whether `target` holds in every cell that judged it (None: no cell did)."""
    judged = [c["targets"][target] for c in cells.values() if target in c["targets"]]
    return all(judged) if judged else None


def _interval(r: dict) -> tuple[float, float]:
    c = r.get("accuracy_ci") or {}
    return c.get("low", r["accuracy"]), c.get("high", r["accuracy"])


def _over(ref: str):
    return lambda k, r: ci(r.get(f"accuracy_over_{ref}"), r.get(f"accuracy_over_{ref}_ci"))


COLS = [
    Col("key", lambda k, r: k),
    Col("model", "model"),
    Col("test acc % (95% CI)", lambda k, r: ci(r["accuracy"], r["accuracy_ci"])),
    Col("acc / ResNet34 % (paired 95% CI)", _over("resnet34")),
    Col("acc / ResNet34 low-res stem % (paired 95% CI)", _over("resnet34_lowres")),
    Col("body layers", "body_layers"),
    Col("params", "params", "{:,}"),
    Col("FLOPs", lambda k, r: f"{r['flops'] / 1e6:,.1f}M"),
    Col("img/s, batch 64 (best runtime)", lambda k, r: f"{r['img_s_b64']:.0f} ({r['runtime_b64']})"),
    Col("batch-1 ms (best runtime)", lambda k, r: f"{r['latency_ms_b1']:.2f} ({r['runtime_b1']})"),
]


def markdown(doc: dict) -> str:
    lines = []
    for c in doc["cells"].values():
        lines += [
            f"## {c['size']} px, {c['epochs']} epochs (`{c['file']}`, commit `{c['commit'][:12]}`)",
            "",
            table(COLS, sorted(c["rows"].items(), key=lambda kv: kv[1]["latency_ms_b1"])),
            "",
            "Baselines both faster at batch 1 and more accurate beyond noise than a member of ours' family: "
            + (", ".join(c["dominated"]) or "none")
            + ".",
            "",
        ]
    lines += (
        pending_lines(doc)
        + targets_line(doc["targets"])
        + [f"![accuracy against batch-1 latency](task2-{doc['tier']}-frontier.png)", ""]
    )
    setup = (
        f"; rows from the task2 files named per cell; every timing from this run: random-init weights in "
        f"inference form, RGB, batch 64 over {doc['timed_batches']} batches, batch 1 over 200 calls, the best "
        "of prismlab bench infer's runtimes"
    )
    return "\n".join(
        header(
            doc, f"Task 2: accuracy against cost ({doc['tier']} tier)", setup, f"; {doc['threads']} threads for timing"
        )
        + lines
    )

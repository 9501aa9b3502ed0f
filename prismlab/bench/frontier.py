"""Task 2 as accuracy against cost: every row of the task-2 cells (resolution x budget) that were
run, timed together in this run with `prismlab bench infer`'s code, and a chart of test accuracy
against batch-1 latency per cell, each model family a line.

The cells are named here (CELLS): each is a task-2 results file; a missing one is listed as still
to run. Accuracies and their paired intervals come from those files; every timing comes from this
run, on this machine, so speeds compare across cells too.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from prismlab.analysis.plots import plot_frontier
from prismlab.analysis.report import beyond_noise, ci, md_table
from prismlab.analysis.stats import from_bits, paired_ratio
from prismlab.bench.common import StudyArgs, frame, study_provenance, write_results
from prismlab.bench.infer import STEPS, measure_model
from prismlab.bench.task2 import MODELS, OURS
from prismlab.errors import ConfigError

# tier -> (image size, epochs, the task-2 studies that may have trained that cell, the first found
# read): bf16 where the CPU trains it natively, else fp32 (precision.py decides; the results say which)
CELLS = {"cpu": [(32, 4, ("task2-cpu-32px-bf16", "task2-cpu-32px")),
                 (32, 12, ("task2-cpu-32px-12ep-bf16", "task2-cpu-32px-12ep")),
                 (64, 4, ("task2-cpu-bf16", "task2-cpu")), (64, 12, ("task2-cpu-12ep-bf16", "task2-cpu-12ep"))],
         "gpu": [(84, 4, ("task2-gpu-bf16", "task2-gpu")), (84, 12, ("task2-gpu-12ep-bf16", "task2-gpu-12ep"))]}
FAMILIES = {"ours (4 body layers)": list(OURS), "ResNet, low-res stem": ["resnet18_lowres", "resnet34_lowres"],
            "ResNet34, standard stem": ["resnet34"]}
BASELINES = [k for name, keys in FAMILIES.items() if not name.startswith("ours") for k in keys]


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
    if args.data or args.epochs or args.amp != "auto" or args.size:
        raise ConfigError("bench frontier reads task2 results files and trains nothing: --data, --epochs, --amp "
                          "and --size do not apply")
    results = Path(args.results_dir)
    cells = [(size, ep, _names(names)) for size, ep, names in CELLS[args.tier]]
    chosen = [(size, ep, next((n for n in names if (results / f"{n}.json").exists()), None), names)
              for size, ep, names in cells]
    found = [(size, ep, name, json.loads((results / f"{name}.json").read_text()))
             for size, ep, name, _ in chosen if name]
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
                    "img_s_b64": m["runtimes"][m["best_b64"]]["img_s_b64"], "runtime_b64": m["best_b64"],
                    "latency_ms_b1": m["runtimes"][m["best_b1"]]["latency_ms_b1_median"], "runtime_b1": m["best_b1"]}
            rows[key] = {k: r.get(k) for k in ("model", "accuracy", "accuracy_ci", "accuracy_over_resnet34",
                                               "accuracy_over_resnet34_ci", "accuracy_over_resnet34_lowres",
                                               "accuracy_over_resnet34_lowres_ci", "body_layers", "params", "flops",
                                               "precision", "test_correct")} | timed[(r["model"], size)]
        cells[f"{size}px-{ep}ep"] = {"size": size, "epochs": ep, "file": f"{name}.json", "commit": doc["commit"],
                                    "rows": rows, "dominated": dominated(rows), "targets": doc.get("targets") or {}}
    targets = {
        "ours>=90%_resnet34_lowres": _every(cells, "ours_accuracy>=90%_resnet34_lowres"),
        "ours>=resnet34_lowres (stretch)": _every(cells, "ours_accuracy>=resnet34_lowres (stretch)"),
        "ours_on_the_frontier": all(not c["dominated"] for c in cells.values()),
        "ours>=resnet34": _every(cells, "ours_accuracy>=resnet34"),
    }
    doc = study_provenance(args, cells=cells, pending=pending, timed_batches=steps, threads=threads,
                           families=FAMILIES, targets=targets)
    name = f"task2-{args.tier}-frontier"
    plot_frontier({k: {fam: [(c["rows"][m]["latency_ms_b1"], c["rows"][m]["accuracy"], *_interval(c["rows"][m]), m)
                             for m in keys if m in c["rows"]] for fam, keys in FAMILIES.items()}
                   for k, c in cells.items()}, results / f"{name}.png", f"Task 2 ({args.tier} tier): accuracy against cost")
    path = write_results(results, name, doc, markdown(doc))
    print(path.with_suffix(".md").read_text())


def _names(names: str | tuple[str, ...]) -> tuple[str, ...]:
    return (names,) if isinstance(names, str) else tuple(names)


def _every(cells: dict, target: str) -> bool | None:
    """Whether `target` holds in every cell that judged it (None: no cell did)."""
    judged = [c["targets"][target] for c in cells.values() if target in c["targets"]]
    return all(judged) if judged else None


def _interval(r: dict) -> tuple[float, float]:
    c = r.get("accuracy_ci") or {}
    return c.get("low", r["accuracy"]), c.get("high", r["accuracy"])


def markdown(doc: dict) -> str:
    lines = []
    for key, c in doc["cells"].items():
        rows = [[k, r["model"], ci(r["accuracy"], r["accuracy_ci"]),
                 ci(r.get("accuracy_over_resnet34"), r.get("accuracy_over_resnet34_ci")),
                 ci(r.get("accuracy_over_resnet34_lowres"), r.get("accuracy_over_resnet34_lowres_ci")),
                 r["body_layers"], f"{r['params']:,}", f"{r['flops'] / 1e6:,.1f}M",
                 f"{r['img_s_b64']:.0f} ({r['runtime_b64']})", f"{r['latency_ms_b1']:.2f} ({r['runtime_b1']})"]
                for k, r in sorted(c["rows"].items(), key=lambda kv: kv[1]["latency_ms_b1"])]
        lines += [f"## {c['size']} px, {c['epochs']} epochs (`{c['file']}`, commit `{c['commit'][:12]}`)", "",
                  md_table(["key", "model", "test acc % (95% CI)", "acc / ResNet34 % (paired 95% CI)",
                            "acc / ResNet34 low-res stem % (paired 95% CI)", "body layers", "params", "FLOPs",
                            "img/s, batch 64 (best runtime)", "batch-1 ms (best runtime)"], rows), "",
                  "Baselines both faster at batch 1 and more accurate beyond noise than a member of ours' family: "
                  + (", ".join(c["dominated"]) or "none") + ".", ""]
    if doc["pending"]:
        lines += [f"Partial results: still to run: {', '.join(doc['pending'])}.", ""]
    lines += ["Targets: " + ", ".join(f"{k}: {'—' if v is None else 'met' if v else 'NOT met'}"
                                      for k, v in doc["targets"].items()), "",
              f"![accuracy against batch-1 latency](task2-{doc['tier']}-frontier.png)", ""]
    return frame(doc, f"Task 2: accuracy against cost ({doc['tier']} tier)", lines,
                 recipe=f"; rows from the task2 files named per cell; every timing from this run: random-init "
                 f"weights in inference form, RGB, batch 64 over {doc['timed_batches']} batches, batch 1 over 200 "
                 f"calls, the best of prismlab bench infer's runtimes", cores=f", {doc['threads']} threads")

"""Task 2 as accuracy against cost: the rows of the task-2 study of each cell (CELLS: resolution x
budget; a missing one is listed as still to run), every model timed in this run with `prismlab bench
infer`'s code, so speeds compare across cells, and a chart of accuracy against batch-1 latency."""

from __future__ import annotations

from pathlib import Path

import torch

from prismlab.analysis.plots import plot_frontier
from prismlab.analysis.report import beyond_noise
from prismlab.bench.common import StudyArgs, preset, study_name
from prismlab.bench.infer import STEPS, best, measure_model
from prismlab.bench.results import (
    Col,
    check_targets,
    header,
    paired,
    pending_lines,
    plural,
    provenance,
    read_results,
    table,
    targets_line,
    write_results,
)
from prismlab.bench.task2 import ACCURACY, MODELS, OURS
from prismlab.errors import ConfigError

# tier -> the cells (image size, epochs); the GPU's are its preset's budgets (task2-gpu.yaml: 60 epochs)
CELLS = {"cpu": [(32, 4), (32, 12), (64, 4), (64, 12)], "gpu": [(84, 12), (84, 60)]}
FAMILIES = {
    "ours (4 body layers)": list(OURS),
    "ResNet, low-res stem": ["resnet18_lowres", "resnet34_lowres"],
    "ResNet34, standard stem": ["resnet34"],
}
BASELINES = [k for name, keys in FAMILIES.items() if not name.startswith("ours") for k in keys]
# target -> the task-2 target it needs in every cell (None: no baseline dominates ours)
TARGETS = {
    "ours>=90%_resnet34_lowres": "ours_accuracy>=90%_resnet34_lowres",
    "ours>=resnet34_lowres (stretch)": "ours_accuracy>=resnet34_lowres (stretch)",
    "ours_on_the_frontier": None,
    "ours>=resnet34": "ours_accuracy>=resnet34",
}
# what a cell keeps of each task-2 row
KEYS = (
    "model accuracy accuracy_ci accuracy_over_resnet34 accuracy_over_resnet34_ci accuracy_over_resnet34_lowres "
    "accuracy_over_resnet34_lowres_ci body_layers params flops precision test_correct"
).split()


def dominated(rows: dict) -> list[str]:
    """'<baseline> over <ours member>' for each baseline row both faster at batch 1 and more accurate
    beyond noise (paired bootstrap over the test images) than a member of ours' family."""
    return [
        f"{b} over {o}"
        for b in BASELINES
        for o in OURS
        if b in rows and o in rows and rows[b]["latency_ms_b1"] < rows[o]["latency_ms_b1"]
        if beyond_noise(paired(rows[b]["test_correct"], rows[o]["test_correct"])) == "above"
    ]


def cell_studies(tier: str, size: int, epochs: int) -> tuple[str, ...]:
    """The task-2 studies that may have trained a cell, as `prismlab bench task2` names them, the first
    found read: the default recipe's (the one the budget table and README read), else a bf16 study
    (trained where a CPU had native bf16); each cell's heading says which."""
    base = preset(f"task2-{tier}")
    at = {"size": size, "preset_size": base["image_size"]}
    return tuple(study_name("task2", tier, epochs, base["epochs"], amp, **at) for amp in ("auto", "bf16"))


def run(args: StudyArgs) -> None:
    if args.tier not in CELLS:
        raise ConfigError(f"no frontier cells for tier {args.tier!r}")
    results = Path(args.results_dir)
    found, pending = [], []
    for size, ep in CELLS[args.tier]:
        names = cell_studies(args.tier, size, ep)
        name = next((n for n in names if (results / f"{n}.json").exists()), None)
        if name:
            doc = read_results(results, name, needs=("models", "commit", "image_size", "epochs"))
            check_targets(doc, results / f"{name}.json")
            if (doc["image_size"], doc["epochs"]) != (size, ep):
                raise ConfigError(
                    f"{results / name}.json: trained at {doc['image_size']} px for {doc['epochs']} epochs, "
                    f"not the {size} px, {ep}-epoch cell its name stands for"
                )
            found.append((size, ep, name, doc))
        else:
            pending.append(" or ".join(f"{n}.json" for n in names))
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
                if not m["runtimes"]:
                    raise ConfigError(f"{r['model']}: no runtime gave a timing ({'; '.join(m['not_run'].values())})")
                timed[(r["model"], size)] = {
                    "img_s_b64": best(m, "img_s_b64"),
                    "runtime_b64": m["best_b64"],
                    "latency_ms_b1": best(m, "latency_ms_b1_median"),
                    "runtime_b1": m["best_b1"],
                }
            rows[key] = {k: r.get(k) for k in KEYS} | timed[(r["model"], size)]
        cells[f"{size}px-{ep}ep"] = {
            "size": size,
            "epochs": ep,
            "file": f"{name}.json",
            "commit": doc["commit"],
            "rows": rows,
            "dominated": dominated(rows),
            "missing": [k for keys in FAMILIES.values() for k in keys if k not in rows],
            "targets": doc.get("targets") or {},
        }
    targets = {k: _every(cells, t) if t else _on_the_frontier(cells) for k, t in TARGETS.items()}
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
    chart = {
        _label(c): {fam: [_point(m, c["rows"][m]) for m in keys if m in c["rows"]] for fam, keys in FAMILIES.items()}
        for c in cells.values()
    }
    plot_frontier(chart, results / f"{name}.png", f"Task 2 ({args.tier} tier): accuracy against cost")
    path = write_results(results, name, doc, markdown(doc))
    print(path.with_suffix(".md").read_text())


def _every(cells: dict, target: str) -> dict:
    """Whether `target` holds in every cell: its verdict in each (None: the cell's file lacks a row it needs)."""
    return _verdict({_label(c): c["targets"].get(target) for c in cells.values()})


def _on_the_frontier(cells: dict) -> dict:
    """No baseline dominates a member of ours, judged in each cell that holds ours and every baseline; a
    domination found in any cell fails it (more baselines cannot undo it)."""
    return _verdict({_label(c): False if c["dominated"] else True if _judges(c) else None for c in cells.values()})


def _verdict(per_cell: dict) -> dict:
    """Met in every cell -> True; NOT met in one -> False; else None (not judged everywhere)."""
    vs = list(per_cell.values())
    met = False if False in vs else True if vs and all(v is True for v in vs) else None
    return {"met": met, "cells": per_cell}


def _judges(cell: dict) -> bool:
    """A cell judges the frontier when it holds ours and every baseline."""
    return all(k in cell["rows"] for k in BASELINES) and any(k in cell["rows"] for k in OURS)


def _label(cell: dict) -> str:
    return f"{cell['size']} px, {plural(cell['epochs'], 'epoch')}"


def _per_cell(k: str, v: dict) -> str:
    """A target's detail: its verdict in each cell, where it is not met in all."""
    if v["met"] is True:
        return ""
    word = {True: "met", False: "NOT met", None: "not judged"}
    return " (" + "; ".join(f"{c}: {word[m]}" for c, m in v["cells"].items()) + ")"


def _point(key: str, r: dict) -> tuple:
    """A row on the chart: (batch-1 ms, accuracy, its interval's ends, its key)."""
    c = r.get("accuracy_ci") or {}
    return r["latency_ms_b1"], r["accuracy"], c.get("low", r["accuracy"]), c.get("high", r["accuracy"]), key


COLS = [
    *ACCURACY,
    Col("params", "params", "{:,}"),
    Col("FLOPs", lambda k, r: f"{r['flops'] / 1e6:,.1f}M"),
    Col("img/s, batch 64 (best runtime)", lambda k, r: f"{r['img_s_b64']:.0f} ({r['runtime_b64']})"),
    Col("batch-1 ms (best runtime)", lambda k, r: f"{r['latency_ms_b1']:.2f} ({r['runtime_b1']})"),
]


def _frontier_lines(cell: dict) -> list[str]:
    """Which baselines beat a member of ours on both axes; a cell without every baseline is not judged."""
    beaten = "faster at batch 1 and more accurate beyond noise than a member of ours' family"
    found = f"{', '.join(cell['dominated']) or 'none'}."
    if _judges(cell):
        return [f"Baselines both {beaten}: {found}", ""]
    ours = any(k in cell["rows"] for k in OURS)
    absent = ", ".join([b for b in BASELINES if b not in cell["rows"]] + ([] if ours else ["a member of ours"]))
    held = any(b in cell["rows"] for b in BASELINES) and ours
    line = f"The frontier is not judged in this cell without {absent}"
    return [line + (f"; of its baselines, {beaten}: {found}" if held else "."), ""]


def markdown(doc: dict) -> str:
    lines = []
    for c in doc["cells"].values():
        precision = " / ".join(dict.fromkeys(r["precision"] for r in c["rows"].values()))  # one: a cell is one recipe
        lines += [
            f"## {_label(c)}, {precision} (`{c['file']}`, commit `{c['commit'][:12]}`)",
            "",
            table(COLS, sorted(c["rows"].items(), key=lambda kv: kv[1]["latency_ms_b1"])),
            "",
            *_frontier_lines(c),
            *(
                [f"Rows of the frontier not in this cell's file yet: {', '.join(c['missing'])}.", ""]
                if c["missing"]
                else []
            ),
        ]
    lines += pending_lines(doc) + targets_line(doc["targets"], detail=_per_cell)
    lines += [f"![accuracy against batch-1 latency](task2-{doc['tier']}-frontier.png)", ""]
    setup = (
        f"; rows from the task2 files named per cell; every timing from this run: random-init weights in "
        f"inference form, RGB, batch 64 over {doc['timed_batches']} batches, batch 1 over 200 calls, the best "
        "of prismlab bench infer's runtimes"
    )
    title = f"Task 2: accuracy against cost ({doc['tier']} tier)"
    return "\n".join(header(doc, title, setup, f"; {doc['threads']} threads for timing") + lines)

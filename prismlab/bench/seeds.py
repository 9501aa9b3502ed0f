"""Task 1 over training seeds: the rows trained again with `prismlab bench task1 --seed N` (each its
own results file, task1-<tier>-seedN), read together. Every row's accuracy per subset is the mean
over the seeds it has, with an interval that covers the seeds and the test images
(analysis.stats.seed_interval); each row's ratio to the specialist of a subset is the ratio of
seed means, with an interval that draws both rows' seeds and pairs the images. Trains nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from prismlab.analysis.report import beyond_noise, ci, md_table
from prismlab.analysis.stats import from_bits, seed_interval, seed_paired_ratio
from prismlab.bench.common import StudyArgs, frame, preset, study_name, study_provenance, write_results
from prismlab.bench.task1 import METHODS, naive_of
from prismlab.channels import ALL_SUBSETS
from prismlab.errors import ConfigError

SEEDS = range(10)  # the seeds looked for


def specialist(row: str, subset: str) -> str:
    """The specialist a row is held against on a subset, as in task 1 (naive with the row's trunk on RGB)."""
    if subset != "RGB":
        return f"diy_{subset}"
    return naive_of(row) if row in METHODS else "naive"


def combine(files: dict[int, dict]) -> dict:
    """{seed: a task1 results doc} -> {row: {"seeds", "results": {subset: interval}, "specialist_ratio",
    "min_specialist_ratio", "below_specialist_beyond_noise"}}."""
    bits: dict[str, dict[str, list]] = {}  # row -> subset -> one 0/1 array per seed
    seeds: dict[str, list[int]] = {}  # row -> the seeds that scored it
    for s, doc in sorted(files.items()):
        for row, m in doc["methods"].items():
            if m.get("test_correct"):
                seeds.setdefault(row, []).append(s)
            for subset, b in m.get("test_correct", {}).items():
                bits.setdefault(row, {}).setdefault(subset, []).append(from_bits(b))
    rows = {}
    for row, by_subset in bits.items():
        r = {"seeds": seeds[row], "results": {s: seed_interval(v) for s, v in by_subset.items()}}
        if not row.startswith("diy_"):
            ratios = {s: {**seed_paired_ratio(by_subset[s], bits[spec][s]), "specialist": spec}
                      for s in ALL_SUBSETS for spec in [specialist(row, s)]
                      if s in by_subset and s in bits.get(spec, {}) and spec != row}
            known = [x["ratio"] for x in ratios.values() if x["ratio"] is not None]
            r.update(specialist_ratio=ratios, min_specialist_ratio=min(known) if known else None,
                     below_specialist_beyond_noise=[s for s, x in ratios.items() if beyond_noise(x) == "below"])
        rows[row] = r
    return rows


def targets(rows: dict) -> dict:
    ours = rows.get("ours")
    if not ours or len(ours["specialist_ratio"]) < len(ALL_SUBSETS):
        return {}
    return {"ours_seeds>=3": len(ours["seeds"]) >= 3,
            "ours_seed_mean_min_specialist_ratio>=1.00": ours["min_specialist_ratio"] >= 1.0,
            "ours_none_below_a_specialist_beyond_noise": not ours["below_specialist_beyond_noise"]}


def run(args: StudyArgs) -> None:
    if args.data or args.amp != "auto" or args.seed:
        raise ConfigError("bench seeds reads task1 results files and trains nothing: --data, --amp and --seed do not apply")
    base = preset(f"task1-{args.tier}")
    results = Path(args.results_dir)
    names = {s: study_name("task1", args.tier, args.epochs, base["epochs"], seed=s) for s in SEEDS}
    files = {s: json.loads((results / f"{n}.json").read_text()) for s, n in names.items()
             if (results / f"{n}.json").exists()}
    if not files:
        raise ConfigError(f"{results}: no task1 results file for any seed ({names[0]}.json, {names[1]}.json, ...)")
    rows = combine(files)
    doc = study_provenance(args, epochs=args.epochs or base["epochs"], image_size=base["image_size"],
                           files={str(s): {"file": f"{names[s]}.json", "commit": d["commit"],
                                           "pending": d.get("pending", [])} for s, d in files.items()},
                           methods=rows, targets=targets(rows))
    name = study_name("task1", args.tier, args.epochs, base["epochs"]) + "-seeds"
    path = write_results(results, name, doc, markdown(doc))
    print(path.with_suffix(".md").read_text())


def markdown(doc: dict) -> str:
    rows = doc["methods"]
    acc = [[k, ",".join(map(str, m["seeds"])), *(ci(m["results"][s]["value"], m["results"][s])
                                                  if s in m["results"] else "—" for s in ALL_SUBSETS)]
           for k, m in rows.items()]
    ratio = [[k, *(ci(m["specialist_ratio"][s]["ratio"], m["specialist_ratio"][s])
                   if s in m["specialist_ratio"] else "—" for s in ALL_SUBSETS),
              ci(m["min_specialist_ratio"], None), ", ".join(m["below_specialist_beyond_noise"]) or "none"]
             for k, m in rows.items() if "specialist_ratio" in m]
    counts = {len(m["seeds"]) for m in rows.values()}
    lines = ["Test accuracy %, mean over seeds (95% interval over seeds and test images):", "",
             md_table(["row", "seeds", *ALL_SUBSETS], acc), "",
             "Ratio to each subset's specialist %, of the seed means (95% interval: both rows' seeds drawn, "
             "images paired):", "",
             md_table(["row", *ALL_SUBSETS, "min", "below beyond noise"], ratio), ""]
    if len(counts) > 1:
        lines += ["Rows with fewer seeds than others: " + ", ".join(
            f"{k} ({len(m['seeds'])})" for k, m in rows.items() if len(m["seeds"]) < max(counts)) + ".", ""]
    lines += ["Files: " + ", ".join(f"seed {s}: `{f['file']}` at `{f['commit'][:12]}`"
                                    + (f" (partial: {', '.join(f['pending'])} pending)" if f["pending"] else "")
                                    for s, f in doc["files"].items()), ""]
    if doc["targets"]:
        lines += ["Targets: " + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in doc["targets"].items()), ""]
    return frame(doc, f"Task 1 over training seeds ({doc['tier']} tier, {doc['epochs']} epochs)", lines, seed=False,
                 recipe=f", {doc['epochs']} epochs at {doc['image_size']}x{doc['image_size']}")

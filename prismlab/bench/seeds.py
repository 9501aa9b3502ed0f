"""Task 1 over training seeds: the task1-<tier>[-seedN] files read together. A row's accuracy is its
mean over its seeds, with an interval over seeds and test images (stats.seed_interval); its ratio to
a specialist is the ratio of seed means (stats.seed_paired_ratio). Trains nothing."""

from __future__ import annotations

from pathlib import Path

from prismlab.analysis.report import ci
from prismlab.analysis.stats import from_bits, seed_interval, seed_paired_ratio
from prismlab.bench.common import StudyArgs, preset, study_name
from prismlab.bench.results import (
    Col,
    Target,
    header,
    judge,
    provenance,
    read_results,
    table,
    targets_line,
    trained,
    write_results,
)
from prismlab.bench.specialists import ratios
from prismlab.bench.task1 import LITERATURE, METHODS, naive_of
from prismlab.channels import ALL_SUBSETS
from prismlab.errors import ConfigError

SEEDS = range(10)  # the seeds looked for


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
        if not row.startswith("diy_"):  # as in task 1, but naive is no specialist of itself
            rgb = naive_of(row) if row in METHODS else "naive"
            r.update(ratios(row, by_subset, bits, seed_paired_ratio, rgb, with_itself=False))
        rows[row] = r
    return rows


TARGETS = [
    Target("ours_seeds>=3", lambda r: len(r["ours"]["seeds"]) >= 3),
    Target("ours_seed_mean_min_specialist_ratio>=1.00", lambda r: r["ours"]["min_specialist_ratio"] >= 1.0),
    Target("ours_none_below_a_specialist_beyond_noise", lambda r: not r["ours"]["below_specialist_beyond_noise"]),
]


def _above_literature(rows: dict) -> bool | None:
    """Ours' seed mean at or above each literature row's on every subset (point estimates): False once
    a row is above it anywhere; True only when every literature row has scored; else None (not judged)."""
    ours = rows["ours"]["results"]
    lit = [rows[k]["results"] for k in LITERATURE if k in rows]
    if not all(ours[s]["value"] >= r[s]["value"] for r in lit for s in r):
        return False
    return True if len(lit) == len(LITERATURE) else None


def targets(rows: dict) -> dict:
    """Judged once ours has a ratio on every subset; the literature's once one of its rows ran."""
    ours = rows.get("ours")
    if not ours or len(ours["specialist_ratio"]) != len(ALL_SUBSETS):
        return {}
    lit = (
        {"ours>=every_literature_row_on_every_subset": _above_literature(rows)}
        if any(k in rows for k in LITERATURE)
        else {}
    )
    return judge(TARGETS, rows) | lit


def run(args: StudyArgs) -> None:
    base = preset(f"task1-{args.tier}")
    results = Path(args.results_dir)
    names = {s: study_name("task1", args.tier, args.epochs, base["epochs"], seed=s) for s in SEEDS}
    docs = {s: read_results(results, n, needs=("methods", "commit")) for s, n in names.items()}
    files = {s: d for s, d in docs.items() if d is not None}
    if not files:
        raise ConfigError(f"{results}: no task1 results file for any seed ({names[0]}.json, {names[1]}.json, ...)")
    rows = combine(files)
    read = {
        str(s): {"file": f"{names[s]}.json", "commit": d["commit"], "pending": d.get("pending", [])}
        for s, d in files.items()
    }
    study = {"tier": args.tier, "epochs": args.epochs or base["epochs"], "image_size": base["image_size"]}
    doc = provenance(args.argv, **study, files=read, methods=rows, targets=targets(rows))
    name = study_name("task1", args.tier, args.epochs, base["epochs"]) + "-seeds"
    path = write_results(results, name, doc, markdown(doc))
    print(path.with_suffix(".md").read_text())


def _interval(s: str, key: str, value: str):
    return lambda k, m: ci(m[key][s][value], m[key][s]) if s in m[key] else "—"


ACCURACY = [
    Col("row", lambda k, m: k),
    Col("seeds", lambda k, m: ",".join(map(str, m["seeds"]))),
    *(Col(s, _interval(s, "results", "value")) for s in ALL_SUBSETS),
]
RATIOS = [
    Col("row", lambda k, m: k),
    *(Col(s, _interval(s, "specialist_ratio", "ratio")) for s in ALL_SUBSETS),
    Col("min", lambda k, m: ci(m["min_specialist_ratio"], None)),
    Col("below beyond noise", lambda k, m: ", ".join(m["below_specialist_beyond_noise"]) or "none"),
]


def markdown(doc: dict) -> str:
    rows = doc["methods"]
    counts = {len(m["seeds"]) for m in rows.values()}
    lines = [
        "Test accuracy %, mean over seeds (95% interval over seeds and test images):",
        "",
        table(ACCURACY, rows.items()),
        "",
        "Ratio to each subset's specialist %, of the seed means (95% interval: both rows' seeds drawn, images paired):",
        "",
        table(RATIOS, [(k, m) for k, m in rows.items() if "specialist_ratio" in m]),
        "",
    ]
    if len(counts) > 1:
        fewer = ", ".join(f"{k} ({len(m['seeds'])})" for k, m in rows.items() if len(m["seeds"]) < max(counts))
        lines += [f"Rows with fewer seeds than others: {fewer}.", ""]
    partial = {
        s: f" (partial: {', '.join(f['pending'])} pending)" if f["pending"] else "" for s, f in doc["files"].items()
    }
    files = ", ".join(f"seed {s}: `{f['file']}` at `{f['commit'][:12]}`{partial[s]}" for s, f in doc["files"].items())
    lines += [f"Files: {files}", ""]
    if untrained := [k for k in LITERATURE if k not in rows]:
        lines += [f"Literature rows not scored at any seed yet: {', '.join(untrained)}.", ""]
    lines += targets_line(doc["targets"])
    title = f"Task 1 over training seeds ({doc['tier']} tier, {doc['epochs']} epochs)"
    return "\n".join(header(doc, title, trained(doc)) + lines)

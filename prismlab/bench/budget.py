"""Task 2 across training budgets: the results files named in BUDGETS, gathered into one table, a
chart of test accuracy against epochs (95% bootstrap intervals) and the validation curves of the
longest budget, so a reader sees whether either model has plateaued. A task-2 study that is one of
its sources regathers it after its own rows; `prismlab bench budget` only gathers."""

from __future__ import annotations

from pathlib import Path

from prismlab.analysis.plots import plot_budget, plot_val_curves
from prismlab.analysis.report import beyond_noise, ci, md_table
from prismlab.bench.common import StudyArgs
from prismlab.bench.results import check_targets, header, provenance, read_results, trained_on, write_results
from prismlab.errors import ConfigError

# tier -> budget (epochs) -> the task2 results file that stands for it. A file trained in bf16 names
# its "parity" file: the 4-epoch bf16 study that pairs each row with fp32, shown beside the table.
BUDGETS = {
    "cpu": {
        4: {"file": "task2-cpu"},
        12: {"file": "task2-cpu-12ep"},
        30: {"file": "task2-cpu-30ep-bf16", "parity": "task2-cpu-bf16"},
    },
    "gpu": {12: {"file": "task2-gpu-12ep"}, 60: {"file": "task2-gpu"}},
}


def sources(tier: str) -> set[str]:
    """The studies the budget table reads (each budget's file and its parity file): only they regather it."""
    return {name for b in BUDGETS.get(tier, {}).values() for name in (b["file"], b.get("parity")) if name}


def budget_files(results_dir: Path, budgets: dict[int, dict]) -> dict[int, dict]:
    """{epochs: results doc, with its "file"} for each budget whose file exists, in budget order."""
    needs = ("models", "commit", "command")
    docs = {e: read_results(results_dir, src["file"], needs=needs) for e, src in sorted(budgets.items())}
    for e, doc in docs.items():
        if doc:
            check_targets(doc, Path(results_dir) / f"{budgets[e]['file']}.json")
    return {e: {**doc, "file": f"{budgets[e]['file']}.json"} for e, doc in docs.items() if doc}


def run(args: StudyArgs) -> None:
    path = write_budget(args.results_dir, args.tier, args.argv, after_study=False)
    if path is None:
        files = ", ".join(f"{b['file']}.json" for b in BUDGETS.get(args.tier, {}).values())
        raise ConfigError(f"{args.results_dir}: fewer than two of the budget files exist yet ({files})")
    print(path.with_suffix(".md").read_text())


def write_budget(
    results_dir: str | Path,
    tier: str,
    argv: list[str] | None = None,
    budgets: dict[int, dict] | None = None,
    after_study: bool = True,
) -> Path | None:
    """Writes task2-<tier>-budget.{json,md,png} and -curves.png from `budgets` (default BUDGETS[tier]);
    None when fewer than two of their files exist. after_study: the command trained a study first."""
    results_dir = Path(results_dir)
    budgets = BUDGETS.get(tier, {}) if budgets is None else budgets
    docs = budget_files(results_dir, budgets)
    if len(docs) < 2:
        return None
    rows = list(dict.fromkeys(k for d in docs.values() for k in d["models"]))
    points = {k: {e: d["models"][k] for e, d in docs.items() if k in d["models"]} for k in rows}
    longest = max(docs)
    name = f"task2-{tier}-budget"
    doc = {
        **provenance(argv),
        "after_study": after_study,
        "tier": tier,
        "sources": {
            e: {
                "file": d["file"],
                "commit": d["commit"],
                "command": d["command"],
                "machine": d.get("machine"),
                "precision": _precision(d),
                **_parity(results_dir, budgets[e].get("parity")),
            }
            for e, d in docs.items()
        },
        "rows": {k: {str(e): _point(r) for e, r in pts.items()} for k, pts in points.items()},
        "targets": {str(e): d.get("targets") or None for e, d in docs.items()},  # None: not judged
        "curves_epochs": longest,
    }
    series = {
        k: [
            (e, r["accuracy"], r["accuracy_ci"]["low"], r["accuracy_ci"]["high"])
            for e, r in pts.items()
            if r.get("accuracy_ci")
        ]
        for k, pts in points.items()
    }
    colors = {k: f"C{i}" for i, k in enumerate(rows)}  # a row keeps its colour in both charts
    title = f"Task 2 ({tier} tier): test accuracy against budget"
    plot_budget({k: v for k, v in series.items() if v}, results_dir / f"{name}.png", title, colors)
    curves = {k: m.get("val_acc_per_epoch") for k, m in docs[longest]["models"].items()}
    title = f"Task 2 ({tier} tier): validation accuracy per epoch, {longest}-epoch runs"
    plot_val_curves({k: v for k, v in curves.items() if v}, results_dir / f"task2-{tier}-curves.png", title, colors)
    return write_results(results_dir, name, doc, markdown(doc))


def _parity(results_dir: Path, name: str | None) -> dict:
    """{"parity": {"file", "ratios"}} from the named bf16 study, or nothing."""
    doc = read_results(results_dir, name) if name else None
    return {"parity": {"file": f"{name}.json", "ratios": doc.get("parity", {}).get("ratios", {})}} if doc else {}


def _precision(doc: dict) -> str:
    return "/".join(sorted({r.get("precision", "fp32") for r in doc["models"].values()}))


POINT = (
    "accuracy accuracy_ci accuracy_over_resnet34 accuracy_over_resnet34_ci speed_over_resnet34 body_layers precision"
)


def _point(r: dict) -> dict:
    return {k: r.get(k) for k in POINT.split()}


def precision_note(sources: dict) -> str:
    """Which precision each budget trained in; beside a bf16 one, its rows paired with fp32 at 4 epochs."""
    note = "Precision: " + ", ".join(f"{e} epochs {s['precision']}" for e, s in sources.items()) + "."
    for e, s in sources.items():
        if p := s.get("parity"):
            pairs = ", ".join(f"{k} {ci(r['ratio'], r)}" for k, r in p["ratios"].items())
            note += (
                f" Beside the {e}-epoch rows (`{s['file']}`), `{p['file']}` pairs bf16 with fp32 at the 4-epoch "
                f"preset (accuracy bf16 / fp32 %, paired 95% CI: {pairs})."
            )
    return note


def _verdict(t: dict | None, name: str) -> str:
    """A target at one budget; — where that budget's study lacks a row the target needs."""
    v = (t or {}).get(name)
    return "—" if v is None else "met" if v else "NOT met"


def markdown(doc: dict) -> str:
    budgets = list(doc["sources"])

    def cell(p: dict, e, key: str) -> str:
        return ci(p[str(e)][key], p[str(e)][f"{key}_ci"]) if str(e) in p else "—"

    table = [
        [k, *(cell(p, e, "accuracy") for e in budgets), *(cell(p, e, "accuracy_over_resnet34") for e in budgets)]
        for k, p in doc["rows"].items()
    ]
    head = ["key", *(f"test acc % at {e} ep" for e in budgets), *(f"acc / ResNet34 % at {e} ep" for e in budgets)]
    lines = [
        md_table(head, table),
        "",
        "Intervals are 95% bootstrap intervals over the test images; the ratio's is paired (both models on "
        "the same resampled images).",
        "",
        precision_note(doc["sources"]),
        "",
    ]
    ours = doc["rows"].get("ours", {})
    over = {e: ours.get(str(e), {}).get("accuracy_over_resnet34_ci") for e in budgets}
    verdicts = [f"{e} epochs: {beyond_noise(c)}" for e, c in over.items() if c]
    if verdicts:
        lines += ["Ours against ResNet34: " + "; ".join(verdicts) + ".", ""]
    if names := list(dict.fromkeys(k for t in doc["targets"].values() if t for k in t)):
        rows = [[k, *(_verdict(doc["targets"][str(e)], k) for e in budgets)] for k in names]
        lines += [
            "Targets at each budget (— not judged: that budget's study lacks a row the target needs):",
            "",
            md_table(["target", *(f"{e} ep" for e in budgets)], rows),
            "",
        ]
    tier = doc["tier"]
    lines += [
        f"![test accuracy against budget](task2-{tier}-budget.png)",
        "",
        f"![validation accuracy per epoch](task2-{tier}-curves.png)",
        "",
    ]
    gathered = ", ".join(
        f"`{s['file']}` (commit `{s['commit'][:12]}`{trained_on(s.get('machine'))})" for s in doc["sources"].values()
    )
    # The rows were trained by the sources' commands, on the sources' machines.
    after = ", after that command's own study," if doc.get("after_study", True) else ""
    setup = f"; the table gathered{after} from {gathered}"
    title = f"Task 2 across budgets ({tier} tier)"
    return "\n".join(header({k: v for k, v in doc.items() if k != "machine"}, title, setup) + lines)

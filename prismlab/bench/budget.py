"""Task 2 across training budgets: gathers the task2-<tier>[-<N>ep] results files into one table,
a chart of test accuracy against epochs (95% bootstrap intervals) and the validation curves of
the longest budget, so a reader sees whether either model has plateaued."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prismlab.analysis.plots import plot_budget, plot_val_curves
from prismlab.analysis.report import beyond_noise, ci, md_table
from prismlab.bench.common import frame, provenance, write_results


def budget_files(results_dir: Path, tier: str) -> dict[int, dict]:
    """{epochs: results doc} for every task2 study of this tier in results_dir."""
    docs = {}
    for p in sorted(Path(results_dir).glob(f"task2-{tier}*.json")):
        if re.fullmatch(rf"task2-{tier}(-\d+ep)?\.json", p.name):
            doc = json.loads(p.read_text())
            docs[int(doc["epochs"])] = {**doc, "file": p.name}
    return dict(sorted(docs.items()))


def write_budget(results_dir: str | Path, tier: str, seed: int = 0, argv: list[str] | None = None) -> Path | None:
    """Writes task2-<tier>-budget.{json,md,png} and -curves.png; None when fewer than two budgets exist."""
    results_dir = Path(results_dir)
    docs = budget_files(results_dir, tier)
    if len(docs) < 2:
        return None
    rows = list(dict.fromkeys(k for d in docs.values() for k in d["models"]))
    points = {k: {e: d["models"][k] for e, d in docs.items() if k in d["models"]} for k in rows}
    longest = max(docs)
    name = f"task2-{tier}-budget"
    doc = {**provenance(seed, argv), "tier": tier,
           "sources": {e: {"file": d["file"], "commit": d["commit"], "command": d["command"]} for e, d in docs.items()},
           "rows": {k: {str(e): _point(r) for e, r in pts.items()} for k, pts in points.items()},
           "targets": {str(e): d.get("targets") for e, d in docs.items()},  # None: a study without both rows
           "curves_epochs": longest}
    series = {k: [(e, r["accuracy"], *_interval(r)) for e, r in pts.items() if r.get("accuracy_ci")]
              for k, pts in points.items()}
    colors = {k: f"C{i}" for i, k in enumerate(rows)}  # a row keeps its colour in both charts
    plot_budget({k: v for k, v in series.items() if v}, results_dir / f"{name}.png",
                f"Task 2 ({tier} tier): test accuracy against budget", colors)
    curves = {k: docs[longest]["models"][k].get("val_acc_per_epoch") for k in docs[longest]["models"]}
    plot_val_curves({k: v for k, v in curves.items() if v}, results_dir / f"task2-{tier}-curves.png",
                    f"Task 2 ({tier} tier): validation accuracy per epoch, {longest}-epoch runs", colors)
    write_results(results_dir, name, doc, _markdown(doc, docs))
    return results_dir / f"{name}.json"


def _interval(r: dict) -> tuple[float, float]:
    return r["accuracy_ci"]["low"], r["accuracy_ci"]["high"]


def _point(r: dict) -> dict:
    keys = ("accuracy", "accuracy_ci", "accuracy_over_resnet34", "accuracy_over_resnet34_ci", "speed_over_resnet34",
            "body_layers", "precision")
    return {k: r.get(k) for k in keys}


def _markdown(doc: dict, docs: dict[int, dict]) -> str:
    budgets = list(docs)
    table = [[k, *(ci(p[str(e)]["accuracy"], p[str(e)]["accuracy_ci"]) if str(e) in p else "—" for e in budgets),
              *(ci(p[str(e)]["accuracy_over_resnet34"], p[str(e)]["accuracy_over_resnet34_ci"]) if str(e) in p else "—"
                for e in budgets)]
             for k, p in doc["rows"].items()]
    lines = [md_table(["key", *(f"test acc % at {e} ep" for e in budgets), *(f"acc / ResNet34 % at {e} ep" for e in budgets)],
                      table), "",
             "Intervals are 95% bootstrap intervals over the test images; the ratio's is paired (both models on "
             "the same resampled images).", ""]
    ours = doc["rows"].get("ours", {})
    verdicts = [f"{e} epochs: {beyond_noise(ours[str(e)].get('accuracy_over_resnet34_ci'))}"
                for e in budgets if str(e) in ours and ours[str(e)].get("accuracy_over_resnet34_ci")]
    if verdicts:
        lines += ["Ours against ResNet34: " + "; ".join(verdicts) + ".", ""]
    keys = next((list(t) for t in doc["targets"].values() if t), None)
    if keys:
        lines += [f"Targets ({', '.join(keys)}) at each budget: " + "; ".join(
            f"{e} epochs: " + ("not judged (the study lacks ours or resnet34)" if not t else "met" if all(t.values())
                               else "NOT met (" + ", ".join(k for k, v in t.items() if not v) + ")")
            for e, t in doc["targets"].items()) + ".", ""]
    tier = doc["tier"]
    lines += [f"![test accuracy against budget](task2-{tier}-budget.png)", "",
              f"![validation accuracy per epoch](task2-{tier}-curves.png)", ""]
    gathered = ", ".join(f"`{s['file']}` (commit `{s['commit'][:12]}`)" for s in doc["sources"].values())
    return frame(doc, f"Task 2 across budgets ({tier} tier)", lines, recipe=f"; gathered from {gathered}", seed=False,
                 show_machine=False)

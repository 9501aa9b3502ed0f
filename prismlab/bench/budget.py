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
    """{epochs: results doc} for each budget of this tier: its plain study (task2-<tier>[-<N>ep]),
    or the study's bf16 twin where the plain one is unfinished and bf16 is admitted (bf16_gate).
    Each doc carries "file" and, for a bf16 twin, "admitted"; an unused twin is noted in "passed_over"."""
    gate = bf16_gate(results_dir, tier)
    docs = {}
    for p in sorted(Path(results_dir).glob(f"task2-{tier}*.json")):
        if re.fullmatch(rf"task2-{tier}(-\d+ep)?\.json", p.name):
            doc = json.loads(p.read_text())
            docs[int(doc["epochs"])] = {**doc, "file": p.name}
    for p in sorted(Path(results_dir).glob(f"task2-{tier}*-bf16.json")):
        if not re.fullmatch(rf"task2-{tier}-\d+ep-bf16\.json", p.name):
            continue  # the 4-epoch twin is the gate itself, beside a finished fp32 preset
        doc = {**json.loads(p.read_text()), "file": p.name}
        plain = docs.get(int(doc["epochs"]))
        why = _refused(doc, plain, gate)
        if why is None:
            docs[int(doc["epochs"])] = {**doc, "admitted": gate["file"]}
        elif plain is not None:
            plain["passed_over"] = f"`{p.name}` not used: {why}"
    return dict(sorted(docs.items()))


def bf16_gate(results_dir: Path, tier: str) -> dict | None:
    """The 4-epoch preset run in bf16 (task2-<tier>-bf16), paired row by row with its fp32 study:
    a long study may stand in bf16 only for rows this shows level with fp32 within noise."""
    p = Path(results_dir) / f"task2-{tier}-bf16.json"
    if not p.exists():
        return None
    return {**json.loads(p.read_text()).get("parity", {}), "file": p.name}


def _refused(doc: dict, plain: dict | None, gate: dict | None) -> str | None:
    """Why a long bf16 study may not stand for its budget, or None when it may."""
    if plain is not None and not plain.get("pending"):
        return "the fp32 study of this budget is finished"
    if doc.get("pending"):
        return f"unfinished ({', '.join(doc['pending'])} to run)"
    if gate is None or not gate.get("ratios"):
        return "no 4-epoch bf16 study pairs its rows with fp32"
    unpaired = [k for k in doc["models"] if k not in gate["ratios"]]
    if unpaired:
        return f"the 4-epoch bf16 study does not pair {', '.join(unpaired)} with fp32"
    off = [k for k in doc["models"] if beyond_noise(gate["ratios"][k]) != "level within noise"]  # no interval: "—"
    if off:
        return f"at the 4-epoch preset bf16 is not shown level with fp32 for {', '.join(off)}"
    return None


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
           "sources": {e: {"file": d["file"], "commit": d["commit"], "command": d["command"],
                           "precision": _precision(d), "admitted_by": d.get("admitted"),
                           "passed_over": d.get("passed_over")} for e, d in docs.items()},
           "rows": {k: {str(e): _point(r) for e, r in pts.items()} for k, pts in points.items()},
           "targets": {str(e): d.get("targets") for e, d in docs.items()},  # None: a study without both rows
           "curves_epochs": longest}
    if any(d.get("admitted") for d in docs.values()):
        doc["bf16_gate"] = bf16_gate(results_dir, tier)
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


def _precision(doc: dict) -> str:
    return "/".join(sorted({r.get("precision", "fp32") for r in doc["models"].values()}))


def _precision_note(doc: dict) -> str:
    """Which precision each budget trained in; for a budget in bf16, the 4-epoch evidence that admits it."""
    src = doc["sources"]
    note = "Precision: " + ", ".join(f"{e} epochs {s['precision']}" for e, s in src.items()) + "."
    for e, s in src.items():
        if s.get("admitted_by"):
            gate = doc["bf16_gate"]
            pairs = ", ".join(f"{k} {ci(r['ratio'], r)}" for k, r in gate["ratios"].items())
            note += (f" The {e}-epoch rows come from `{s['file']}`: the fp32 study of that budget is unfinished, and "
                     f"`{gate['file']}` shows bf16 level with fp32 within noise at the 4-epoch preset for each of "
                     f"them (accuracy bf16 / fp32 %, paired 95% CI: {pairs}).")
        if s.get("passed_over"):
            note += f" At {e} epochs, {s['passed_over']}."
    return note


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
    lines += [_precision_note(doc), ""]
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

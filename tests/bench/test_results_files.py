"""Every committed results file re-renders from its JSON as committed, provenance header aside: a
renderer change that alters a figure, a row or a verdict fails here."""

import json
import re
from pathlib import Path

import pytest

from prismlab.bench import budget, demo, frontier, infer, seeds, speed, task1, task2

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
# Written by older code, not re-rendered: what differs is not a figure.
OLDER = {
    "task2-cpu": "written before the table's note on inference timing and the current ResNet34 model card",
    "task2-cpu-12ep": "written before the title named the budget, the timing note and the current model card",
}
PRECISION = "Precision: "  # the budget file's note on the bf16 budget: prose written by the admission code


def render(name: str, doc: dict) -> str:
    if name.endswith("-seeds"):
        return seeds.markdown(doc)
    if name.startswith("task1"):
        return task1.markdown(doc, f"{name}-subsets.png" if (RESULTS / f"{name}-subsets.png").exists() else None)
    if name.endswith("-budget"):
        return budget.markdown(doc)
    if name.endswith("-frontier"):
        return frontier.markdown(doc)
    if name.startswith("task2"):
        return task2.markdown(doc)
    return {"speed": speed.markdown, "infer": infer.markdown, "demo": demo.markdown}[name.split("-")[0]](doc)


def body(md: str) -> list[str]:
    """The title and everything after the provenance header (the lines up to the first blank one)."""
    lines = md.split("\n")
    return lines[:1] + lines[lines.index("", 2) :]


NAMES = sorted(p.stem for p in RESULTS.glob("*.json"))


@pytest.mark.parametrize("name", [n for n in NAMES if n not in OLDER])
def test_results_files_render_as_committed(name):
    doc = json.loads((RESULTS / f"{name}.json").read_text())
    got, want = body(render(name, doc)), body((RESULTS / f"{name}.md").read_text())
    if name.endswith("-budget"):
        got, want = ([ln for ln in x if not ln.startswith(PRECISION)] for x in (got, want))
    assert got == want


def test_the_budget_note_keeps_the_committed_figures():
    """The bf16 budget's paired ratios come now from the parity file BUDGETS names: the same figures."""
    doc = json.loads((RESULTS / "task2-cpu-budget.json").read_text())
    for e, src in budget.BUDGETS["cpu"].items():
        doc["sources"][str(e)].update(budget._parity(RESULTS, src.get("parity")))
    note = budget.precision_note(doc["sources"])
    want = next(ln for ln in (RESULTS / "task2-cpu-budget.md").read_text().split("\n") if ln.startswith(PRECISION))
    figures = re.compile(r"\d+(?:\.\d+)?")
    assert note.split(".")[0] == want.split(".")[0]  # the precision of each budget
    assert figures.findall(note.split("CI: ")[1]) == figures.findall(want.split("CI: ")[1])


def test_only_the_named_older_files_are_left_out():
    assert set(OLDER) <= set(NAMES)

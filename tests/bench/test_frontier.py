"""`prismlab bench frontier`: task-2 cells read from their results files, every row timed once in
this run, and the frontier check (a baseline both faster and more accurate beyond noise)."""

import json

from prismlab import cli
from prismlab.analysis.report import ci, read_tables
from prismlab.analysis.stats import to_bits
from prismlab.bench import frontier
from prismlab.data.synth import make_synthetic


def row(latency, hits, n=400, start=0):
    """Correct on images start .. start + hits - 1."""
    return {"latency_ms_b1": latency, "test_correct": to_bits([start <= i < start + hits for i in range(n)])}


def test_a_baseline_dominates_only_when_faster_and_more_accurate_beyond_noise():
    rows = {"ours": row(2.0, 200), "ours_s": row(1.0, 150), "resnet34": row(1.5, 260), "resnet34_lowres": row(9.0, 300)}
    # resnet34 is faster than ours and 30% more accurate on 400 images: beyond noise. It is slower
    # than ours_s; resnet34_lowres is more accurate than both but slower than both.
    assert frontier.dominated(rows) == ["resnet34 over ours"]
    rows["resnet34"] = row(1.5, 205, start=195)  # 2.5% more accurate, on other images: within noise
    assert frontier.dominated(rows) == []


def test_frontier_reads_the_cells_and_times_each_model_once(tmp_path, monkeypatch):
    data = make_synthetic(
        tmp_path / "data", seed=0, num_classes=4, train_per_class=32, val_per_class=2, test_per_class=2, size=24
    )
    monkeypatch.setenv("PRISMLAB_CACHE", str(tmp_path / "cache"))
    base = ["--results-dir", str(tmp_path / "r")]
    assert (
        cli.main(
            [
                "bench",
                "task2",
                "--data",
                str(data),
                "--epochs",
                "1",
                "--steps",
                "1",
                "--size",
                "16",
                "--methods",
                "ours,ours_xs,resnet34",
                "--runs-dir",
                str(tmp_path / "runs"),
                *base,
            ]
        )
        == 0
    )
    # a cell is read from the first of its studies that exists (bf16 where trained so, else fp32)
    monkeypatch.setattr(
        frontier,
        "CELLS",
        {"cpu": [(16, 1, ("task2-cpu-16px-1ep-bf16", "task2-cpu-16px-1ep")), (32, 1, ("task2-cpu-32px-1ep",))]},
    )
    calls = []
    real = frontier.measure_model
    monkeypatch.setattr(frontier, "measure_model", lambda *a, **k: calls.append(k["name"]) or real(*a, **k))
    assert cli.main(["bench", "frontier", "--steps", "1", *base]) == 0
    doc = json.loads((tmp_path / "r" / "task2-cpu-frontier.json").read_text())
    md = (tmp_path / "r" / "task2-cpu-frontier.md").read_text()
    assert sorted(calls) == ["resnet34", "shallow", "shallow_xs"]
    cell = doc["cells"]["16px-1ep"]
    task2 = json.loads((tmp_path / "r" / "task2-cpu-16px-1ep.json").read_text())
    assert set(cell["rows"]) == {"ours", "ours_xs", "resnet34"}
    assert cell["missing"] == ["ours_s", "ours_l", "resnet18_lowres", "resnet34_lowres"]
    assert "not in this cell's file yet: ours_s, ours_l, resnet18_lowres, resnet34_lowres." in md
    for k, r in cell["rows"].items():
        assert r["accuracy"] == task2["models"][k]["accuracy"] and r["latency_ms_b1"] > 0 and r["img_s_b64"] > 0
    assert doc["pending"] == ["task2-cpu-32px-1ep.json"]
    # no cell had the fair baseline; a target says which cells judged it
    assert doc["targets"]["ours>=90%_resnet34_lowres"] == {"met": None, "judged_in": []}
    assert doc["targets"]["ours>=resnet34"]["judged_in"] == ["16 px, 1 epoch"]
    assert f"## 16 px, 1 epoch, {task2['models']['ours']['precision']} (`task2-cpu-16px-1ep.json`" in md
    assert "ours>=90%_resnet34_lowres: —," in md
    assert "more accurate beyond noise than a member of ours' family: " in md and "No baseline in" not in md
    ours_only = {**cell, "rows": {k: r for k, r in cell["rows"].items() if k in frontier.OURS}}
    assert "No baseline in this cell's file yet" in frontier.markdown({**doc, "cells": {"16px-1ep": ours_only}})
    assert (tmp_path / "r" / "task2-cpu-frontier.png").stat().st_size > 0
    (table,) = read_tables(md)  # the one cell's rows, fastest at batch 1 first
    assert [r["key"] for r in table] == sorted(cell["rows"], key=lambda k: cell["rows"][k]["latency_ms_b1"])
    assert {r["key"]: r["test acc % (95% CI)"] for r in table} == {
        k: ci(r["accuracy"], r["accuracy_ci"]) for k, r in cell["rows"].items()
    }


def test_frontier_without_any_cell_is_one_line(tmp_path, capsys):
    assert cli.main(["bench", "frontier", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none of the frontier's task2 results files exists yet" in err
    assert "task2-cpu-32px-bf16.json or task2-cpu-32px.json" in err


def test_a_target_judged_in_some_cells_names_them():
    cells = {
        "a": {"size": 32, "epochs": 4, "targets": {"t": True}},
        "b": {"size": 64, "epochs": 4, "targets": {}},
        "c": {"size": 64, "epochs": 12, "targets": {"t": False}},
    }
    assert frontier._every(cells, "t") == {"met": False, "judged_in": ["32 px, 4 epochs", "64 px, 12 epochs"]}
    del cells["c"]["targets"]["t"]
    v = frontier._every(cells, "t")
    assert v["met"] is True
    assert frontier._judged({"cells": cells})("t", v) == " (in 1 of 3 cells run: 32 px, 4 epochs)"
    assert frontier._judged({"cells": {"a": cells["a"]}})("t", v) == ""  # judged in every cell: nothing to add


def test_the_frontier_is_judged_only_where_a_cell_holds_a_baseline_and_ours():
    cells = {
        "a": {"size": 32, "epochs": 4, "rows": {"ours": {}, "resnet34_lowres": {}}, "dominated": []},
        "b": {"size": 32, "epochs": 12, "rows": {"ours": {}, "ours_l": {}}, "dominated": []},  # baselines training
        "c": {"size": 64, "epochs": 4, "rows": {"resnet34": {}}, "dominated": []},
    }
    assert frontier._on_the_frontier(cells) == {"met": True, "judged_in": ["32 px, 4 epochs"]}
    cells["a"]["dominated"] = ["resnet34_lowres over ours"]
    assert frontier._on_the_frontier(cells)["met"] is False
    assert frontier._on_the_frontier({"b": cells["b"]}) == {"met": None, "judged_in": []}

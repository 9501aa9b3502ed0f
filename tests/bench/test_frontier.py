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
    # A second cell at the same size (16 px, 2 epochs: the same file, its budget edited) reuses the
    # 16 px timings; the 32 px cell has not been run.
    one = json.loads((tmp_path / "r" / "task2-cpu-16px-1ep.json").read_text())
    (tmp_path / "r" / "task2-cpu-16px-2ep.json").write_text(json.dumps({**one, "epochs": 2}))
    # beside it a bf16 study of the same cell without ours_xs: the default recipe's file is the one read
    fewer = {k: r for k, r in one["models"].items() if k != "ours_xs"}
    (tmp_path / "r" / "task2-cpu-16px-2ep-bf16.json").write_text(json.dumps({**one, "epochs": 2, "models": fewer}))
    monkeypatch.setattr(frontier, "CELLS", {"cpu": [(16, 1), (16, 2), (32, 1)]})
    calls = []
    real = frontier.measure_model
    monkeypatch.setattr(frontier, "measure_model", lambda *a, **k: calls.append(k["name"]) or real(*a, **k))
    assert cli.main(["bench", "frontier", "--steps", "1", *base]) == 0
    doc = json.loads((tmp_path / "r" / "task2-cpu-frontier.json").read_text())
    md = (tmp_path / "r" / "task2-cpu-frontier.md").read_text()
    assert sorted(calls) == ["resnet34", "shallow", "shallow_xs"]
    assert (
        doc["cells"]["16px-2ep"]["rows"]["ours"]["latency_ms_b1"]
        == doc["cells"]["16px-1ep"]["rows"]["ours"]["latency_ms_b1"]
    )
    cell = doc["cells"]["16px-1ep"]
    task2 = one
    assert set(cell["rows"]) == {"ours", "ours_xs", "resnet34"}
    assert cell["missing"] == ["ours_s", "ours_l", "resnet18_lowres", "resnet34_lowres"]
    assert "not in this cell's file yet: ours_s, ours_l, resnet18_lowres, resnet34_lowres." in md
    for k, r in cell["rows"].items():
        assert r["accuracy"] == task2["models"][k]["accuracy"] and r["latency_ms_b1"] > 0 and r["img_s_b64"] > 0
    # a cell is read from the first of its studies that exists: the default recipe's, else bf16
    assert set(doc["cells"]["16px-2ep"]["rows"]) == set(cell["rows"])
    assert "## 16 px, 2 epochs" in md and "(`task2-cpu-16px-2ep.json`" in md
    assert doc["pending"] == ["task2-cpu-32px-1ep.json or task2-cpu-32px-1ep-bf16.json"]
    # no cell had the fair baseline: not judged, and the line says so cell by cell
    assert doc["targets"]["ours>=90%_resnet34_lowres"] == {
        "met": None,
        "cells": {"16 px, 1 epoch": None, "16 px, 2 epochs": None},
    }
    assert "ours>=90%_resnet34_lowres: — (16 px, 1 epoch: not judged; 16 px, 2 epochs: not judged)" in md
    assert doc["targets"]["ours>=resnet34"]["cells"]["16 px, 1 epoch"] == task2["targets"]["ours_accuracy>=resnet34"]
    assert f"## 16 px, 1 epoch, {task2['models']['ours']['precision']} (`task2-cpu-16px-1ep.json`" in md
    # resnet34 alone does not judge the frontier; the cell says which baselines it lacks
    assert doc["targets"]["ours_on_the_frontier"]["met"] is None
    assert "The frontier is not judged in this cell without resnet18_lowres, resnet34_lowres; of its baselines" in md
    ours_only = {**cell, "rows": {k: r for k, r in cell["rows"].items() if k in frontier.OURS}}
    alone = frontier.markdown({**doc, "cells": {"16px-1ep": ours_only}})
    assert "The frontier is not judged in this cell without resnet18_lowres, resnet34_lowres, resnet34." in alone
    assert (tmp_path / "r" / "task2-cpu-frontier.png").stat().st_size > 0
    table = read_tables(md)[0]  # the first cell's rows, fastest at batch 1 first
    assert [r["key"] for r in table] == sorted(cell["rows"], key=lambda k: cell["rows"][k]["latency_ms_b1"])
    assert {r["key"]: r["test acc % (95% CI)"] for r in table} == {
        k: ci(r["accuracy"], r["accuracy_ci"]) for k, r in cell["rows"].items()
    }


def test_frontier_without_any_cell_is_one_line(tmp_path, capsys):
    assert cli.main(["bench", "frontier", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none of the frontier's task2 results files exists yet" in err
    assert "task2-cpu-32px.json or task2-cpu-32px-bf16.json" in err


def test_a_target_is_met_only_where_every_cell_judged_it():
    cells = {
        "a": {"size": 32, "epochs": 4, "targets": {"t": True}},
        "b": {"size": 64, "epochs": 4, "targets": {}},
        "c": {"size": 64, "epochs": 12, "targets": {"t": False}},
    }
    v = frontier._every(cells, "t")
    assert v == {"met": False, "cells": {"32 px, 4 epochs": True, "64 px, 4 epochs": None, "64 px, 12 epochs": False}}
    assert (
        frontier._per_cell("t", v) == " (32 px, 4 epochs: met; 64 px, 4 epochs: not judged; 64 px, 12 epochs: NOT met)"
    )
    del cells["c"]["targets"]["t"]
    assert frontier._every(cells, "t")["met"] is None  # met where judged, but two cells lack a row it needs
    v = frontier._every({"a": cells["a"]}, "t")
    assert v["met"] is True and frontier._per_cell("t", v) == ""  # met in every cell: nothing to add


def test_the_frontier_is_judged_only_where_a_cell_holds_ours_and_every_baseline():
    every = {b: {} for b in frontier.BASELINES}
    cells = {
        "a": {"size": 32, "epochs": 4, "rows": {"ours": {}, **every}, "dominated": []},
        "b": {"size": 32, "epochs": 12, "rows": {"ours": {}, "resnet34": {}}, "dominated": []},  # low-res training
        "c": {"size": 64, "epochs": 4, "rows": every, "dominated": []},  # no member of ours
    }
    assert frontier._on_the_frontier(cells) == {
        "met": None,
        "cells": {"32 px, 4 epochs": True, "32 px, 12 epochs": None, "64 px, 4 epochs": None},
    }
    assert frontier._on_the_frontier({"a": cells["a"]})["met"] is True
    cells["a"]["dominated"] = ["resnet34_lowres over ours"]
    assert frontier._on_the_frontier(cells)["met"] is False
    # A baseline found above ours fails it even where the cell lacks another baseline.
    cells["a"]["dominated"], cells["b"]["dominated"] = [], ["resnet34 over ours"]
    assert frontier._on_the_frontier(cells)["cells"]["32 px, 12 epochs"] is False
    assert frontier._on_the_frontier(cells)["met"] is False
    lines = frontier._frontier_lines({**cells["c"], "rows": every})
    assert lines[0] == "The frontier is not judged in this cell without a member of ours."


def test_a_cell_file_of_another_budget_or_not_json_is_one_line(tmp_path, capsys):
    (tmp_path / "task2-cpu-32px.json").write_text(
        json.dumps({"models": {}, "commit": "x", "image_size": 32, "epochs": 9})
    )
    assert cli.main(["bench", "frontier", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "task2-cpu-32px.json: trained at 32 px for 9 epochs, not the 32 px, 4-epoch cell" in err
    )
    (tmp_path / "task2-cpu-32px.json").write_text('{"models": {}, "commit": "x",\n "image_size": 32,')
    assert cli.main(["bench", "frontier", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "task2-cpu-32px.json:2: not a results file" in err
    (tmp_path / "task2-cpu-32px.json").write_bytes(b"\xff\xfe{}")
    assert cli.main(["bench", "frontier", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "task2-cpu-32px.json: not a results file (not UTF-8 text)" in err
    doc = {"models": {}, "commit": "x", "image_size": 32, "epochs": 4, "targets": {"ours_accuracy>=resnet34": "met"}}
    (tmp_path / "task2-cpu-32px.json").write_text(json.dumps(doc))
    assert cli.main(["bench", "frontier", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "target 'ours_accuracy>=resnet34' is neither true nor false" in err

"""The task-2 budget sweep from hand-made results files named in a budget table, and bf16 parity
against the fp32 study."""

import json

import numpy as np
import pytest

from prismlab.analysis.report import read_tables
from prismlab.bench.budget import BUDGETS, budget_files, write_budget
from prismlab.bench.task2 import parity

SWEEP = {4: {"file": "task2-cpu"}, 12: {"file": "task2-cpu-12ep"}, 30: {"file": "task2-cpu-30ep"}}


def row(acc, low, high, ratio=None, curve=(0.1, 0.2), precision="fp32"):
    r = {
        "accuracy": acc,
        "accuracy_ci": {"value": acc, "low": low, "high": high},
        "val_acc_per_epoch": list(curve),
        "body_layers": 4,
        "precision": precision,
        "speed_over_resnet34": 2.5,
    }
    if ratio:
        r["accuracy_over_resnet34"], r["accuracy_over_resnet34_ci"] = ratio
    return r


def results(tmp_path, name, epochs, models, targets=None, pending=(), parity=None, machine=None):
    doc = {
        "epochs": epochs,
        "commit": "c" * 40,
        "command": f"prismlab bench task2 --epochs {epochs}",
        "models": models,
        "pending": list(pending),
    }
    if machine is not None:
        doc["machine"] = machine
    if targets is not None:
        doc["targets"] = targets
    if parity is not None:
        doc["parity"] = {"reference": "task2-cpu.json", "differs": "amp=bf16", "ratios": parity}
    (tmp_path / f"{name}.json").write_text(json.dumps(doc))


@pytest.fixture
def sweep(tmp_path):
    met = {"ours_accuracy>=resnet34": True, "ours_infer_speed>=2x_resnet34": True, "ours_body_layers<=4": True}
    results(
        tmp_path,
        "task2-cpu",
        4,
        {"resnet34": row(0.29, 0.26, 0.32), "ours": row(0.39, 0.36, 0.42, (1.34, {"low": 1.2, "high": 1.5}))},
        targets=met,
    )
    results(
        tmp_path,
        "task2-cpu-12ep",
        12,
        {"resnet34": row(0.45, 0.42, 0.48), "ours": row(0.46, 0.43, 0.49, (1.02, {"low": 0.95, "high": 1.09}))},
    )
    results(
        tmp_path,
        "task2-cpu-30ep",
        30,
        {
            "resnet34": row(0.60, 0.57, 0.63, curve=(0.2, 0.4, 0.6)),
            "ours": row(0.50, 0.47, 0.53, (0.83, {"low": 0.78, "high": 0.88}), curve=(0.3, 0.5, 0.5)),
        },
        targets={**met, "ours_accuracy>=resnet34": False},
        machine={"cpu": "Trainer CPU", "cores": 2, "cpu_flags": ["avx2", "avx512f", "avx512bw", "avx512_bf16"]},
    )
    results(tmp_path, "task2-cpu-bf16", 4, {"ours": row(0.1, 0.0, 0.2)})  # another precision: not in the sweep
    results(tmp_path, "task2-gpu", 30, {"ours": row(0.1, 0.0, 0.2)})  # another tier
    return tmp_path


def test_the_sweep_gathers_the_named_files_in_budget_order(sweep):
    assert list(budget_files(sweep, {30: SWEEP[30], 4: SWEEP[4], 12: SWEEP[12]})) == [4, 12, 30]
    assert list(budget_files(sweep, {**SWEEP, 60: {"file": "task2-cpu-60ep"}})) == [4, 12, 30]  # not run yet
    assert all(set(b) <= {"file", "parity"} for t in BUDGETS.values() for b in t.values())


def test_the_budget_table_chart_and_curves(sweep):
    out = write_budget(sweep, "cpu", ["bench", "task2"], SWEEP)
    doc = json.loads(out.read_text())
    assert doc["rows"]["ours"]["30"]["accuracy_over_resnet34"] == 0.83
    assert set(doc["sources"]) == {"4", "12", "30"} and doc["curves_epochs"] == 30
    md = out.with_suffix(".md").read_text()
    ours = {r["key"]: r for r in read_tables(md)[0]}["ours"]
    assert [ours[f"test acc % at {e} ep"] for e in (4, 12, 30)] == [
        "39.0 (36.0–42.0)",
        "46.0 (43.0–49.0)",
        "50.0 (47.0–53.0)",
    ]
    assert ours["acc / ResNet34 % at 4 ep"] == "134.0 (120.0–150.0)"
    # The header names the machine each source trained on, not the one that gathered the table.
    head = md.split("\n\n")[1]
    assert "Machine:" not in head and "`task2-cpu-12ep.json` (commit `cccccccccccc`)," in head
    assert "`task2-cpu-30ep.json` (commit `cccccccccccc`, trained on Trainer CPU (2 cores; " in head
    assert "native bf16; CPU flags: avx2 avx512f avx512bw avx512_bf16)" in head
    # The 12-epoch file has no targets (a partial study, say): that budget is not judged.
    assert doc["targets"]["12"] is None and doc["targets"]["30"]["ours_accuracy>=resnet34"] is False
    assert all(doc["targets"]["4"].values())
    # Each target in each budget: a missing target is "—", never folded into a budget's "met".
    verdicts = {r["target"]: r for r in read_tables(md)[1]}
    assert verdicts["ours_accuracy>=resnet34"] == {
        "target": "ours_accuracy>=resnet34",
        "4 ep": "met",
        "12 ep": "—",
        "30 ep": "NOT met",
    }
    assert verdicts["ours_body_layers<=4"]["30 ep"] == "met"
    for png in ("task2-cpu-budget.png", "task2-cpu-curves.png"):
        assert (sweep / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_target_a_budget_did_not_judge_is_not_met_there(tmp_path):
    """A budget whose study lacks resnet34 judges only the low-res targets: ours>=resnet34 reads —."""
    results(tmp_path, "task2-cpu", 4, {"resnet34": row(0.29, 0.26, 0.32)}, targets={"ours_accuracy>=resnet34": True})
    results(tmp_path, "task2-cpu-12ep", 12, {"ours": row(0.5, 0.4, 0.6)}, targets={"ours>=90%_lowres": True})
    md = write_budget(tmp_path, "cpu", budgets=SWEEP).with_suffix(".md").read_text()
    verdicts = {r["target"]: [r["4 ep"], r["12 ep"]] for r in read_tables(md)[1]}
    assert verdicts == {"ours_accuracy>=resnet34": ["met", "—"], "ours>=90%_lowres": ["—", "met"]}


def test_bench_budget_only_gathers(tmp_path, monkeypatch, capsys):
    from prismlab import cli
    from prismlab.bench import budget

    monkeypatch.setattr(budget, "BUDGETS", {"cpu": SWEEP})
    assert cli.main(["bench", "budget", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fewer than two of the budget files exist yet (task2-cpu.json," in err
    results(tmp_path, "task2-cpu", 4, {"ours": row(0.39, 0.36, 0.42)})
    results(tmp_path, "task2-cpu-12ep", 12, {"ours": row(0.5, 0.4, 0.6)})
    assert cli.main(["bench", "budget", "--results-dir", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "task2-cpu-budget.json").read_text())
    assert doc["command"].startswith("prismlab bench budget") and doc["after_study"] is False
    md = (tmp_path / "task2-cpu-budget.md").read_text()
    assert "; the table gathered from `task2-cpu.json`" in md and "after that command" not in md
    (tmp_path / "task2-cpu-12ep.json").write_text(json.dumps({"models": {}}))
    assert cli.main(["bench", "budget", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "task2-cpu-12ep.json: not a task2 results file (no commit, command)" in err


def test_a_row_keeps_its_colour_in_both_charts(tmp_path, monkeypatch):
    """The curves list the longest study's rows in the order it trained them (ours first, say), the
    budget chart in the order of the first study: a row's colour must not follow either order."""
    import prismlab.bench.budget as budget

    drawn = {}
    for fn in ("plot_budget", "plot_val_curves"):
        real = getattr(budget, fn)
        monkeypatch.setattr(
            budget,
            fn,
            lambda rows, *a, _fn=fn, _real=real: (drawn.__setitem__(_fn, {k: a[-1][k] for k in rows}), _real(rows, *a)),
        )
    results(tmp_path, "task2-cpu", 4, {"resnet34": row(0.29, 0.26, 0.32), "ours": row(0.39, 0.36, 0.42)})
    results(tmp_path, "task2-cpu-12ep", 12, {"ours": row(0.5, 0.47, 0.53), "resnet34": row(0.45, 0.42, 0.48)})
    write_budget(tmp_path, "cpu", budgets=SWEEP)
    assert drawn["plot_budget"] == drawn["plot_val_curves"] and len(set(drawn["plot_budget"].values())) == 2


def test_one_budget_is_no_sweep(tmp_path):
    results(tmp_path, "task2-cpu", 4, {"ours": row(0.39, 0.36, 0.42)})
    assert write_budget(tmp_path, "cpu", budgets=SWEEP) is None


def test_a_bf16_budget_stands_as_named_with_its_rows_paired_against_fp32(tmp_path):
    # The table names the bf16 file for 30 epochs, and the 4-epoch bf16 study that pairs it with fp32;
    # the finished fp32 file of that budget is not read.
    gate = {"ours": {"ratio": 0.99, "low": 0.93, "high": 1.05}, "resnet34": {"ratio": 1.02, "low": 0.94, "high": 1.1}}
    results(tmp_path, "task2-cpu", 4, {"resnet34": row(0.29, 0.26, 0.32), "ours": row(0.39, 0.36, 0.42)})
    results(tmp_path, "task2-cpu-bf16", 4, {k: row(0.3, 0.27, 0.33, precision="bf16") for k in gate}, parity=gate)
    results(tmp_path, "task2-cpu-30ep", 30, {"ours": row(0.61, 0.58, 0.64)})
    results(
        tmp_path,
        "task2-cpu-30ep-bf16",
        30,
        {"resnet34": row(0.55, 0.52, 0.58, precision="bf16"), "ours": row(0.60, 0.57, 0.63, precision="bf16")},
    )
    budgets = {4: {"file": "task2-cpu"}, 30: {"file": "task2-cpu-30ep-bf16", "parity": "task2-cpu-bf16"}}
    out = write_budget(tmp_path, "cpu", budgets=budgets)
    doc, md = json.loads(out.read_text()), out.with_suffix(".md").read_text()
    src = doc["sources"]["30"]
    assert (src["file"], src["precision"]) == ("task2-cpu-30ep-bf16.json", "bf16")
    assert "parity" not in doc["sources"]["4"]
    assert src["parity"] == {"file": "task2-cpu-bf16.json", "ratios": gate}
    assert doc["rows"]["resnet34"]["30"]["accuracy"] == 0.55
    note = next(ln for ln in md.split("\n") if ln.startswith("Precision: "))
    assert note.startswith("Precision: 4 epochs fp32, 30 epochs bf16.")
    assert "ours 99.0 (93.0–105.0), resnet34 102.0 (94.0–110.0)" in note  # the paired figures, as ci() writes them


def test_bf16_parity_pairs_each_row_with_its_fp32_twin():
    rng = np.random.default_rng(0)
    a = rng.random(1000) < 0.4
    bits = lambda c: "".join("1" if v else "0" for v in c)  # noqa: E731
    worse = a.copy()
    worse[np.flatnonzero(a)[:60]] = False  # 6 points lower on the same images: beyond noise
    p = parity(
        {"ours": {"test_correct": bits(a)}, "resnet34": {"test_correct": bits(worse)}},
        {"models": {"ours": {"test_correct": bits(a)}, "resnet34": {"test_correct": bits(a)}}},
        "task2-cpu.json",
        "amp=bf16",
    )
    assert p["ratios"]["ours"] == {"ratio": 1.0, "low": 1.0, "high": 1.0}
    assert p["ratios"]["resnet34"]["high"] < 1.0
    assert p["every_row_within_noise"] is False and p["differs"] == "amp=bf16"

"""The task-2 budget sweep from hand-made results files, and bf16 parity against the fp32 study."""

import json

import numpy as np
import pytest

from prismlab.bench.budget import budget_files, write_budget
from prismlab.bench.task2 import parity


def row(acc, low, high, ratio=None, curve=(0.1, 0.2), precision="fp32"):
    r = {"accuracy": acc, "accuracy_ci": {"value": acc, "low": low, "high": high}, "val_acc_per_epoch": list(curve),
         "body_layers": 4, "precision": precision, "speed_over_resnet34": 2.5}
    if ratio:
        r["accuracy_over_resnet34"], r["accuracy_over_resnet34_ci"] = ratio
    return r


def results(tmp_path, name, epochs, models, targets=None, pending=(), parity=None):
    doc = {"epochs": epochs, "commit": "c" * 40, "command": f"prismlab bench task2 --epochs {epochs}", "models": models,
           "pending": list(pending)}
    if targets is not None:
        doc["targets"] = targets
    if parity is not None:
        doc["parity"] = {"reference": "task2-cpu.json", "differs": "amp=bf16", "ratios": parity}
    (tmp_path / f"{name}.json").write_text(json.dumps(doc))


@pytest.fixture
def sweep(tmp_path):
    met = {"ours_accuracy>=resnet34": True, "ours_infer_speed>=2x_resnet34": True, "ours_body_layers<=4": True}
    results(tmp_path, "task2-cpu", 4, {"resnet34": row(0.29, 0.26, 0.32), "ours": row(0.39, 0.36, 0.42, (1.34, {"low": 1.2, "high": 1.5}))},
            targets=met)
    results(tmp_path, "task2-cpu-12ep", 12, {"resnet34": row(0.45, 0.42, 0.48), "ours": row(0.46, 0.43, 0.49, (1.02, {"low": 0.95, "high": 1.09}))})
    results(tmp_path, "task2-cpu-30ep", 30, {"resnet34": row(0.60, 0.57, 0.63, curve=(0.2, 0.4, 0.6)),
                                             "ours": row(0.50, 0.47, 0.53, (0.83, {"low": 0.78, "high": 0.88}), curve=(0.3, 0.5, 0.5))},
            targets={**met, "ours_accuracy>=resnet34": False})
    results(tmp_path, "task2-cpu-bf16", 4, {"ours": row(0.1, 0.0, 0.2)})  # another precision: not in the sweep
    results(tmp_path, "task2-gpu", 30, {"ours": row(0.1, 0.0, 0.2)})  # another tier
    return tmp_path


def test_the_sweep_gathers_this_tiers_budgets_in_order(sweep):
    assert list(budget_files(sweep, "cpu")) == [4, 12, 30]


def test_the_budget_table_chart_and_curves(sweep):
    out = write_budget(sweep, "cpu", argv=["bench", "task2"])
    doc = json.loads(out.read_text())
    assert doc["rows"]["ours"]["30"]["accuracy_over_resnet34"] == 0.83
    assert set(doc["sources"]) == {"4", "12", "30"} and doc["curves_epochs"] == 30
    md = out.with_suffix(".md").read_text()
    assert "| ours | 39.0 (36.0–42.0) | 46.0 (43.0–49.0) | 50.0 (47.0–53.0) | 134.0 (120.0–150.0) |" in md
    assert "Ours against ResNet34: 4 epochs: above; 12 epochs: level within noise; 30 epochs: below." in md
    # The 12-epoch file has no targets (a partial study, say): that budget is said to be not judged.
    assert ("Targets (ours_accuracy>=resnet34, ours_infer_speed>=2x_resnet34, ours_body_layers<=4) at each budget: "
            "4 epochs: met; 12 epochs: not judged (the study lacks ours or resnet34); "
            "30 epochs: NOT met (ours_accuracy>=resnet34).") in md
    for png in ("task2-cpu-budget.png", "task2-cpu-curves.png"):
        assert (sweep / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_row_keeps_its_colour_in_both_charts(tmp_path, monkeypatch):
    """The curves list the longest study's rows in the order it trained them (ours first, say), the
    budget chart in the order of the first study: a row's colour must not follow either order."""
    import prismlab.bench.budget as budget

    drawn = {}
    for fn in ("plot_budget", "plot_val_curves"):
        real = getattr(budget, fn)
        monkeypatch.setattr(budget, fn, lambda rows, *a, _fn=fn, _real=real: (
            drawn.__setitem__(_fn, {k: a[-1][k] for k in rows}), _real(rows, *a)))
    results(tmp_path, "task2-cpu", 4, {"resnet34": row(0.29, 0.26, 0.32), "ours": row(0.39, 0.36, 0.42)})
    results(tmp_path, "task2-cpu-12ep", 12, {"ours": row(0.5, 0.47, 0.53), "resnet34": row(0.45, 0.42, 0.48)})
    write_budget(tmp_path, "cpu")
    assert drawn["plot_budget"] == drawn["plot_val_curves"] and len(set(drawn["plot_budget"].values())) == 2


def test_one_budget_is_no_sweep(tmp_path):
    results(tmp_path, "task2-cpu", 4, {"ours": row(0.39, 0.36, 0.42)})
    assert write_budget(tmp_path, "cpu") is None


def long_bf16(tmp_path, gate: dict, fp32_pending=("resnet34",)):
    """A sweep whose 30-epoch fp32 study is unfinished (ours only) beside a finished bf16 twin, and
    the 4-epoch bf16 study (the gate) with the given paired ratios."""
    results(tmp_path, "task2-cpu", 4, {"resnet34": row(0.29, 0.26, 0.32), "ours": row(0.39, 0.36, 0.42)})
    results(tmp_path, "task2-cpu-bf16", 4, {k: row(0.3, 0.27, 0.33, precision="bf16") for k in gate}, parity=gate)
    results(tmp_path, "task2-cpu-30ep", 30, {"ours": row(0.61, 0.58, 0.64)}, pending=fp32_pending)
    results(tmp_path, "task2-cpu-30ep-bf16", 30, {"resnet34": row(0.55, 0.52, 0.58, precision="bf16"),
                                                  "ours": row(0.60, 0.57, 0.63, (1.09, {"low": 1.02, "high": 1.16}),
                                                              precision="bf16")})
    out = write_budget(tmp_path, "cpu")
    return json.loads(out.read_text()), out.with_suffix(".md").read_text()


LEVEL = {"ratio": 0.99, "low": 0.93, "high": 1.05}


def test_a_long_bf16_study_stands_for_its_budget_when_the_4_epoch_study_shows_parity(tmp_path):
    doc, md = long_bf16(tmp_path, {"ours": LEVEL, "resnet34": {"ratio": 1.02, "low": 0.94, "high": 1.1}})
    assert doc["sources"]["30"]["file"] == "task2-cpu-30ep-bf16.json" and doc["sources"]["30"]["precision"] == "bf16"
    assert doc["sources"]["4"]["precision"] == "fp32" and doc["rows"]["resnet34"]["30"]["accuracy"] == 0.55
    assert doc["bf16_gate"]["file"] == "task2-cpu-bf16.json"
    assert ("Precision: 4 epochs fp32, 30 epochs bf16. The 30-epoch rows come from `task2-cpu-30ep-bf16.json`: the "
            "fp32 study of that budget is unfinished, and `task2-cpu-bf16.json` shows bf16 level with fp32 within "
            "noise at the 4-epoch preset for each of them (accuracy bf16 / fp32 %, paired 95% CI: "
            "ours 99.0 (93.0–105.0), resnet34 102.0 (94.0–110.0)).") in md


@pytest.mark.parametrize("gate, fp32_pending, why", [
    ({"ours": LEVEL, "resnet34": {"ratio": 0.9, "low": 0.84, "high": 0.97}}, ("resnet34",),
     "at the 4-epoch preset bf16 is not shown level with fp32 for resnet34"),
    ({"ours": LEVEL}, ("resnet34",), "the 4-epoch bf16 study does not pair resnet34 with fp32"),
    ({"ours": LEVEL, "resnet34": {"ratio": 1.0, "low": None, "high": None}}, ("resnet34",),
     "at the 4-epoch preset bf16 is not shown level with fp32 for resnet34"),
    ({"ours": LEVEL, "resnet34": LEVEL}, (), "the fp32 study of this budget is finished"),
])
def test_a_long_bf16_study_is_passed_over_and_the_reason_given(tmp_path, gate, fp32_pending, why):
    doc, md = long_bf16(tmp_path, gate, fp32_pending)
    assert doc["sources"]["30"]["file"] == "task2-cpu-30ep.json" and "bf16_gate" not in doc
    assert f"At 30 epochs, `task2-cpu-30ep-bf16.json` not used: {why}." in md


def test_bf16_parity_pairs_each_row_with_its_fp32_twin():
    rng = np.random.default_rng(0)
    a = rng.random(1000) < 0.4
    bits = lambda c: "".join("1" if v else "0" for v in c)  # noqa: E731
    worse = a.copy()
    worse[np.flatnonzero(a)[:60]] = False  # 6 points lower on the same images: beyond noise
    p = parity({"ours": {"test_correct": bits(a)}, "resnet34": {"test_correct": bits(worse)}},
               {"models": {"ours": {"test_correct": bits(a)}, "resnet34": {"test_correct": bits(a)}}}, "task2-cpu.json",
               "amp=bf16")
    assert p["ratios"]["ours"] == {"ratio": 1.0, "low": 1.0, "high": 1.0}
    assert p["ratios"]["resnet34"]["high"] < 1.0
    assert p["every_row_within_noise"] is False and p["differs"] == "amp=bf16"

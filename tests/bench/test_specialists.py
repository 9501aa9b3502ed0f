"""Task 1's yardstick on hand-made per-image scores: the specialist ratio and its paired interval."""

import numpy as np
import pytest

from prismlab.analysis.stats import to_bits
from prismlab.bench.specialists import add_specialist_ratios
from prismlab.bench.task1 import ABLATION, METHODS, STEPS, naive_of, targets
from prismlab.channels import ALL_SUBSETS


def scores(acc: float, n: int = 1000, shift: int = 0) -> str:
    c = np.zeros(n, dtype=bool)
    c[shift : shift + int(acc * n)] = True
    return to_bits(c)


def test_each_subset_is_paired_with_its_own_specialist():
    rows = {
        "naive": {"test_correct": {s: scores(0.40) for s in ALL_SUBSETS}},
        **{f"diy_{s}": {"test_correct": {s: scores(0.30)}} for s in ALL_SUBSETS if s != "RGB"},
        "ours": {"test_correct": {**{s: scores(0.30) for s in ALL_SUBSETS}, "RGB": scores(0.36), "R": scores(0.36)}},
    }
    add_specialist_ratios(rows, naive_of)
    r = rows["ours"]["specialist_ratio"]
    assert r["RGB"]["specialist"] == "naive" and r["RGB"]["ratio"] == pytest.approx(0.9)
    assert r["R"]["specialist"] == "diy_R" and r["R"]["ratio"] == pytest.approx(1.2)
    assert r["G"]["ratio"] == 1.0 and (r["G"]["low"], r["G"]["high"]) == (1.0, 1.0)  # the same images right
    assert rows["ours"]["min_specialist_ratio"] == pytest.approx(0.9)
    # 36% vs 40% with ours' correct images a subset of naive's: below beyond noise; R above, G level.
    assert rows["ours"]["below_specialist_beyond_noise"] == ["RGB"]
    assert "specialist_ratio" not in rows["diy_R"]


def test_the_shallow_rows_take_the_naive_shallow_net_as_the_rgb_specialist():
    assert naive_of("ours_shallow") == "naive_shallow" and naive_of("ours") == "naive"
    rows = {
        "naive": {"test_correct": {"RGB": scores(0.5)}},
        "naive_shallow": {"test_correct": {"RGB": scores(0.6)}},
        "ours_shallow": {"test_correct": {"RGB": scores(0.6)}},
    }
    add_specialist_ratios(rows, naive_of)
    assert rows["ours_shallow"]["specialist_ratio"]["RGB"]["ratio"] == 1.0


def test_the_target_names_its_subsets_when_not_all_eight_specialists_ran():
    ratio = {"ratio": 1.01, "low": 0.9, "high": 1.1}
    ours = {
        "results": {"RGB": {"accuracy": 0.5}},
        "flops_overhead": 0.0,
        "params_overhead": 0.0,
        "specialist_ratio": {s: ratio for s in ALL_SUBSETS},
        "min_specialist_ratio": 1.01,
    }
    naive = {"results": {"RGB": {"accuracy": 0.5}}}
    assert targets({"ours": ours, "naive": naive})["min_specialist_ratio>=1.00"] is True
    ours["specialist_ratio"] = {s: ratio for s in ("RGB", "RB", "R", "B")}
    ours["min_specialist_ratio"] = 0.99
    got = targets({"ours": ours, "naive": naive})
    assert "min_specialist_ratio>=1.00" not in got and got["min_specialist_ratio>=1.00 (RGB/RB/R/B)"] is False
    ours["specialist_ratio"] = {"RGB": ratio}  # naive alone: only the RGB target
    assert not any(k.startswith("min_specialist") for k in targets({"ours": ours, "naive": naive}))


def test_each_ablation_step_is_one_design_change():
    def changed(a, b):
        x, y = METHODS[a].overrides(), METHODS[b].overrides()
        keys = {k for k in x.keys() | y.keys() if x.get(k) != y.get(k)}
        if "model_kw" in keys:  # name the model key that changed
            keys = (keys - {"model_kw"}) | {
                f"model_kw.{k}"
                for k in x["model_kw"].keys() | y["model_kw"].keys()
                if x["model_kw"].get(k) != y["model_kw"].get(k)
            }
        return keys

    assert {change: changed(a, b) for change, a, b in STEPS} == {
        "the RGB view": {"rgb_view"},
        "distillation from the RGB view": {"view_distill"},
        "per-subset BatchNorm statistics": {"model_kw.subset_bn"},
        "distillation weight 2": {"view_distill"},
        "adapter width 16 (shared statistics)": {"model_kw.adapter_kw"},
        "the linear path alone (shared statistics)": {"model_kw.adapter_kw"},
        "per-subset BatchNorm statistics, shallow net": {"model_kw.subset_bn"},
    }
    assert set(ABLATION) == {
        "ours_v1",
        "ours_rgb_view",
        "ours_shared_bn",
        "ours_distill2",
        "ours_wide16",
        "ours_linear",
        "ours_shallow_shared_bn",
    }
    assert METHODS["ours_shallow"].train == METHODS["ours"].train and METHODS["ours"].model_kw == (("subset_bn", True),)


def test_the_ablation_table_gives_what_each_change_buys_on_the_same_images():
    from prismlab.analysis.report import read_tables
    from prismlab.bench.results import table
    from prismlab.bench.task1 import ABLATION_COLS, ablation

    without = {s: scores(0.30) for s in ALL_SUBSETS}
    with_it = {**without, "RGB": scores(0.36), "R": scores(0.25)}  # +6 points on RGB, -5 on R, the same elsewhere
    rows = {
        "ours_shared_bn": {"test_correct": without},
        "ours": {"test_correct": with_it},
        "naive": {"test_correct": {s: scores(0.5) for s in ALL_SUBSETS}},
    }
    steps = ablation(rows)
    assert [(st["from"], st["to"]) for st in steps] == [("ours_shared_bn", "ours")]  # only steps with both rows
    d = steps[0]["diff"]
    assert d["RGB"]["diff"] == pytest.approx(0.06) and d["R"]["diff"] == pytest.approx(-0.05)
    assert d["G"] == {"diff": 0.0, "low": 0.0, "high": 0.0}
    (row,) = read_tables(table(ABLATION_COLS, [("", st) for st in steps]))[0]
    assert (row["change"], row["rows"]) == ("per-subset BatchNorm statistics", "ours_shared_bn → ours")
    assert row["RGB"].startswith("+6.0 (") and row["G"] == "+0.0 (+0.0 to +0.0)"
    assert (row["gain beyond noise"], row["loss beyond noise"]) == ("RGB", "R")
    assert ablation({"ours_v1": {"test_correct": without}}) == []

"""bench seeds on hand-made task1 results files: seed means, their intervals and the ratios."""

import json

import numpy as np
import pytest

from prismlab import cli
from prismlab.analysis.report import ci, read_tables
from prismlab.analysis.stats import to_bits
from prismlab.channels import ALL_SUBSETS

N = 400


def task1_doc(seed: int, rates: dict[str, float], pending=()) -> dict:
    """A task1 results file whose rows score `rate` on every subset (each image drawn per seed)."""
    rng = np.random.default_rng(seed)
    subsets = lambda row: ALL_SUBSETS if not row.startswith("diy_") else [row[4:]]  # noqa: E731
    return {
        "command": "prismlab bench task1",
        "commit": f"{seed:040d}",
        "seed": seed,
        "pending": list(pending),
        "methods": {
            row: {"test_correct": {s: to_bits(rng.random(N) < rate) for s in subsets(row)}}
            for row, rate in rates.items()
        },
    }


def write(results, name, doc):
    results.mkdir(exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(doc))


def run(results, *extra):
    return cli.main(["bench", "seeds", "--results-dir", str(results), *extra])


def specialists(rate):
    return {"naive": rate, **{f"diy_{s}": rate for s in ALL_SUBSETS if s != "RGB"}}


def test_seeds_are_read_together_and_a_failed_seed_shows(tmp_path, capsys):
    results = tmp_path / "results"
    write(results, "task1-cpu", task1_doc(0, {"ours": 0.7, **specialists(0.6)}))
    write(results, "task1-cpu-seed1", task1_doc(1, {"ours": 0.7, **specialists(0.6)}))
    write(results, "task1-cpu-seed2", task1_doc(2, {"ours": 0.7}, pending=["naive"]))
    assert run(results) == 0
    doc = json.loads((results / "task1-cpu-seeds.json").read_text())
    ours, naive = doc["methods"]["ours"], doc["methods"]["naive"]
    assert ours["seeds"] == [0, 1, 2] and naive["seeds"] == [0, 1]
    assert ours["results"]["RGB"]["value"] == pytest.approx(0.7, abs=0.04) and ours["results"]["RGB"]["seeds"] == 3
    assert set(ours["specialist_ratio"]) == set(ALL_SUBSETS)
    assert ours["min_specialist_ratio"] > 1.0 and ours["below_specialist_beyond_noise"] == []
    assert doc["targets"] == {
        "ours_seeds>=3": True,
        "ours_seed_mean_min_specialist_ratio>=1.00": True,
        "ours_none_below_a_specialist_beyond_noise": True,
    }
    assert doc["files"]["2"] == {"file": "task1-cpu-seed2.json", "commit": f"{2:040d}", "pending": ["naive"]}
    table = {r["row"]: r for r in read_tables((results / "task1-cpu-seeds.md").read_text())[0]}
    assert (table["ours"]["seeds"], table["naive"]["seeds"]) == ("0,1,2", "0,1")
    assert table["ours"]["RGB"] == ci(ours["results"]["RGB"]["value"], ours["results"]["RGB"])
    # A seed of ours that failed: its mean drops and the interval opens to the seeds' spread.
    write(results, "task1-cpu-seed3", task1_doc(3, {"ours": 0.0}))
    assert run(results) == 0
    failed = json.loads((results / "task1-cpu-seeds.json").read_text())["methods"]["ours"]
    width = lambda r: r["high"] - r["low"]  # noqa: E731
    assert failed["results"]["R"]["value"] < 0.56 and width(failed["results"]["R"]) > 3 * width(ours["results"]["R"])
    assert failed["below_specialist_beyond_noise"] == [] and failed["min_specialist_ratio"] < 1.0


def test_a_shallow_row_is_held_against_the_shallow_naive_net_on_rgb(tmp_path):
    results = tmp_path / "results"
    rates = {"ours_shallow": 0.6, "naive_shallow": 0.3, **specialists(0.6)}
    write(results, "task1-cpu", task1_doc(0, rates))
    doc = task1_doc(1, rates)
    doc["methods"]["ours_shallow"] = {"pending": True}  # a row without scores in a seed's file is not its seed
    write(results, "task1-cpu-seed1", doc)
    assert run(results) == 0
    rows = json.loads((results / "task1-cpu-seeds.json").read_text())["methods"]
    rgb = rows["ours_shallow"]["specialist_ratio"]["RGB"]
    assert rgb["specialist"] == "naive_shallow" and rgb["ratio"] == pytest.approx(2.0, rel=0.2)
    assert rows["ours_shallow"]["seeds"] == [0] and rows["naive"]["seeds"] == [0, 1]
    assert "RGB" not in rows["naive"]["specialist_ratio"]  # naive is RGB's specialist: no ratio with itself


def test_without_any_file_it_is_one_line(tmp_path, capsys):
    assert run(tmp_path) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no task1 results file for any seed (task1-cpu.json, task1-cpu-seed1.json" in err
    (tmp_path / "task1-cpu-seed1.json").write_text('{"methods": {}}')
    assert run(tmp_path) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "task1-cpu-seed1.json: not a task1 results file (no commit)" in err


def test_ours_is_held_against_every_literature_row_on_every_subset(tmp_path):
    results = tmp_path / "results"
    target = "ours>=every_literature_row_on_every_subset"

    def judged(doc: dict | None = None, seed: int = 1) -> dict:
        """The seeds study's targets after writing `doc` as that seed's file."""
        if doc is not None:
            write(results, f"task1-cpu-seed{seed}", doc)
        assert run(results) == 0
        return json.loads((results / "task1-cpu-seeds.json").read_text())["targets"]

    write(results, "task1-cpu", task1_doc(0, {"ours": 0.7, **specialists(0.7)}))
    assert target not in judged()  # no literature row: not judged
    doc = task1_doc(1, {"ours": 0.7, "slice_param": 0.5, "hypernet": 0.5, **specialists(0.7)})
    # Above the two rows that ran, but the others have not: not judged, and the page names them.
    assert judged(doc)[target] is None
    md = (results / "task1-cpu-seeds.md").read_text()
    assert "ours>=every_literature_row_on_every_subset: —" in md
    assert "Literature rows not scored at any seed yet: template_mixing, target_param, bag_of_channels" in md
    for k in ("template_mixing", "target_param", "bag_of_channels", "channelvit", "vit_hcs"):
        doc["methods"][k] = {**doc["methods"]["slice_param"]}
    assert judged(doc)[target] is True
    # One literature row above ours on one subset is enough to miss it.
    doc["methods"]["hypernet"]["test_correct"]["B"] = to_bits(np.ones(N, bool))
    assert judged(doc)[target] is False

"""The READMEs' results are copies of the results files that `prismlab bench` wrote: README.md's headline
tables are computed from the results JSON, benchmarks/README.md holds every study's results file."""

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("fill_readme", ROOT / "benchmarks" / "fill_readme.py")
fill_readme = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fill_readme)
RESULTS = ROOT / "benchmarks" / "results"


@pytest.mark.parametrize("path", sorted(fill_readme.TARGETS), ids=lambda p: str(p.relative_to(ROOT)))
def test_readme_results_are_the_results_files(path):
    text = path.read_text()
    assert fill_readme.fill(text, RESULTS, fill_readme.TARGETS[path]) == text, (
        f"{path.relative_to(ROOT)}: results differ from benchmarks/results: run python benchmarks/fill_readme.py"
    )


def test_each_readme_holds_its_results():
    readme = (ROOT / "README.md").read_text()
    assert fill_readme.HEADLINE.search(readme) and "| ours |" in readme
    page = (ROOT / "benchmarks" / "README.md").read_text()
    names = [m["name"] for m in fill_readme.BLOCK.finditer(page)]
    assert "task1-cpu" in names and "task2-cpu" in names
    assert "](results/task1-cpu-subsets.png)" in page and "benchmarks/results/task1-cpu-subsets.png" not in page


def test_a_changed_results_file_shows_up_as_a_difference(tmp_path):
    (tmp_path / "x.md").write_text("# X\n\nold ![c](x.png)\n\n## A cell\n\nrows\n")
    text = "intro\n<!-- results:x -->\nstale\n<!-- /results:x -->\nend\n"
    filled = fill_readme.fill(text, tmp_path)
    assert "### X\n\nold ![c](benchmarks/results/x.png)" in filled and "stale" not in filled
    assert "\n#### A cell\n" in filled  # every heading two levels down: the block sits under a level-2 one
    assert fill_readme.fill(filled, tmp_path) == filled
    beside = fill_readme.fill(text, tmp_path, "results/")  # a README beside results/
    assert "old ![c](results/x.png)" in beside and "(from [`results/x.md`](results/x.md))" in beside
    (tmp_path / "x.md").write_text("# X\n\nnew\n")
    assert fill_readme.fill(filled, tmp_path) != filled


def test_the_model_cards_stay_in_the_results_file(tmp_path):
    (tmp_path / "x.md").write_text("# X\n\nrows\n\n## Model cards\n\n### `shallow` (model)\n\ncard text\n")
    filled = fill_readme.fill("<!-- results:x -->\n<!-- /results:x -->\n", tmp_path)
    assert "rows" in filled and "card text" not in filled
    assert "Model cards of these rows: in [`x.md`](benchmarks/results/x.md)." in filled
    beside = fill_readme.fill("<!-- results:x -->\n<!-- /results:x -->\n", tmp_path, "results/")
    assert "Model cards of these rows: in [`x.md`](results/x.md)." in beside


def test_the_headline_is_computed_from_the_results_json(tmp_path):
    for name in fill_readme.HEADLINE_FILES:
        shutil.copy(RESULTS / name, tmp_path / name)
    text = "intro\n<!-- headline -->\nstale\n<!-- /headline -->\nend\n"
    filled = fill_readme.fill(text, tmp_path)
    assert "stale" not in filled and fill_readme.fill(filled, tmp_path) == filled
    seeds = json.loads((tmp_path / "task1-cpu-seeds.json").read_text())
    rgb = seeds["methods"]["ours"]["results"]["RGB"]["value"]
    assert f"| ours | {len(seeds['methods']['ours']['seeds'])} | {100 * rgb:.1f} |" in filled
    seeds["methods"]["ours"]["results"]["RGB"]["value"] = rgb + 0.1
    (tmp_path / "task1-cpu-seeds.json").write_text(json.dumps(seeds))
    assert fill_readme.fill(filled, tmp_path) != filled


def test_the_readmes_and_docs_link_to_files_that_exist():
    pages = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to a missing {target}"


def test_the_docs_list_every_bench_study_with_its_flags():
    """docs/training.md's table of studies names each study and each of its flags (a row may take
    those of another study), so a flag added to the CLI cannot go undocumented."""
    import argparse

    from prismlab import cli

    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    bench = next(a for a in sub.choices["bench"]._actions if isinstance(a, argparse._SubParsersAction))
    text = (ROOT / "docs" / "training.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| (.*) \|$", text.split("### `prismlab bench`")[1], re.M))
    assert set(rows) == set(bench.choices)
    for study, parser in bench.choices.items():
        documented = rows[study] + "".join(rows[o] for o in re.findall(r"those of `(\w+)`", rows[study]))
        flags = {o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
        assert {f for f in flags if f"`{f}" not in documented} == set(), study

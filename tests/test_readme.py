"""The README's results are copies of the results files that `prismlab bench` wrote."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("fill_readme", ROOT / "benchmarks" / "fill_readme.py")
fill_readme = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fill_readme)


def test_readme_results_are_the_results_files(tmp_path):
    readme = (ROOT / "README.md").read_text()
    names = [m["name"] for m in fill_readme.BLOCK.finditer(readme)]
    assert "task1-cpu" in names and "task2-cpu" in names
    assert fill_readme.fill(readme, ROOT / "benchmarks" / "results") == readme, \
        "README results differ from benchmarks/results: run python benchmarks/fill_readme.py"


def test_a_changed_results_file_shows_up_as_a_difference(tmp_path):
    (tmp_path / "x.md").write_text("# X\n\nold ![c](x.png)\n")
    text = "intro\n<!-- results:x -->\nstale\n<!-- /results:x -->\nend\n"
    filled = fill_readme.fill(text, tmp_path)
    assert "### X\n\nold ![c](benchmarks/results/x.png)" in filled and "stale" not in filled
    assert fill_readme.fill(filled, tmp_path) == filled
    (tmp_path / "x.md").write_text("# X\n\nnew\n")
    assert fill_readme.fill(filled, tmp_path) != filled


def test_the_model_cards_stay_in_the_results_file(tmp_path):
    (tmp_path / "x.md").write_text("# X\n\nrows\n\n## Model cards\n\n### `shallow` (model)\n\ncard text\n")
    filled = fill_readme.fill("<!-- results:x -->\n<!-- /results:x -->\n", tmp_path)
    assert "rows" in filled and "card text" not in filled
    assert "Model cards of these rows: in [`x.md`](benchmarks/results/x.md)." in filled

"""analysis/report.py: the formatting helpers, and `write_report` on hand-made run folders."""

import pytest

from prismlab.analysis.report import beyond_noise, ci, md_table, pct, read_tables, write_report
from prismlab.engine.config import make_config
from prismlab.engine.rundir import STAMP, RunDir


def test_formatting_helpers():
    assert pct(0.3925) == "39.2" and pct(None) == "—"
    assert ci(0.392, {"low": 0.362, "high": 0.423}) == "39.2 (36.2–42.3)"
    assert ci(1.02, {"low": 0.95, "high": 1.1}, scale=1, fmt="{:.2f}") == "1.02 (0.95–1.10)"
    assert ci(0.5, {"low": None}) == "50.0" and ci(None, None) == "—"
    assert [beyond_noise({"low": a, "high": b}) for a, b in ((1.1, 1.3), (0.7, 0.9), (0.9, 1.1))] == [
        "above",
        "below",
        "level within noise",
    ]
    assert beyond_noise(None) == "—"
    assert md_table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |"
    md = "# t\n\n" + md_table(["a", "b"], [[1, "x"], ["—", ""]]) + "\n\ntext\n\n" + md_table(["c"], [])
    assert read_tables(md) == [[{"a": "1", "b": "x"}, {"a": "—", "b": ""}], []]


def make_run(path, test: dict | None, epochs=2):
    cfg = make_config(overrides={"data": "d", "out": str(path), "epochs": epochs, "lr": 0.05})
    run = RunDir(path)
    run.start(cfg)
    run.write_metrics(
        [{"epoch": e + 1, "train_loss": 1.0 / (e + 1), "train_acc": 0.5, "val_acc": 0.4} for e in range(epochs)]
    )
    if test:
        run.write_test(
            {
                "checkpoint": str(path / "best.pt"),
                "split": "d/test.txt",
                "n": 8,
                "size": 32,
                "precision": "fp32",
                "skipped": [],
                "results": test,
            }
        )
    return path


def test_report_tables_and_images(tmp_path):
    a = make_run(
        tmp_path / "a",
        {"RGB": {"accuracy": 0.625, "loss": 1.23456, "n": 8}, "R": {"accuracy": 0.25, "loss": 2.0, "n": 8}},
    )
    b = make_run(tmp_path / "b", None, epochs=1)  # unfinished: no test report
    out = write_report([a, b], tmp_path / "rep" / "report.md")
    text = out.read_text()
    assert text.startswith(
        "# prismlab report\n\n## Test accuracy (%) per channel subset\n\n"
        "| run | RGB | R | mean |\n|---|---|---|---|\n| a | 62.5 | 25.0 | 43.8 |\n"
    )
    assert "| b |" not in text.split("## Run")[0]  # only finished runs are in the summary
    assert f"## Run `a`\n\nFolder: `{a}`\n" in text and f"## Run `b`\n\nFolder: `{b}`\n" in text
    assert "| epochs | `2` |" in text and "| epochs | `1` |" in text and "| lr | `0.05` |" in text
    assert (
        "Test split `d/test.txt` (8 images):\n\n| subset | n | accuracy (%) | loss |\n|---|---|---|---|\n"
        "| RGB | 8 | 62.5 | 1.235 |\n| R | 8 | 25.0 | 2.000 |\n" in text
    )
    assert text.count("Test split") == 1
    pngs = sorted(p.name for p in out.parent.glob("*.png"))
    assert pngs == ["report-a-curves.png", "report-b-curves.png", "report-subsets.png"]
    assert all(f"]({name})" in text for name in pngs)


def test_report_refuses_a_folder_of_another_format(tmp_path):
    from prismlab.engine.rundir import FormatError

    run = make_run(tmp_path / "a", None)
    (run / STAMP).unlink()
    with pytest.raises(FormatError, match=f"{run}: no format stamp"):
        write_report([run], tmp_path / "report.md")

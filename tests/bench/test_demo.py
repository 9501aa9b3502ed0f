"""`prismlab demo`: both studies for one epoch on a synthetic set of exactly one demo batch (64 training
images), and a report whose tables and images are all there."""

import json
import re

import pytest

from prismlab import cli
from prismlab.bench import task1
from prismlab.bench.demo import TASK2_MODELS, run_demo
from prismlab.channels import ALL_SUBSETS
from prismlab.data.synth import make_synthetic


def test_demo_writes_a_report_with_both_tables_and_its_images(tmp_path):
    data = make_synthetic(
        tmp_path / "data", seed=2, num_classes=4, train_per_class=16, val_per_class=2, test_per_class=2, size=24
    )
    report = run_demo(data=data, out=tmp_path / "demo", epochs=1)
    assert report == tmp_path / "demo" / "report.md"
    md = report.read_text()

    assert "## Task 1: any-channel convolution (demo tier)" in md
    assert "| method | " + " | ".join(ALL_SUBSETS) + " |" in md
    for method in task1.DEFAULT:
        assert f"\n| {method} | " in md
    assert "## Task 2: shallow networks vs ResNet34 (demo tier)" in md and "| key | model | test acc % (95% CI) |" in md
    for key in TASK2_MODELS:
        assert f"\n| {key} | " in md
    assert "1 epochs at 32x32" in md and "1 epochs at 64x64" in md  # --epochs reached both studies

    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    # the subset chart and one training-curve plot per run (3 methods + 2 models)
    assert len(links) == 1 + len(task1.DEFAULT) + len(TASK2_MODELS)
    for link in links:
        png = report.parent / link
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", link


def test_demo_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for flag in ("--data", "--out", "--epochs"):
        assert flag in out


def test_bench_demo_times_the_demo_from_an_empty_cache(tmp_path, monkeypatch):
    data = make_synthetic(
        tmp_path / "data", seed=2, num_classes=4, train_per_class=16, val_per_class=2, test_per_class=2, size=24
    )
    cache = tmp_path / "my-cache"
    monkeypatch.setenv("PRISMLAB_CACHE", str(cache))
    argv = ["bench", "demo", "--data", str(data), "--epochs", "1", "--results-dir", str(tmp_path / "results")]
    assert cli.main(argv) == 0
    doc = json.loads((tmp_path / "results" / "demo.json").read_text())
    md = (tmp_path / "results" / "demo.md").read_text()
    assert doc["command"] == "prismlab " + " ".join(argv) and doc["rows"] == len(task1.DEFAULT) + len(TASK2_MODELS)
    assert doc["seconds"] > 0 and f"in {doc['seconds'] / 60:.1f} min." in md and "--epochs 1" in md
    assert not cache.exists()  # the demo ran on a cache of its own, not the caller's

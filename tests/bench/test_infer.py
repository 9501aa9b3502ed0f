"""`prismlab bench infer` through cli.main, for the shallow net with one timed batch and a few batch-1
calls (the study's 200 are patched down here): the results file's shape, the runtimes that cannot run
here named with a reason, and a runtime that crashes its process costing its row only. The figures
themselves are not checked: timings come from the bench, never from tests."""

import importlib.util
import json
import shlex
import sys

import pytest

from prismlab import cli
from prismlab.analysis.report import read_tables
from prismlab.bench import infer
from prismlab.deploy.runtimes import RUNTIMES

HAVE_ORT = all(importlib.util.find_spec(p) for p in ("onnx", "onnxscript", "onnxruntime"))


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setattr(infer, "CALLS", 5)
    monkeypatch.setattr(infer, "cpu_has_native_bf16", lambda: False)


def run_infer(tmp_path, capsys, *extra):
    argv = ["bench", "infer", "--methods", "ours", "--steps", "1", "--results-dir", str(tmp_path), *extra]
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads((tmp_path / "infer-cpu.json").read_text())
    return argv, doc, (tmp_path / "infer-cpu.md").read_text(), out


def test_infer_writes_the_documented_results(quick, tmp_path, capsys):
    argv, doc, md, out = run_infer(tmp_path, capsys)
    assert doc["command"] == "prismlab " + shlex.join(argv) and doc["commit"] and doc["machine"]["cores"] >= 1
    assert doc["image_size"] == 64 and doc["batch"] == 64 and doc["timed_calls"] == 5 and doc["threads"] == 1
    assert list(doc["models"]) == ["ours"] and doc["pending"] == [] and doc["targets"] == {}
    row = doc["models"]["ours"]
    table = {r["runtime"]: r for r in read_tables(md)[0]}
    assert row["model"] == "shallow" and isinstance(row["flops"], int) and row["flops"] > 100e6
    measured = ["pytorch_fp32", "pytorch_channels_last"] + (["onnxruntime"] if HAVE_ORT else [])
    assert list(row["runtimes"]) == measured
    assert set(row["runtimes"]) | set(row["not_run"]) == set(RUNTIMES)
    assert "no native bf16" in row["not_run"]["pytorch_channels_last_bf16"]
    if not HAVE_ORT:
        assert "not installed" in row["not_run"]["onnxruntime"]
    for name, r in row["runtimes"].items():
        assert r["img_s_b64"] > 0 and 0 < r["latency_ms_b1_median"] <= r["latency_ms_b1_p90"]
        assert r["gflop_s_b64"] == pytest.approx(row["flops"] * r["img_s_b64"] / 1e9)
        assert r["max_abs_diff_vs_pytorch_fp32"] <= 1e-4, name  # every fp32 runtime computes the same logits
        assert table[name]["img/s (batch 64)"] == f"{r['img_s_b64']:.0f}" and table[name]["model"] == "shallow"
        if name.startswith("pytorch"):  # where the time goes: the shallow net is mostly convolution
            s = r["time_share_b64"]
            assert set(s) == {"conv", "pool", "other"} and sum(s.values()) == pytest.approx(1.0)
            assert s["conv"] > max(s["pool"], s["other"]) and s["pool"] > 0, s
        else:
            assert r["time_share_b64"] is None
    assert row["best_b64"] in measured and row["best_b1"] in measured
    assert f"pytorch_channels_last_bf16 {row['not_run']['pytorch_channels_last_bf16']}" in md and md in out


def test_a_runtime_that_crashes_its_process_costs_its_row_only(quick, tmp_path, capsys, monkeypatch):
    crash = "import os, sys; sys.stderr.write('double free or corruption (out)\\n'); sys.stderr.flush(); os.abort()"
    monkeypatch.setattr(infer, "WORKER", [sys.executable, "-c", crash])
    _, doc, md, _ = run_infer(tmp_path, capsys)
    row = doc["models"]["ours"]
    assert row["runtimes"] == {} and "best_b64" not in row
    for runtime, why in row["not_run"].items():
        if runtime != "pytorch_channels_last_bf16" and (HAVE_ORT or runtime != "onnxruntime"):
            assert why == "not run: its process crashed (killed by SIGABRT: double free or corruption (out))"
    assert read_tables(md)[0] == [] and f"pytorch_fp32 {row['not_run']['pytorch_fp32']}" in md


def test_an_unknown_infer_row_is_one_line(tmp_path, capsys):
    assert cli.main(["bench", "infer", "--results-dir", str(tmp_path), "--methods", "vgg"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prismlab: error: ") and err.count("\n") == 1 and "unknown infer method 'vgg'" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extra", [["--tier", "gpu"], ["--epochs", "3"]], ids=["gpu-tier", "epochs"])
def test_infer_refuses_what_it_does_not_take(extra, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:  # CPU runtimes only, and nothing trained
        cli.main(["bench", "infer", "--results-dir", str(tmp_path), *extra])
    assert e.value.code == 2 and extra[0] in capsys.readouterr().err and list(tmp_path.iterdir()) == []


def test_throughput_times_exactly_the_calls_asked_for():
    """The one timing loop behind every inference figure: warm-up calls are not timed, `steps` calls
    are, and without `steps` it runs at least 3 calls and at least `seconds`."""
    from prismlab.deploy.runtimes import throughput

    calls = []
    img_s = throughput(calls.append, "x", batch=8, steps=5, warmup=2)
    assert len(calls) == 7 and img_s > 0
    calls.clear()
    throughput(calls.append, "x", batch=8, seconds=0.0, warmup=0)
    assert len(calls) == 3

"""DDP on CPU: two real gloo processes under torchrun train one epoch of the tiny set."""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from prismlab.engine import evaluate
from prismlab.engine.evaluate import evaluate_checkpoint
from prismlab.engine.rundir import RunDir

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="this torch build has no gloo backend"
)


def torchrun(data, out, *keys) -> subprocess.CompletedProcess:
    """`prismlab train` for one epoch of the tiny set on two gloo ranks."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "prismlab",
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "epochs=1",
        "image_size=24",
        "batch_size=16",
        *keys,
    ]
    # gloo on CPU even where a GPU is present (one GPU could not host two ranks).
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=out.parent, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("epoch 1/1 ") == 1  # only rank 0 reports
    return proc


def test_two_gloo_ranks_split_the_data_and_rank_0_writes(tiny_data, tmp_path, private_cache):
    out = tmp_path / "run"
    torchrun(tiny_data, out, "log_indices=true", "val_subsets=RGB,L")

    # 96 training images, 48 per rank: 3 full batches of 16 each, so every index is used once.
    idx = [torch.load(out / f"indices-rank{r}-epoch1.pt", weights_only=True).tolist() for r in (0, 1)]
    assert len(idx[0]) == len(idx[1]) == 48
    assert not set(idx[0]) & set(idx[1])
    assert sorted(idx[0] + idx[1]) == list(range(96))

    # One run folder's worth of files, all from rank 0; no temp files left by a second writer.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "best.pt",
            "last.pt",
            "config.yaml",
            "format.json",
            "metrics.csv",
            "curves.png",
            "eval-test.json",
            "train.log",
            "indices-rank0-epoch1.pt",
            "indices-rank1-epoch1.pt",
        ]
    )
    # The decode cache was built once per split (train, val, test), not once per rank.
    assert len(list(private_cache.iterdir())) == 3
    assert not [p for p in private_cache.rglob("*tmp*")]

    # The val metrics reduced over both ranks equal one process evaluating the saved checkpoint.
    with open(out / "metrics.csv") as f:
        row = next(csv.DictReader(f))
    res = evaluate_checkpoint(out / "last.pt", tiny_data / "val.txt", channels="RGB,L")["results"]
    assert res["RGB"]["n"] == 24
    assert float(row["val_acc"]) == pytest.approx((res["RGB"]["accuracy"] + res["L"]["accuracy"]) / 2, abs=1e-6)
    assert float(row["val_loss"]) == pytest.approx((res["RGB"]["loss"] + res["L"]["loss"]) / 2, abs=1e-6)
    # The final test pass is split over the ranks too; its counts add up to the whole split.
    test = json.loads((out / "eval-test.json").read_text())
    assert all(r["n"] == 24 for r in test["results"].values())
    # Its per-image scores cover the whole split in split order: each rank's stride, gathered.
    correct = evaluate.test_correct(RunDir(out))
    assert all(correct[s].mean() == pytest.approx(r["accuracy"]) for s, r in test["results"].items())
    if not torch.cuda.is_available():  # one process re-scoring on the CPU, as the ranks did
        (out / "eval-test.json").write_text(json.dumps({k: v for k, v in test.items() if k != "test_correct"}))
        again = evaluate.test_correct(RunDir(out))
        assert all(again[s].tolist() == correct[s].tolist() for s in correct)


def test_two_ranks_validate_rank_0s_weight_average(tiny_data, tmp_path, private_cache):
    """With ema_decay (and mixing) the ranks validate the average, each with rank 0's BatchNorm
    statistics: the reduced val metrics equal one process evaluating best.pt, the saved average."""
    out = tmp_path / "run"
    torchrun(tiny_data, out, "ema_decay=0.9", "mixup_alpha=0.4", "cutmix_alpha=1.0")
    with open(out / "metrics.csv") as f:
        row = next(csv.DictReader(f))
    best = torch.load(out / "best.pt", weights_only=True)
    assert "ema" not in best and "ema" in torch.load(out / "last.pt", weights_only=True)
    res = evaluate_checkpoint(out / "best.pt", tiny_data / "val.txt", channels="RGB")["results"]["RGB"]
    assert float(row["val_acc"]) == pytest.approx(res["accuracy"], abs=1e-6)
    assert float(row["val_loss"]) == pytest.approx(res["loss"], abs=1e-6)

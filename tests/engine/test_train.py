"""The training loop end to end on the tiny synthetic set: run folder, resume, resume-exactness."""

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from prismlab.channels import ALL_SUBSETS
from prismlab.engine.config import make_config
from prismlab.engine.evaluate import evaluate_checkpoint
from prismlab.engine.precision import cpu_trains_channels_last
from prismlab.engine.rundir import BEST, LAST, RunDir, load_checkpoint
from prismlab.engine.step import lr_at
from prismlab.engine.train import train
from prismlab.errors import ConfigError, DataError, PrismError

RUN_FILES = {
    "best.pt",
    "last.pt",
    "metrics.csv",
    "curves.png",
    "config.yaml",
    "eval-test.json",
    "train.log",
    "format.json",
}


pytestmark = pytest.mark.usefixtures("restore_torch_globals")


def run(data, out, resume=None, **kw):
    cfg = make_config(
        overrides={
            "data": str(data),
            "out": str(out),
            "image_size": 24,
            "batch_size": 16,
            "epochs": 2,
            "lr": 0.05,
            **kw,
        }
    )
    return train(cfg, resume=resume)


def rows(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_run_folder_then_resume_to_more_epochs(tiny_data, tmp_path):
    out = run(tiny_data, tmp_path / "run")
    assert RUN_FILES == {p.name for p in out.iterdir()}
    folder = RunDir(out)
    history = folder.metrics()
    ckpt = folder.checkpoint(LAST)
    assert [r["epoch"] for r in history] == [1, 2] and history == ckpt["history"]  # metrics.csv is the history
    assert ckpt["epoch"] == 2 and ckpt["classes"][0].startswith("c00_")
    # best.pt: the first epoch with the best validation accuracy
    best = folder.checkpoint(BEST)
    accs = [r["val_acc"] for r in history]
    assert best["best_acc"] == max(accs) and best["epoch"] == accs.index(max(accs)) + 1
    # eval-test.json is best.pt on the test split: the same as evaluating that file on its own
    report = folder.test()
    assert list(report["results"]) == list(ALL_SUBSETS) and report["n"] == 24
    again = evaluate_checkpoint(out / "best.pt", tiny_data / "test.txt")["results"]
    assert {s: r["accuracy"] for s, r in report["results"].items()} == {s: r["accuracy"] for s, r in again.items()}

    run(tiny_data, out, resume=out / "last.pt", epochs=3)
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 3 and [h["epoch"] for h in ckpt["history"]] == [1, 2, 3]
    assert [r["epoch"] for r in rows(out)] == ["1", "2", "3"]


def test_resume_ends_with_the_same_weights_as_an_uninterrupted_run(tiny_data, tmp_path, stopped_after):
    snapshot = stopped_after(2)  # what an interruption between epochs 2 and 3 leaves behind
    # dropout, augmentation and channel sampling all draw random numbers in this recipe
    kw = dict(epochs=3, deterministic=True, threads=1, channel_sampling="hcs", model_kw={"adapter": "sigmoid"})
    straight = run(tiny_data, tmp_path / "straight", **kw)
    assert snapshot.is_dir()
    resumed = run(tiny_data, snapshot, resume=snapshot / "last.pt", **kw)

    for name in ("last.pt", "best.pt"):
        a, b = load_checkpoint(straight / name), load_checkpoint(resumed / name)
        assert a["epoch"] == b["epoch"]
        assert a["model"].keys() == b["model"].keys()
        for k in a["model"]:
            assert torch.equal(a["model"][k], b["model"][k]), f"{name}: {k} differs after resume"
    timing = {"time_s", "img_s"}
    strip = lambda rs: [{k: v for k, v in r.items() if k not in timing} for r in rs]  # noqa: E731
    assert strip(rows(straight)) == strip(rows(resumed)) and len(rows(resumed)) == 3
    assert (
        json.loads((straight / "eval-test.json").read_text())["results"]
        == json.loads((resumed / "eval-test.json").read_text())["results"]
    )


def test_lr_schedule_warms_up_then_decays_to_zero():
    cfg = make_config(overrides={"lr": 0.4, "warmup_epochs": 1})
    lrs = [lr_at(s, 100, cfg, steps_per_epoch=10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.04) and lrs[9] == pytest.approx(0.4)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 1e-3
    one = make_config(overrides={"lr": 0.4, "schedule": "onecycle"})
    assert lr_at(0, 100, one, 10) == pytest.approx(0.4 / 30) and lr_at(29, 100, one, 10) == pytest.approx(0.4)


def test_recalibrate_bn_averages_the_subset_mix_evenly():
    """Running statistics become the plain average over the calibration batches, whatever the
    BatchNorm momentum, and training mode is restored."""
    import numpy as np

    from prismlab.data.cache import CachedSplit
    from prismlab.data.channels import ChannelSampler, to_subset
    from prismlab.data.loader import BatchLoader
    from prismlab.engine.step import recalibrate_bn
    from prismlab.models import create_model

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(64, 8, 8, 3), dtype=np.uint8)
    data = CachedSplit(
        images=images,
        labels=np.zeros(64, dtype=np.int64),
        gray=np.zeros(64, dtype=bool),
        num_classes=2,
        size=8,
        source="mem",
        skipped=[],
    )
    model = create_model("baseline_cnn", num_classes=2, adapter="channelset").eval()
    bn = model.trunk.features[1]
    sampler = ChannelSampler("fixed:R")
    recalibrate_bn(model, BatchLoader(data, 16, train=True, augment=False, prefetch=0), sampler, batches=4)
    assert not model.training and bn.momentum == 0.1

    # The same four batches by hand: the average of their per-batch channel means after conv1.
    loader = BatchLoader(data, 16, train=True, augment=False, prefetch=0)
    means = []
    with torch.no_grad():
        for x, _, _ in loader:
            xs, ids = to_subset(x, "R")
            means.append(model.trunk.features[0](model.adapter(xs, ids)).mean(dim=(0, 2, 3)))
    assert torch.allclose(bn.running_mean, torch.stack(means).mean(0), atol=1e-5)

    # With rgb_view, each calibration batch holds the RGB view too, as training batches do.
    recalibrate_bn(
        model, BatchLoader(data, 16, train=True, augment=False, prefetch=0), sampler, batches=4, rgb_view=True
    )
    both = []
    with torch.no_grad():
        for x, _, _ in loader:
            views = torch.cat([model.adapter(*to_subset(x, "RGB")), model.adapter(*to_subset(x, "R"))])
            both.append(model.trunk.features[0](views).mean(dim=(0, 2, 3)))
    assert torch.allclose(bn.running_mean, torch.stack(both).mean(0), atol=1e-5)
    assert not torch.allclose(bn.running_mean, torch.stack(means).mean(0), atol=1e-3)


def test_per_subset_statistics_train_calibrate_and_test_on_every_subset(tiny_data, tmp_path):
    """Ours with per-subset BatchNorm through the whole loop: both views, hcs chunks, the epoch-end
    re-estimation (every subset gets statistics of its own), best.pt tested on all 8 subsets."""
    from prismlab.engine.checkpoint import model_from_checkpoint
    from prismlab.models.subset_bn import subset_norms

    out = run(
        tiny_data,
        tmp_path / "run",
        epochs=1,
        channel_sampling="hcs",
        rgb_view=True,
        view_distill=1.0,
        bn_recalibrate=6,
        model="baseline_cnn",
        model_kw={"adapter": "channelset", "subset_bn": True},
    )
    ckpt = load_checkpoint(out / "best.pt")
    counts = ckpt["model"]["trunk.features.1.subset_batches"]
    assert counts[ALL_SUBSETS.index("RGB")] == 6 and counts.sum() > 6  # the RGB view, then the hcs chunks
    assert subset_norms(model_from_checkpoint(ckpt, out / "best.pt").trunk)
    assert list(RunDir(out).test()["results"]) == list(ALL_SUBSETS)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for CPU training")
def test_channels_last_on_avx2_kernels_is_refused_before_the_run_folder_is_made(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN's AVX2 kernels, where channels-last backward crashes
    with pytest.raises(ConfigError, match="channels_last=true: .*AVX2.*oneDNN#6035"):
        run(tiny_data, tmp_path / "run", channels_last=True, model="shallow")
    assert not (tmp_path / "run").exists()
    out = run(tiny_data, tmp_path / "auto", model="shallow", epochs=1)  # auto: NCHW there
    assert RunDir(out).test()["trained_channels_last"] is False


@pytest.mark.skipif(not cpu_trains_channels_last() or torch.cuda.is_available(), reason="needs a CPU with AVX-512")
def test_auto_trains_channels_last_on_avx512_and_false_keeps_nchw(tiny_data, tmp_path):
    assert RunDir(run(tiny_data, tmp_path / "auto", model="shallow", epochs=1)).test()["trained_channels_last"] is True
    off = run(tiny_data, tmp_path / "off", model="shallow", epochs=1, channels_last=False)
    assert RunDir(off).test()["trained_channels_last"] is False
    assert "precision fp32, NCHW, on cpu" in (off / "train.log").read_text()


def test_trains_on_image_folders_and_keeps_their_class_names(tiny_data, tmp_path):
    # The course split files, laid out again as <root>/<split>/<class>/<image>.
    names = (tiny_data / "classes.txt").read_text().split()
    for split in ("train", "val", "test"):
        for line in (tiny_data / f"{split}.txt").read_text().splitlines():
            path, label = line.rsplit(None, 1)
            dest = tmp_path / "folders" / split / names[int(label)] / Path(path).name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(tiny_data / path, dest)
    out = run(tmp_path / "folders", tmp_path / "run", epochs=1, train_split="train", val_split="val", test_split="test")
    assert RunDir(out).checkpoint(LAST)["classes"] == names
    assert json.loads((out / "eval-test.json").read_text())["n"] == len(
        (tiny_data / "test.txt").read_text().splitlines()
    )
    # A test folder with the last class under another name would be scored against the wrong labels.
    shutil.copytree(tmp_path / "folders" / "test", tmp_path / "folders" / "other")
    (tmp_path / "folders" / "other" / names[-1]).rename(tmp_path / "folders" / "other" / "zz_other")
    with pytest.raises(DataError, match=rf"other: label 3 is 'zz_other' here but '{names[-1]}' in the training split"):
        run(tmp_path / "folders", tmp_path / "run2", train_split="train", val_split="val", test_split="other")
    assert not (tmp_path / "run2").exists()  # refused before training, not after
    with pytest.raises(DataError, match=rf"label 3 is 'zz_other' here but '{names[-1]}' in the checkpoint"):
        evaluate_checkpoint(out / "best.pt", tmp_path / "folders" / "other")


@pytest.mark.parametrize("key", ["train_split", "val_split", "test_split"])
def test_a_named_split_that_is_missing_is_an_error_before_training(tiny_data, tmp_path, key):
    message = "split file not found" if key == "train_split" else f"{key} not found \\(set {key}= to run without one\\)"
    with pytest.raises(DataError, match=rf"nope\.txt: {message}"):
        run(tiny_data, tmp_path / "run", **{key: "nope.txt"})
    assert not (tmp_path / "run").exists()


def test_a_fresh_run_into_a_folder_with_a_run_is_refused_and_the_run_kept(tiny_data, tmp_path):
    out = run(tiny_data, tmp_path / "run", epochs=1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(PrismError, match=rf"holds a run already; --resume {out / 'last.pt'} continues it"):
        run(tiny_data, out, epochs=1, lr=0.01)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (out / "last.pt").unlink()  # killed between best.pt and the first last.pt: nothing to resume
    with pytest.raises(PrismError, match="holds a run already; delete it, or choose another --out"):
        run(tiny_data, out, epochs=1)


def test_resuming_with_other_values_says_which_and_a_longer_budget_does_not(tiny_data, tmp_path, capsys):
    out = run(tiny_data, tmp_path / "run", epochs=1)
    capsys.readouterr()
    run(tiny_data, out, resume=out / "last.pt", epochs=2)  # a longer budget: the documented use
    assert "warning" not in capsys.readouterr().out
    # The same data folder spelled another way is no change.
    spelled = tiny_data.parent / ".." / tiny_data.parent.name / tiny_data.name
    run(spelled, out, resume=out / "last.pt", epochs=2)
    assert "warning" not in capsys.readouterr().out
    run(tiny_data, out, resume=out / "last.pt", epochs=3, lr=0.01, label_smoothing=0.0)
    printed = capsys.readouterr().out
    assert "with another config than it trained with: lr: 0.05 -> 0.01; label_smoothing: 0.1 -> 0.0" in printed
    assert "label_smoothing: 0.1 -> 0.0" in (out / "train.log").read_text()


def test_the_log_says_how_many_images_each_epochs_last_partial_batch_skips(tiny_data, tmp_path):
    said = "each epoch skips 16 of the 96 training images: the last partial batch (batch_size 20) of its own shuffle"
    out = run(tiny_data, tmp_path / "partial", epochs=1, batch_size=20, test_split="")  # 96 = 4 x 20 + 16
    assert (out / "train.log").read_text().count(said) == 1
    out = run(tiny_data, tmp_path / "whole", epochs=1, batch_size=16, test_split="")  # 96 = 6 x 16
    assert "each epoch skips" not in (out / "train.log").read_text()


def test_an_interrupt_before_a_resumed_run_saves_names_the_existing_last_pt(
    tiny_data, tmp_path, monkeypatch, stopped_after
):
    import prismlab.engine.train as train_module

    snapshot = stopped_after(1)
    run(tiny_data, tmp_path / "run", epochs=2, test_split="")
    last = snapshot / "last.pt"

    def interrupt(*args, **kwargs):  # Ctrl-C at the first step of the resumed run's first epoch
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "lr_at", interrupt)
    with pytest.raises(KeyboardInterrupt) as stop:
        run(tiny_data, snapshot, resume=last, epochs=2, test_split="")
    said = f"stopped during epoch 2; {last} is from the end of epoch 1 (--resume {last} continues from there)"
    assert str(stop.value) == said and "nothing saved" not in str(stop.value)
    assert f"interrupted: {said}" in (snapshot / "train.log").read_text()
    ckpt = load_checkpoint(last)
    assert ckpt["epoch"] == 1 and ckpt["interrupted"] is True

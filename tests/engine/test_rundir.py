"""The run folder contract: what is written reads back the same, and another format, or none, is
refused in one line naming the file and both versions."""

import json
import shutil

import pytest
import torch
import yaml

from prismlab.cli import main
from prismlab.engine import rundir
from prismlab.engine.config import ADDED_KEYS, TrainConfig, make_config
from prismlab.engine.rundir import BEST, CONFIG, FORMAT, LAST, STAMP, FormatError, RunDir, load_checkpoint
from prismlab.engine.train import train
from prismlab.errors import DataError
from prismlab.models import create_model


def state(cfg: TrainConfig, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = create_model("baseline_cnn", num_classes=4)
    history = [
        {
            "epoch": 1,
            "lr": 0.1,
            "train_loss": 1.25,
            "train_acc": 0.5,
            "time_s": 2.0,
            "img_s": 48.0,
            "val_loss": 1.5,
            "val_acc": 0.375,
        }
    ]
    return {
        "model_spec": dict(model.spec),
        "model": model.state_dict(),
        "optimizer": {},
        "epoch": 1,
        "best_acc": 0.375,
        "history": history,
        "config": cfg.to_dict(),
        "classes": None,
        "interrupted": False,
    }


def test_what_a_run_folder_holds_reads_back_the_same(tmp_path):
    cfg = make_config(
        overrides={
            "data": "d",
            "out": str(tmp_path / "run"),
            "epochs": 3,
            "lr": 0.05,
            "model_kw": {"adapter": "channelset"},
        }
    )
    run = RunDir(cfg.out)
    run.start(cfg)
    s = state(cfg)
    run.save(BEST, s)
    run.write_metrics(s["history"] + [{**s["history"][0], "epoch": 2, "val_acc": 0.0}])
    report = {
        "checkpoint": str(run / BEST),
        "split": "d/test.txt",
        "n": 8,
        "size": 32,
        "precision": "fp32",
        "skipped": [],
        "results": {"RGB": {"accuracy": 0.625, "loss": 1.1, "n": 8}},
    }
    run.write_test(report)
    run.add_commit("abc")
    run.add_commit("def")

    assert json.loads((run / STAMP).read_text()) == {"format": FORMAT} and run.format() == FORMAT
    assert run.config() == cfg
    rows = run.metrics()
    assert rows[0] == s["history"][0] and rows[1]["epoch"] == 2 and rows[1]["val_acc"] == 0.0
    assert run.test() == report and run.commits() == ["abc", "def"]
    back = run.checkpoint(BEST)
    assert back["format"] == FORMAT and back["epoch"] == 1
    assert all(torch.equal(back["model"][k], v) for k, v in s["model"].items())
    run.clear()
    assert not run.finished() and run.test() is None and run.exists()  # the config stays, the results go


def test_a_key_added_since_reads_at_its_old_value_and_no_other_key_may_be_missing(tmp_path):
    """A folder written before an off-by-default key existed was trained with it off; any other
    missing key is still refused."""
    cfg = make_config(overrides={"data": "d", "out": str(tmp_path / "run")})
    run = RunDir(cfg.out)
    run.start(cfg)
    values = yaml.safe_load((run / CONFIG).read_text())
    (run / CONFIG).write_text(yaml.safe_dump({k: v for k, v in values.items() if k not in ADDED_KEYS}))
    assert run.config() == cfg and all(getattr(cfg, k) == v for k, v in ADDED_KEYS.items())
    (run / CONFIG).write_text(yaml.safe_dump({k: v for k, v in values.items() if k != "lr"}))
    with pytest.raises(DataError, match="config.yaml: lacks lr$"):
        run.config()


@pytest.mark.parametrize(
    "found, words",
    [
        (FORMAT + 1, f"format {FORMAT + 1}, this prismlab reads format {FORMAT} (a newer prismlab wrote it)"),
        (None, f"no format stamp, this prismlab reads format {FORMAT} (not a run of its design; train it again)"),
    ],
)
def test_a_checkpoint_of_another_format_is_refused_in_one_line(tmp_path, found, words):
    path = tmp_path / "run" / "best.pt"
    path.parent.mkdir()
    torch.save({**state(TrainConfig()), **({"format": found} if found is not None else {})}, path)
    with pytest.raises(FormatError) as e:
        load_checkpoint(path)
    assert str(e.value).startswith(f"{path}: ") and words in str(e.value) and "\n" not in str(e.value)


def test_an_older_stamped_format_is_refused_too(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "run")
    run.start(TrainConfig())
    monkeypatch.setattr(rundir, "FORMAT", FORMAT + 1)  # as if this code were one format later
    with pytest.raises(
        FormatError,
        match=rf"^{run.path}: format {FORMAT}, this prismlab reads format {FORMAT + 1} "
        r"\(an older format, and no upgrade from it exists\)$",
    ):
        run.config()


def test_a_folder_of_another_format_is_refused_by_every_reader(tmp_path, capsys):
    run = RunDir(tmp_path / "run")
    run.start(TrainConfig())
    (run / STAMP).write_text(json.dumps({"format": FORMAT + 1}))
    for read in (run.config, run.metrics, run.test, run.checkpoint, run.commits):
        with pytest.raises(FormatError, match=f"format {FORMAT + 1}, this prismlab reads format {FORMAT}"):
            read()
    assert main(["report", str(run.path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"prismlab: error: {run.path}: format {FORMAT + 1}")


@pytest.fixture(scope="module")
def finished(tiny_data, tmp_path_factory):
    """A real one-epoch run of the tiny set."""
    root = tmp_path_factory.mktemp("rundir")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRISMLAB_CACHE", str(root / "cache"))
        threads = torch.get_num_threads()
        out = train(
            make_config(
                overrides={
                    "data": str(tiny_data),
                    "out": str(root / "run"),
                    "image_size": 24,
                    "batch_size": 16,
                    "epochs": 1,
                    "model_kw": {"adapter": "channelset"},
                }
            )
        )
        torch.set_num_threads(threads)
    return out


def unstamped(run_dir, dest):
    """A copy of a run without format stamps: a folder and checkpoints of no known design."""
    shutil.copytree(run_dir, dest)
    (dest / STAMP).unlink()
    for name in (BEST, LAST):
        ckpt = torch.load(dest / name, weights_only=True)
        del ckpt["format"]
        torch.save(ckpt, dest / name)
    return dest


def test_an_unstamped_folder_is_refused_by_every_reader(finished, tmp_path, capsys):
    old = unstamped(finished, tmp_path / "old")
    run = RunDir(old)
    for read in (run.config, run.metrics, run.test, run.checkpoint, run.commits):
        with pytest.raises(FormatError, match=rf"^{old}: no format stamp, this prismlab reads format {FORMAT} "):
            read()
    with pytest.raises(FormatError, match=rf"^{old / BEST}: no format stamp"):
        load_checkpoint(old / BEST)
    assert main(["report", str(old)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"prismlab: error: {old}: no format stamp")


def test_bench_does_not_reuse_or_replace_an_unstamped_run(finished, tmp_path):
    from prismlab.bench.common import train_or_reuse

    old = unstamped(finished, tmp_path / "old")
    overrides = {k: v for k, v in RunDir(finished).config().to_dict().items() if k != "out"}
    with pytest.raises(FormatError, match="no format stamp"):
        train_or_reuse(overrides, old)
    assert (old / BEST).exists() and not (old / STAMP).exists()


def test_a_malformed_stamp_is_one_line(tmp_path):
    run = RunDir(tmp_path)
    run.start(TrainConfig())
    (run / STAMP).write_text('{"format": "one"}')
    with pytest.raises(DataError, match=r"format.json: format stamp 'one' is not a whole number$"):
        run.check()

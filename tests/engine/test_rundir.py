"""The run folder contract: what is written reads back the same, another format is refused in one
line naming the file and both versions, and `prismlab upgrade` stamps a format-0 folder only
after checking it."""

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
from prismlab.engine.upgrade import LEGACY
from prismlab.errors import DataError
from prismlab.models import create_model


def state(cfg: TrainConfig, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = create_model("baseline_cnn", num_classes=4)
    history = [{"epoch": 1, "lr": 0.1, "train_loss": 1.25, "train_acc": 0.5, "time_s": 2.0, "img_s": 48.0,
                "val_loss": 1.5, "val_acc": 0.375}]
    return {"model_spec": dict(model.spec), "model": model.state_dict(), "optimizer": {}, "epoch": 1,
            "best_acc": 0.375, "history": history, "config": cfg.to_dict(), "classes": None, "interrupted": False}


def test_what_a_run_folder_holds_reads_back_the_same(tmp_path):
    cfg = make_config(overrides={"data": "d", "out": str(tmp_path / "run"), "epochs": 3, "lr": 0.05,
                                 "model_kw": {"adapter": "channelset"}})
    run = RunDir(cfg.out)
    run.start(cfg)
    s = state(cfg)
    run.save(BEST, s)
    run.write_metrics(s["history"] + [{**s["history"][0], "epoch": 2, "val_acc": 0.0}])
    report = {"checkpoint": str(run / BEST), "split": "d/test.txt", "n": 8, "size": 32, "precision": "fp32",
              "skipped": [], "results": {"RGB": {"accuracy": 0.625, "loss": 1.1, "n": 8}}}
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


@pytest.mark.parametrize("found, words", [
    (FORMAT + 1, f"format {FORMAT + 1}, this prismlab reads format {FORMAT} (a newer prismlab wrote it)"),
    (0, f"format 0 (written before format stamps), this prismlab reads format {FORMAT}; `prismlab upgrade "),
])
def test_a_checkpoint_of_another_format_is_refused_in_one_line(tmp_path, found, words):
    path = tmp_path / "run" / "best.pt"
    path.parent.mkdir()
    torch.save({**state(TrainConfig()), **({"format": found} if found else {})}, path)
    with pytest.raises(FormatError) as e:
        load_checkpoint(path)
    assert str(e.value).startswith(f"{path}: ") and words in str(e.value) and "\n" not in str(e.value)
    if not found:
        assert str(e.value).endswith(f"`prismlab upgrade {path.parent}` checks the run folder and stamps it")


def test_an_older_stamped_format_is_refused_too(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "run")
    run.start(TrainConfig())
    monkeypatch.setattr(rundir, "FORMAT", FORMAT + 1)  # as if this code were one format later
    with pytest.raises(FormatError, match=rf"^{run.path}: format {FORMAT}, this prismlab reads format {FORMAT + 1} "
                                          r"\(an older format, and no upgrade from it exists\)$"):
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
        out = train(make_config(overrides={"data": str(tiny_data), "out": str(root / "run"), "image_size": 24,
                                           "batch_size": 16, "epochs": 1, "model_kw": {"adapter": "channelset"}}))
        torch.set_num_threads(threads)
    return out


def format_0(run_dir, dest, drop=tuple(LEGACY)):
    """A copy of a run as a format-0 prismlab wrote it: no stamp, checkpoints without one, and a config
    without the keys in `drop`."""
    shutil.copytree(run_dir, dest)
    (dest / STAMP).unlink()
    for name in (BEST, LAST):
        ckpt = torch.load(dest / name, weights_only=True)
        del ckpt["format"]
        ckpt["config"] = {k: v for k, v in ckpt["config"].items() if k not in drop}
        torch.save(ckpt, dest / name)
    cfg = yaml.safe_load((dest / CONFIG).read_text())
    (dest / CONFIG).write_text(yaml.safe_dump({k: v for k, v in cfg.items() if k not in drop}, sort_keys=False))
    return dest


def test_an_unstamped_folder_is_refused_until_upgraded(finished, tmp_path, capsys):
    old = format_0(finished, tmp_path / "old")
    with pytest.raises(FormatError, match=rf"^{old}: format 0 .*`prismlab upgrade {old}`"):
        RunDir(old).config()
    before = load_checkpoint(finished / BEST)

    assert main(["upgrade", str(old)]) == 0
    assert capsys.readouterr().out == (f"{old}: stamped format {FORMAT}; config filled with subsets_per_batch=1, "
                                       "rgb_view=False, view_distill=0.0, mixup_alpha=0.0, cutmix_alpha=0.0, ema_decay=0.0, "
                                       "bn_recalibrate=0; rewrote best.pt, last.pt\n")
    run = RunDir(old)
    cfg = run.config()  # how it was trained before the keys existed, not today's defaults
    assert (cfg.subsets_per_batch, cfg.bn_recalibrate, cfg.rgb_view, cfg.view_distill) == (1, 0, False, 0.0)
    assert cfg.effective() == {**RunDir(finished).config().effective(), "bn_recalibrate": 0}  # rgb sampling: no mix key
    after = run.checkpoint(BEST)
    assert after["format"] == FORMAT and after["config"]["bn_recalibrate"] == 0 and after["epoch"] == before["epoch"]
    assert all(torch.equal(after["model"][k], v) for k, v in before["model"].items())
    assert run.test() == RunDir(finished).test() and run.metrics() == RunDir(finished).metrics()

    assert main(["upgrade", str(old)]) == 0  # once stamped, nothing more to do
    assert capsys.readouterr().out == f"{old}: already format {FORMAT}\n"


def lr_missing(d):
    cfg = yaml.safe_load((d / CONFIG).read_text())
    del cfg["lr"]
    (d / CONFIG).write_text(yaml.safe_dump(cfg))


def unknown_key(d):
    (d / CONFIG).write_text((d / CONFIG).read_text() + "learning_rate: 0.1\n")


def renamed_weights(d):
    # The channel-set adapter's table under another name: weights this code's model does not have.
    ckpt = torch.load(d / BEST, weights_only=True)
    ckpt["model"]["adapter.linear.weight"] = ckpt["model"].pop("adapter.chroma.weight")
    torch.save(ckpt, d / BEST)


def other_model(d):
    ckpt = torch.load(d / LAST, weights_only=True)
    ckpt["config"]["model_kw"] = {"adapter": "naive"}
    torch.save(ckpt, d / LAST)


def newer(d):
    (d / STAMP).write_text(json.dumps({"format": FORMAT + 1}))


@pytest.mark.parametrize("breaker, words", [
    (lr_missing, "config.yaml: lacks config keys lr, whose values before they existed are unknown"),
    (unknown_key, "config.yaml: unknown config keys learning_rate; cannot vouch for how it was trained"),
    (renamed_weights, "best.pt: weights do not fit this model"),
    (other_model, "last.pt: model_kw {'adapter': 'naive'} differs from config.yaml's {'adapter': 'channelset'}"),
    (newer, f"format {FORMAT + 1}, this prismlab reads format {FORMAT} (a newer prismlab wrote it)"),
])
def test_upgrade_refuses_what_it_cannot_vouch_for_and_writes_nothing(finished, tmp_path, capsys, breaker, words):
    good = format_0(finished, tmp_path / "good")
    bad = format_0(finished, tmp_path / "bad")
    breaker(bad)
    files = {p: p.read_bytes() for d in (good, bad) for p in d.iterdir()}
    assert main(["upgrade", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"prismlab: error: {bad}") and words in err, err
    # Every folder is checked before any is written: the good one is not stamped either.
    assert {p: p.read_bytes() for d in (good, bad) for p in d.iterdir()} == files


def test_upgrade_of_a_folder_that_is_no_run(tmp_path, capsys):
    assert main(["upgrade", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"prismlab: error: {tmp_path}: not a run folder (no config.yaml)\n"


def test_bench_does_not_reuse_or_replace_an_unstamped_run(finished, tmp_path):
    from prismlab.bench.common import train_or_reuse

    old = format_0(finished, tmp_path / "old")
    overrides = {k: v for k, v in RunDir(finished).config().to_dict().items() if k != "out"}
    with pytest.raises(FormatError, match="prismlab upgrade"):
        train_or_reuse(overrides, old)
    assert (old / BEST).exists() and not (old / STAMP).exists()


def test_a_malformed_stamp_is_one_line(tmp_path):
    run = RunDir(tmp_path)
    run.start(TrainConfig())
    (run / STAMP).write_text("{\"format\": \"one\"}")
    with pytest.raises(DataError, match=r"format.json: format stamp 'one' is not a whole number$"):
        run.check()

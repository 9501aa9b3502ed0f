"""The `prismlab` command. train, eval, report and --help run as real subprocesses of this venv's
python; the rest run in-process through cli.main (each subprocess pays a torch
import of a few seconds, and their work does not depend on being a separate process)."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from prismlab import cli
from prismlab.channels import ALL_SUBSETS
from prismlab.models import list_models


def prismlab(*args, cwd, check=True, env=None):
    proc = subprocess.run(
        [sys.executable, "-m", "prismlab", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    if check:
        assert proc.returncode == 0, f"prismlab {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def cli_run(tiny_data, tmp_path_factory):
    """One `prismlab train` run shared by the eval and report tests (module scope: train once)."""
    root = tmp_path_factory.mktemp("cli")
    env = {**os.environ, "PRISMLAB_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1"}
    proc = prismlab(
        "train",
        "--data",
        tiny_data,
        "--out",
        root / "run",
        "epochs=2",
        "batch_size=16",
        "image_size=24",
        cwd=root,
        env=env,
    )
    assert "epoch 2/2" in proc.stdout and "run folder:" in proc.stdout
    return root / "run"


def test_help_lists_the_commands(tmp_path):
    out = prismlab("--help", cwd=tmp_path).stdout
    for cmd in ("data", "models", "train", "eval", "predict", "report"):
        assert cmd in out


def test_models_lists_the_registry(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert "model_kw.adapter" in out
    assert all(f"\n{name} " in out for name in list_models())  # every registered model, seed_parallel too


def test_models_cards_prints_a_card_per_model_and_adapter(capsys):
    from prismlab.models.registry import ADAPTERS, MODELS

    assert cli.main(["models", "--cards", "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert all(f"### `{n}` (model)" in out for n in MODELS.names())
    assert all(f"### `{n}` (adapter)" in out for n in ADAPTERS.names())
    assert out.count("Cost at 32x32 RGB") == len(MODELS.names()) + len(ADAPTERS.names())


def test_data_synth_writes_the_course_layout(tmp_path, capsys):
    assert cli.main(["data", "synth", str(tmp_path / "syn"), "--seed", "3"]) == 0
    assert str(tmp_path / "syn") in capsys.readouterr().out
    names = (tmp_path / "syn" / "classes.txt").read_text().split()
    for split in ("train", "val", "test"):
        first = (tmp_path / "syn" / f"{split}.txt").read_text().splitlines()[0]
        path, label = first.rsplit(" ", 1)
        assert (tmp_path / "syn" / path).is_file() and 0 <= int(label) < len(names)
    # a second run into the same folder is a user error: one line, exit 2
    assert cli.main(["data", "synth", str(tmp_path / "syn")]) == 2
    assert capsys.readouterr().err.startswith("prismlab: error: ")


def test_train_writes_a_run_folder(cli_run):
    from prismlab.engine.rundir import FORMAT, LAST, RunDir

    run = RunDir(cli_run)
    cfg = run.config()
    assert run.format() == FORMAT and (cfg.epochs, cfg.batch_size, cfg.image_size) == (2, 16, 24)
    assert [r["epoch"] for r in run.metrics()] == [1, 2] and run.metrics() == run.checkpoint(LAST)["history"]
    test = run.test()
    assert test["checkpoint"] == str(cli_run / "best.pt") and test["n"] == 24 and test["precision"] == "fp32"
    assert (cli_run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_on_a_split_file_elsewhere(cli_run, tiny_data, tmp_path):
    # The split lives in another folder; its absolute paths point at the original images.
    split = tmp_path / "elsewhere" / "my-test.txt"
    split.parent.mkdir()
    split.write_text("".join(f"{tiny_data}/{line}\n" for line in (tiny_data / "test.txt").read_text().splitlines()))
    out_json = tmp_path / "res" / "eval.json"
    proc = prismlab("eval", "--checkpoint", cli_run / "best.pt", "--split", split, "--json", out_json, cwd=tmp_path)
    assert all(s in proc.stdout for s in ALL_SUBSETS)
    res = json.loads(out_json.read_text())
    assert {"checkpoint", "split", "n", "results"} <= set(res)
    assert res["n"] == 24 and res["split"] == str(split) and res["checkpoint"] == str(cli_run / "best.pt")
    assert list(res["results"]) == list(ALL_SUBSETS)
    assert all(r["n"] == 24 for r in res["results"].values())
    during_training = json.loads((cli_run / "eval-test.json").read_text())["results"]
    for s in ALL_SUBSETS:
        assert res["results"][s]["accuracy"] == during_training[s]["accuracy"], s
        assert res["results"][s]["loss"] == pytest.approx(during_training[s]["loss"], rel=1e-5)


def test_eval_of_a_missing_checkpoint_is_one_line_exit_2(tmp_path, tiny_data, capsys):
    assert cli.main(["eval", "--checkpoint", str(tmp_path / "nope.pt"), "--split", str(tiny_data / "test.txt")]) == 2
    assert capsys.readouterr().err.strip() == f"prismlab: error: {tmp_path / 'nope.pt'}: checkpoint not found"


def test_train_errors_are_one_line_exit_2(tmp_path, tiny_data, capsys):
    assert cli.main(["train", "--data", str(tiny_data), "--out", str(tmp_path / "r"), "epochs=-1"]) == 2
    assert capsys.readouterr().err.strip() == "prismlab: error: epochs must be in 1..100000, got -1"
    assert cli.main(["train", "--data", str(tmp_path / "absent"), "--out", str(tmp_path / "r")]) == 2
    assert "absent" in capsys.readouterr().err


def test_report_has_the_subset_table_and_plots(cli_run, tmp_path):
    out = tmp_path / "rep" / "report.md"
    prismlab("report", cli_run, "--out", out, cwd=tmp_path)
    text = out.read_text()
    test = json.loads((cli_run / "eval-test.json").read_text())["results"]
    header = "| run | " + " | ".join(ALL_SUBSETS) + " | mean |"
    assert header in text
    assert f"| {cli_run.name} | " + " | ".join(f"{100 * test[s]['accuracy']:.1f}" for s in ALL_SUBSETS) in text
    pngs = [p for p in out.parent.iterdir() if p.suffix == ".png"]
    assert len(pngs) == 2 and all(p.stat().st_size > 1000 for p in pngs)
    assert all(f"]({p.name})" in text for p in pngs)  # the Markdown links the plots it wrote
    cfg = yaml.safe_load((cli_run / "config.yaml").read_text())
    cards = text[text.index("## Model cards") :]
    assert f"### `{cfg['model']}` (model)" in cards and "### `naive` (adapter)" in cards
    assert f"Cost at {cfg['image_size']}x{cfg['image_size']} RGB" in cards


def test_train_help_lists_every_config_key_with_its_default_and_meaning(capsys):
    import dataclasses
    import re

    from prismlab.engine.config import TrainConfig

    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    lines = {m.group(1): (m.group(2), m.group(3)) for m in re.finditer(r"^  (\w+)=(\S+) +(.+)$", out, re.M)}
    assert list(lines) == [f.name for f in dataclasses.fields(TrainConfig)]
    assert all(lines[f.name][1] == f.metadata["meaning"] for f in dataclasses.fields(TrainConfig))
    assert (lines["lr"][0], lines["augment"][0], lines["data"][0], lines["model_kw"][0]) == ("0.1", "true", "''", "{}")


def test_version_prints_the_projects_version(capsys):
    import re
    from pathlib import Path

    import prismlab

    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert re.search(r'^version = "(.+)"$', pyproject, re.M).group(1) == prismlab.__version__
    assert capsys.readouterr().out == f"prismlab {prismlab.__version__}\n"


@pytest.mark.parametrize(
    "override, message",
    [
        ("epochz=3", "unknown config key 'epochz'; did you mean 'epochs'?"),
        ("model=shalow", "did you mean 'shallow'?"),
        (
            "model_kw.adaptr=channelset",
            "model 'shallow': ShallowNet.__init__() got an unexpected keyword argument 'adaptr'; "
            "did you mean 'adapter'?",
        ),
    ],
)
def test_a_mistyped_key_model_or_model_keyword_is_one_line_with_a_suggestion(
    override, message, tiny_data, tmp_path, capsys
):
    out = tmp_path / "run"
    assert cli.main(["train", "--data", str(tiny_data), "--out", str(out), "model=shallow", override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("prismlab: error: ") and message in err
    assert not out.exists()  # refused before the run folder is made


def test_layers_suggests_for_a_mistyped_model_keyword(capsys):
    assert cli.main(["layers", "baseline_cnn", "adaptr=channelset"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.rstrip().endswith("did you mean 'adapter'?")


def test_every_option_of_the_user_commands_has_a_help_text():
    import argparse

    commands = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    missing = [
        f"{cmd} {a.option_strings[-1] if a.option_strings else a.dest}"
        for cmd in ("eval", "predict", "report", "export", "layers")
        for a in commands[cmd]._actions
        if not a.help or a.help == argparse.SUPPRESS
    ]
    assert missing == []


def test_every_command_names_its_image_size_option_size():
    import argparse

    def options(parser, path=()):  # (command path, option) of every command, bench's studies too
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    yield from options(sub, (*path, name))
            yield from ((" ".join(path), opt) for opt in a.option_strings)

    spelled = {(cmd, opt) for cmd, opt in options(cli.build_parser()) if "size" in opt and "batch" not in opt}
    assert {cmd for cmd, _ in spelled} >= {"layers", "export", "bench task2"}
    assert {opt for _, opt in spelled} == {"--size"}, sorted(spelled)

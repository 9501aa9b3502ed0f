"""The public API, as the README shows it: the library script runs as written, on a real image-folder
tree, with a torchvision and a timm backbone; load_model gives the trained and the deployed form."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import prismlab
from prismlab.cli import main
from prismlab.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
HAVE = {p: importlib.util.find_spec(p) is not None for p in ("timm", "onnxruntime", "onnxscript")}
NEEDS_TIMM = pytest.mark.skipif(not HAVE["timm"], reason="needs timm (pip install 'prismlab[timm]')")


def readme_example(name: str) -> str:
    text = (ROOT / "README.md").read_text()
    return re.search(rf"<!-- example:{name} -->\n```python\n(.*?)```", text, re.S).group(1)


def image_tree(data: Path, root: Path) -> None:
    """The course-layout set's training images as an image-folder tree <root>/<class>/<image>."""
    names = (data / "classes.txt").read_text().split()
    for line in (data / "train.txt").read_text().splitlines():
        path, label = line.rsplit(None, 1)
        dest = root / names[int(label)] / Path(path).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((data / path).read_bytes())


@pytest.mark.skipif(
    not all(HAVE.values()),
    reason="the README's script needs timm, onnxruntime and onnxscript (pip install 'prismlab[timm,deploy]')",
)
def test_the_readme_library_script_runs_as_written(tiny_data, tmp_path):
    image_tree(tiny_data, tmp_path / "images")
    proc = subprocess.run(
        [sys.executable, "-c", readme_example("library")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "IMAGES": str(tmp_path / "images")},
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("tv_resnet18", "timm_resnet18"):
        assert f"{name}: {name}-RB.onnx written; onnxruntime matches PyTorch" in proc.stdout
        assert (tmp_path / f"{name}-RB.onnx").stat().st_size > 0


def test_the_public_names_are_there_and_light():
    assert set(prismlab.__all__) >= {
        "create_model",
        "any_channel",
        "load_model",
        "to_subset",
        "subset_ids",
        "inference_form",
        "export_onnx",
        "register_model",
    }
    code = "import sys, prismlab; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


@pytest.mark.parametrize(
    "name", ["tv:resnet18", "tv:mobilenet_v3_small", pytest.param("timm:resnet18", marks=NEEDS_TIMM)]
)
def test_torchvision_and_timm_models_train_count_and_fuse(name, tiny_data, tmp_path, capsys):
    from prismlab.analysis.flops import count_flops
    from prismlab.analysis.layers import count_layers

    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(tiny_data),
                "--out",
                str(out),
                f"model={name}",
                "model_kw.adapter=channelset",
                "model_kw.subset_bn=true",
                "channel_sampling=hcs",
                "batch_size=16",
                "image_size=24",
                "epochs=1",
            ]
        )
        == 0
    )
    assert "test (" in capsys.readouterr().out  # train prints its final test
    trained = prismlab.load_model(out / "best.pt")
    deployed = prismlab.load_model(out / "best.pt", form="inference", channels="RB")
    x, ids = prismlab.to_subset(torch.randint(0, 255, (2, 3, 24, 24), dtype=torch.uint8), "RB")
    with torch.no_grad():
        assert torch.allclose(trained(x, ids), deployed(x, ids), atol=1e-4)
    assert count_layers(trained, 24).total > 2 and count_flops(deployed, 24) > 0


def test_any_channel_replaces_a_first_conv_of_another_width():
    import torchvision

    net = prismlab.any_channel(
        torchvision.models.resnet18(num_classes=3), adapter="channelset", adapter_kw={"out_channels": 16}
    )
    assert net.trunk.conv1.in_channels == 16 and net(torch.randn(2, 2, 32, 32), "RG").shape == (2, 3)
    with pytest.raises(ConfigError, match="no Conv2d to put a channel adapter in front of"):
        prismlab.any_channel(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3, 2)))


def test_resume_by_run_folder_takes_the_runs_own_config(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(tiny_data),
                "--out",
                str(out),
                "batch_size=16",
                "image_size=24",
                "epochs=1",
                "lr=0.05",
                "test_split=",
            ]
        )
        == 0
    )
    # no --config, no --data, no --out: all from the run; a longer budget is a key a resume may change
    assert main(["train", "--resume", str(out), "epochs=2"]) == 0
    from prismlab.engine.rundir import RunDir

    cfg = RunDir(out).config()
    assert (cfg.epochs, cfg.lr, cfg.batch_size) == (2, 0.05, 16)
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "model=shallow"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "best.pt" not in err and "last.pt: holds a baseline_cnn model, not shallow" in err
    assert main(["train", "--resume", str(out), "batch_size=32"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "batch_size: a resume continues" in err and "may change only epochs" in err
    # the command that started the run, typed again, resumes it: its keys hold the run's own values
    assert main(["train", "--resume", str(out), "batch_size=16", "image_size=24", "epochs=3"]) == 0
    assert RunDir(out).config().epochs == 3


def test_the_ours_preset_is_task1s_ours():
    from prismlab.bench.task1 import METHODS
    from prismlab.engine.config import make_config

    cfg = make_config("ours")
    m = METHODS["ours"]
    assert cfg.model_kw == {"adapter": m.adapter, **dict(m.model_kw)} and cfg.channel_sampling == m.sampling
    assert all(getattr(cfg, k) == v for k, v in m.train)
    preset = make_config("task1-cpu")
    assert all(
        getattr(cfg, k) == getattr(preset, k)
        for k in ("image_size", "epochs", "lr", "warmup_epochs", "weight_decay", "test_subsets", "model")
    )


def test_data_at_an_image_folder_root_trains(tiny_data, tmp_path, capsys):
    image_tree(tiny_data, tmp_path / "tree")
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "tree"),
                "--out",
                str(tmp_path / "r"),
                "batch_size=16",
                "image_size=24",
                "epochs=1",
            ]
        )
        == 0
    )
    from prismlab.engine.rundir import RunDir

    cfg = RunDir(tmp_path / "r").config()
    assert (cfg.train_split, cfg.val_split, cfg.test_split) == (".", "", "")


def test_a_model_of_ones_own_reaches_the_cli_through_import(tmp_path, tiny_data, monkeypatch):
    (tmp_path / "mymodels.py").write_text(
        "import torch\nfrom prismlab import register_model\nfrom prismlab.models.base import classifier\n"
        "class Tiny(torch.nn.Module):\n"
        "    def __init__(self, in_channels=3, num_classes=10):\n"
        "        super().__init__()\n"
        "        self.net = torch.nn.Sequential(torch.nn.Conv2d(in_channels, 8, 3), torch.nn.AdaptiveAvgPool2d(1),"
        " torch.nn.Flatten(), torch.nn.Linear(8, num_classes))\n"
        "    def forward(self, x):\n        return self.net(x)\n"
        "@register_model('tiny_mine', reference='a test')\ndef tiny_mine(**kw):\n"
        "    '''A conv and a linear layer.'''\n    return classifier(Tiny, **kw)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert (
        main(
            [
                "--import",
                "mymodels",
                "train",
                "--data",
                str(tiny_data),
                "--out",
                str(tmp_path / "r"),
                "model=tiny_mine",
                "batch_size=16",
                "image_size=24",
                "epochs=1",
                "test_split=",
            ]
        )
        == 0
    )


@pytest.mark.parametrize("shape", [(3, 24, 24), (24, 24, 3), (2, 24, 24, 3)])
def test_to_subset_refuses_an_unbatched_or_hwc_array_in_one_line(shape):
    import numpy as np

    for images in (torch.zeros(shape, dtype=torch.uint8), np.zeros(shape, dtype=np.uint8)):
        with pytest.raises(ValueError, match=r"takes RGB images \[N, 3, H, W\], got shape") as e:
            prismlab.to_subset(images, "RGB")
        assert "\n" not in str(e.value) and str(tuple(shape)) in str(e.value)


def test_to_subset_refuses_all_rather_than_treating_it_as_rgb():
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    for name in ("all", "ALL"):
        with pytest.raises(ConfigError, match=rf"unknown channel subset '{name}' \(one of RGB, "):
            prismlab.to_subset(images, name)


def test_subsets_written_with_plus_read_as_their_sets():
    from prismlab.channels import parse_subsets, subset_ids

    assert parse_subsets("RB,R+B,B+R,R+L") == ["RB", "R+L"]  # a named subset's set reads as its name, once
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    x, ids = prismlab.to_subset(images, "R+L")  # L beside R: its plane is the luma, as L alone
    assert ids == (0, 3)
    assert torch.allclose(x[:, 1:], prismlab.to_subset(images, "L")[0])
    assert torch.allclose(x[:, :1], prismlab.to_subset(images, "R")[0])
    with pytest.raises(ConfigError, match=r"unknown channel subset 'R\+NIR'"):  # a photo has R, G, B and L only
        prismlab.to_subset(images, "R+NIR")
    assert subset_ids("NIR+R", ("R", "G", "B", "L", "NIR")) == (4, 0)
    with pytest.raises(ConfigError, match="channel_names must start with R, G, B, L"):
        prismlab.create_model(
            "baseline_cnn", num_classes=3, adapter="channelset", adapter_kw={"channel_names": ("R", "NIR")}
        )


@pytest.mark.parametrize(
    "name, kw, suggestion",
    [
        ("shallow", {"adaptr": "channelset"}, "adapter"),  # a keyword of the adapter wrapper, not of the trunk
        ("shallow", {"stem_widht": 8}, "stem_width"),  # the trunk's own
        ("resnet34", {"small_inpt": True}, "small_input"),  # a trunk given as functools.partial
        ("tv:resnet18", {"adaptr": "channelset"}, "adapter"),
        ("tv:resnet18", {"zero_init_residul": True}, "zero_init_residual"),  # torchvision's class, past its builders
        pytest.param("timm:resnet18", {"drop_rat": 0.1}, "drop_rate", marks=NEEDS_TIMM),
        ("shallow", {"qqqq": 1}, None),  # nothing close: no guess
    ],
)
def test_a_mistyped_model_keyword_is_one_line_with_a_suggestion(name, kw, suggestion):
    with pytest.raises(ConfigError, match=f"got an unexpected keyword argument '{next(iter(kw))}'") as e:
        prismlab.create_model(name, num_classes=4, **kw)
    message = str(e.value)
    assert "\n" not in message
    if suggestion:
        assert message.endswith(f"; did you mean '{suggestion}'?")
    else:
        assert "did you mean" not in message

"""`prismlab export` on real checkpoints (one epoch on the tiny set), run in onnxruntime: the logits
equal PyTorch's to 1e-4 at the training size and at other batch sizes and image sizes."""

import json
import sys

import pytest
import torch
from torch import nn

for package in ("onnx", "onnxscript", "onnxruntime"):
    pytest.importorskip(package, reason=f"{package} is not installed (pip install -e '.[deploy]')")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from prismlab import cli  # noqa: E402
from prismlab.channels import SUBSETS  # noqa: E402
from prismlab.deploy.onnx_export import TOLERANCE, export_model  # noqa: E402
from prismlab.engine.checkpoint import model_from_checkpoint  # noqa: E402
from prismlab.engine.config import make_config  # noqa: E402
from prismlab.engine.rundir import load_checkpoint  # noqa: E402
from prismlab.engine.train import train  # noqa: E402
from prismlab.errors import ConfigError  # noqa: E402

RUNS = {
    "shallow": {"model": "shallow"},
    "resnet34": {"model": "resnet34"},
    "baseline_cnn": {"model": "baseline_cnn"},
    "any_channel": {"model": "baseline_cnn", "model_kw": {"adapter": "channelset"}, "channel_sampling": "hcs"},
    "subset_bn": {
        "model": "baseline_cnn",
        "model_kw": {"adapter": "channelset", "subset_bn": True},
        "channel_sampling": "hcs",
    },
}


@pytest.fixture(scope="module")
def checkpoints(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    out = {}
    for key, kw in RUNS.items():
        cfg = make_config(
            overrides={
                "data": str(tiny_data),
                "out": str(root / key),
                "image_size": 24,
                "batch_size": 16,
                "epochs": 1,
                "test_split": "",
                "cache_dir": str(root / "cache"),
                **kw,
            }
        )
        out[key] = train(cfg) / "best.pt"
    return out


def onnx_logits(path, x: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"image": x.numpy()})[0])


def check_parity(path, checkpoint, subset: str):
    """onnxruntime against the checkpoint's model as trained (not its fused form), at batch 1, 2 and
    5 and at three image sizes."""
    model = model_from_checkpoint(load_checkpoint(checkpoint))
    ids = SUBSETS[subset]
    gen = torch.Generator().manual_seed(7)
    for batch, h, w in ((1, 24, 24), (5, 24, 24), (2, 40, 32)):
        x = torch.randn(batch, len(ids), h, w, generator=gen)
        with torch.no_grad():
            want = model(x, ids)
        got = onnx_logits(path, x)
        assert got.shape == want.shape
        assert (got - want).abs().max() <= TOLERANCE, (path, batch, h, w)


def dims(path) -> list:
    shape = onnx.load(str(path)).graph.input[0].type.tensor_type.shape
    return [d.dim_param or d.dim_value for d in shape.dim]


@pytest.mark.parametrize("key", ["shallow", "resnet34", "baseline_cnn"])
def test_rgb_models_export_with_parity(key, checkpoints, tmp_path, capsys):
    out = tmp_path / f"{key}.onnx"
    assert cli.main(["export", "--checkpoint", str(checkpoints[key]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} (channels RGB" in printed and "onnxruntime matches PyTorch" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # one self-contained file
    assert dims(out) == ["batch", 3, "height", "width"]
    check_parity(out, checkpoints[key], "RGB")


@pytest.mark.parametrize("key", ["any_channel", "subset_bn"])  # subset_bn: each file folds its subset's statistics
def test_any_channel_model_gives_one_file_per_subset(key, checkpoints, tmp_path, capsys):
    out = tmp_path / "any.onnx"
    assert cli.main(["export", "--checkpoint", str(checkpoints[key]), "--out", str(out), "--channels", "RGB,R,RB"]) == 0
    assert capsys.readouterr().out.count("onnxruntime matches PyTorch") == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["any-R.onnx", "any-RB.onnx", "any-RGB.onnx"]
    for subset in ("RGB", "R", "RB"):
        path = tmp_path / f"any-{subset}.onnx"
        assert dims(path) == ["batch", len(subset), "height", "width"]
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert meta["prismlab.channels"] == subset and json.loads(meta["prismlab.channel_ids"]) == list(SUBSETS[subset])
        assert json.loads(meta["prismlab.classes"]) == load_checkpoint(checkpoints[key])["classes"]
        check_parity(path, checkpoints[key], subset)
    # the subsets really are different models: R alone is not RGB's first channel
    x = torch.randn(2, 1, 24, 24)
    assert not torch.allclose(
        onnx_logits(tmp_path / "any-R.onnx", x), onnx_logits(tmp_path / "any-RB.onnx", x.repeat(1, 2, 1, 1))
    )


class FlatHead(nn.Module):
    """A model that only takes the size it was built for (a linear layer on the flattened image)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 16 * 16, 4)

    def forward(self, x, channels=None):
        return self.fc(x.flatten(1))


def test_a_model_fixed_to_one_size_keeps_only_the_batch_dynamic(tmp_path):
    path = tmp_path / "flat.onnx"
    model = FlatHead().eval()
    _, dynamic_hw = export_model(model, (0, 1, 2), 16, path)
    assert not dynamic_hw and dims(path) == ["batch", 3, 16, 16]
    x = torch.randn(3, 3, 16, 16)
    assert (onnx_logits(path, x) - model(x)).abs().max() <= TOLERANCE
    with pytest.raises(ConfigError, match="cannot take 20x20 input"):
        export_model(model, (0, 1, 2), 20, tmp_path / "other.onnx")


def test_export_without_the_deploy_extra_is_one_line(checkpoints, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript now raises ImportError
    out = tmp_path / "m.onnx"
    assert cli.main(["export", "--checkpoint", str(checkpoints["baseline_cnn"]), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs the onnxscript package" in err and ".[deploy]" in err
    assert not out.exists()


def test_exported_form_is_the_fused_one(checkpoints, tmp_path):
    """The file holds the inference form: no BatchNorm left, and the shallow net's 6 layers as 6 Gemm/Conv."""
    path = tmp_path / "s.onnx"
    assert cli.main(["export", "--checkpoint", str(checkpoints["shallow"]), "--out", str(path)]) == 0
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "BatchNormalization" not in ops
    assert sum(op in ("Conv", "Gemm", "MatMul") for op in ops) == 6


def test_one_file_serves_every_subset(checkpoints, tmp_path, capsys):
    """--channels any: one file whose second input says which channels are there; each subset gets
    its own folded statistics, level with the per-subset model."""
    from prismlab.models.any_subset import full_input

    out = tmp_path / "one.onnx"
    assert (
        cli.main(["export", "--checkpoint", str(checkpoints["subset_bn"]), "--out", str(out), "--channels", "any"]) == 0
    )
    assert "one file for every subset: RGB, RG, GB, RB, R, G, B, L" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]
    graph = onnx.load(str(out)).graph
    assert [i.name for i in graph.input] == ["image", "present"] and dims(out) == ["batch", 4, "height", "width"]
    meta = {p.key: json.loads(p.value) if p.value[:1] in "[{" else p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["prismlab.channels"] == "any" and meta["prismlab.subsets"] == [list(v) for v in SUBSETS.values()]
    model = model_from_checkpoint(load_checkpoint(checkpoints["subset_bn"]))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(3)
    got = {}
    for subset, ids in SUBSETS.items():
        for batch, h, w in ((1, 24, 24), (3, 40, 32)):
            x = torch.randn(batch, len(ids), h, w, generator=gen)
            image, present = full_input(x, ids, 4)
            with torch.no_grad():
                want = model(x, ids)
            got[subset] = torch.from_numpy(session.run(None, {"image": image.numpy(), "present": present.numpy()})[0])
            assert (got[subset] - want).abs().max() <= TOLERANCE, (subset, batch, h, w)
    # `present` steers the graph: R's planes declared as R and B (B's plane zero) is another input
    x = torch.randn(2, 1, 24, 24, generator=gen)
    image, _ = full_input(x, (0,), 4)
    as_r, as_rb = (
        session.run(None, {"image": image.numpy(), "present": p})[0]
        for p in (torch.tensor([1.0, 0, 0, 0]).numpy(), torch.tensor([1.0, 0, 1, 0]).numpy())
    )
    assert not torch.allclose(torch.from_numpy(as_r), torch.from_numpy(as_rb), atol=1e-3)


def test_one_file_for_every_subset_needs_a_masked_adapter(checkpoints, tmp_path, capsys):
    out = tmp_path / "one.onnx"
    assert (
        cli.main(["export", "--checkpoint", str(checkpoints["baseline_cnn"]), "--out", str(out), "--channels", "any"])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "reads a presence mask (channelset)" in err
    assert not out.exists()

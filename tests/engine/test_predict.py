"""`prismlab predict` on files of one, three and four channels, with a channel-set model and a naive
one, each trained for an epoch on a 6-class synthetic set (6 classes: top-5 is a real choice)."""

import numpy as np
import pytest
import torch
from PIL import Image

from prismlab import cli
from prismlab.data.channels import to_subset
from prismlab.data.decode import load_image, resize_center_crop
from prismlab.data.synth import make_synthetic
from prismlab.engine.checkpoint import model_from_checkpoint
from prismlab.engine.config import make_config
from prismlab.engine.predict import predict
from prismlab.engine.rundir import load_checkpoint
from prismlab.engine.train import train

MODELS = {
    "ours": {"model_kw": {"adapter": "channelset"}, "channel_sampling": "hcs"},
    "naive": {"model_kw": {"adapter": "naive"}, "channel_sampling": "rgb"},
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    data = make_synthetic(
        root / "data", seed=1, num_classes=6, train_per_class=8, val_per_class=2, test_per_class=1, size=24
    )
    out = {}
    for name, kw in MODELS.items():
        # cache_dir: conftest's private cache is per test, and this fixture runs before it
        cfg = make_config(
            overrides={
                "data": str(data),
                "out": str(root / name),
                "image_size": 24,
                "batch_size": 16,
                "epochs": 1,
                "lr": 0.05,
                "test_split": "",
                "cache_dir": str(root / "cache"),
                **kw,
            }
        )
        out[name] = train(cfg) / "best.pt"
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Files in three modes; the channels differ from each other, so R alone is not RGB."""
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    rgb = np.zeros((30, 40, 3), np.uint8)
    rgb[..., 0] = np.linspace(0, 255, 40, dtype=np.uint8)  # R: a horizontal ramp
    rgb[..., 1] = np.linspace(255, 0, 30, dtype=np.uint8)[:, None]  # G: a vertical ramp
    rgb[..., 2] = rng.integers(0, 256, (30, 40))  # B: noise
    paths = {"gray": d / "gray.jpg", "rgba": d / "rgba.png", "rgb": d / "rgb.jpg", "rgb_png": d / "rgb.png"}
    Image.fromarray(rgb).convert("L").save(paths["gray"])
    alpha = rng.integers(0, 256, (30, 40, 1), dtype=np.uint8)
    Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA").save(paths["rgba"])
    Image.fromarray(rgb).save(paths["rgb"], quality=95)
    Image.fromarray(rgb).save(paths["rgb_png"])  # the RGBA file's colours without its alpha
    assert Image.open(paths["gray"]).mode == "L" and Image.open(paths["rgba"]).mode == "RGBA"
    return paths


def model_probs(checkpoint, path, subset):
    """What predict should give: the file decoded, resized as in training, cut to `subset`."""
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt)
    img, _ = load_image(path)
    x = torch.from_numpy(resize_center_crop(img, ckpt["config"]["image_size"])).permute(2, 0, 1)[None]
    with torch.no_grad():
        return model(*to_subset(x, subset)).softmax(1)[0]


def parse(out: str) -> dict:
    """CLI output -> {header: [(prob, class), ...]}."""
    blocks, header = {}, None
    for line in out.splitlines():
        if line.startswith("  "):
            p, cls = line.split()
            blocks[header].append((float(p), cls))
        else:
            header = line
            blocks[header] = []
    return blocks


@pytest.mark.parametrize("model", list(MODELS))
def test_cli_prints_sorted_top5_for_gray_rgba_and_rgb_files(model, checkpoints, images, capsys):
    files = [images["gray"], images["rgba"], images["rgb"]]
    assert cli.main(["predict", *map(str, files), "--checkpoint", str(checkpoints[model])]) == 0
    blocks = parse(capsys.readouterr().out)
    assert list(blocks) == [
        f"{images['gray']} (channels L, gray file)",
        f"{images['rgba']} (channels RGB)",
        f"{images['rgb']} (channels RGB)",
    ]
    classes = load_checkpoint(checkpoints[model])["classes"]
    for top in blocks.values():
        probs = [p for p, _ in top]
        assert len(top) == 5 and probs == sorted(probs, reverse=True)
        assert 0 < sum(probs) <= 1 + 5 * 0.0005  # printed to 3 decimals
        assert len({c for _, c in top}) == 5 and {c for _, c in top} <= set(classes)


@pytest.mark.parametrize("model", list(MODELS))
def test_predict_feeds_the_model_the_files_true_or_chosen_channels(model, checkpoints, images):
    ckpt = checkpoints[model]
    band_r, r_only = predict(ckpt, [images["gray"], images["rgb"]], "R", topk=6)
    gray, rgb, rgba = predict(ckpt, [images["gray"], images["rgb"], images["rgba"]], "RGB", topk=6)
    assert (gray["channels"], gray["read_as"]) == ("L", "gray")  # a gray file asked for RGB is fed as L
    assert (band_r["channels"], band_r["read_as"]) == ("R", "bands")  # a 1-band file declared R is R
    assert (r_only["channels"], r_only["read_as"]) == ("R", "rgb")
    assert (rgba["channels"], rgba["gray"]) == ("RGB", False)
    for res, path, subset in (
        (gray, images["gray"], "L"),
        (band_r, images["gray"], "R"),
        (r_only, images["rgb"], "R"),
        (rgb, images["rgb"], "RGB"),
        (rgba, images["rgb_png"], "RGB"),
    ):  # alpha is dropped, not blended in
        want = model_probs(ckpt, path, subset)
        got = torch.zeros_like(want)
        for t in res["top"]:
            got[t["label"]] = t["prob"]
        assert torch.allclose(got, want, atol=1e-5), (path, subset)
        assert sum(t["prob"] for t in res["top"]) == pytest.approx(1, abs=1e-5)  # all 6 classes
    assert not torch.allclose(model_probs(ckpt, images["rgb"], "R"), model_probs(ckpt, images["rgb"], "RGB"))


@pytest.mark.parametrize("channels", ["XY", "all", "RGB,R"])
def test_a_subset_predict_cannot_use_is_a_one_line_error(channels, checkpoints, images, capsys):
    code = cli.main(["predict", str(images["rgb"]), "--checkpoint", str(checkpoints["ours"]), "--channels", channels])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("prismlab: error: ") and err.count("\n") == 1 and channels in err


@pytest.mark.parametrize("model", list(MODELS))
def test_files_predicted_together_get_what_each_gets_alone(model, checkpoints, images):
    """predict batches the files of one subset (gray files are their own group): each keeps its answer and place."""
    files = [images["rgb"], images["gray"], images["rgba"], images["rgb_png"], images["gray"]]
    together = predict(checkpoints[model], files, "RB", topk=6)
    alone = [predict(checkpoints[model], [f], "RB", topk=6)[0] for f in files]
    assert [r["image"] for r in together] == [str(f) for f in files]
    assert [r["channels"] for r in together] == ["RB", "L", "RB", "RB", "L"]
    for a, b in zip(together, alone):
        assert (a["channels"], a["gray"]) == (b["channels"], b["gray"])
        assert [t["label"] for t in a["top"]] == [t["label"] for t in b["top"]]
        assert [t["prob"] for t in a["top"]] == pytest.approx([t["prob"] for t in b["top"]], abs=1e-6)

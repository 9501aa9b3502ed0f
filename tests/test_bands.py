"""Declared extra bands end to end on the synthetic set with a near-infrared band: the library trains
the channel-set adapter with per-subset statistics over subsets of R, G, B, L and NIR; `eval --bands`
and `predict` read 2- and 4-band arrays as the subsets their --channels name."""

import json

import numpy as np
import pytest
import torch

from prismlab import cli, create_model, load_model
from prismlab.data.channels import normalise
from prismlab.data.splits import load_split
from prismlab.data.synth import make_synthetic

NAMES = ("R", "G", "B", "L", "NIR")
NIR = 4


@pytest.fixture(scope="module")
def nir_data(tmp_path_factory):
    return make_synthetic(
        tmp_path_factory.mktemp("nir") / "data",
        seed=0,
        num_classes=4,
        train_per_class=48,
        val_per_class=2,
        test_per_class=16,
        size=16,
        gray_fraction=0.0,
        nir=True,
    )


def arrays(root, split):
    entries = load_split(root / f"{split}.txt")
    x = torch.from_numpy(np.stack([np.load(e.path) for e in entries.entries])).float() / 255
    return x, torch.tensor([e.label for e in entries.entries])


def test_the_library_learns_the_declared_band_with_its_own_statistics(nir_data):
    torch.manual_seed(0)
    x, y = arrays(nir_data, "train")
    tx, ty = arrays(nir_data, "test")
    subsets = [(0, 1, 2), (NIR,), (0, NIR), (0, 1, 2, NIR)]  # RGB, NIR alone, R+NIR, all four bands
    model = create_model(
        "baseline_cnn", num_classes=4, adapter="channelset", subset_bn=True, adapter_kw={"channel_names": NAMES}
    )
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    bands = (0, 1, 2, NIR)  # the arrays' planes
    for _ in range(6):
        for idx in torch.randperm(len(y)).split(32):
            chunks = idx.chunk(len(subsets))
            xs = [normalise(x[c][:, [bands.index(i) for i in s]], s) for c, s in zip(chunks, subsets)]
            loss = torch.nn.functional.cross_entropy(model(xs, subsets), torch.cat([y[c] for c in chunks]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    acc = {}
    with torch.no_grad():
        for s in subsets:
            acc[s] = float((model(normalise(tx[:, [bands.index(i) for i in s]], s), s).argmax(1) == ty).float().mean())
    assert acc[(NIR,)] > 0.45 and acc[(0, 1, 2, NIR)] > 0.6, acc  # 4 classes: chance is 0.25
    bn = next(m for m in model.trunk.modules() if hasattr(m, "subset_batches"))
    from prismlab.models.subset_bn import subset_index

    assert all(bn.subset_batches[subset_index(s, len(NAMES))] > 0 for s in subsets)  # each set its own statistics


@pytest.fixture(scope="module")
def nir_checkpoint(tiny_data, tmp_path_factory):
    """A model that declares NIR, trained by the CLI on the photos (its NIR weights stay as built)."""
    out = tmp_path_factory.mktemp("nirrun") / "run"
    assert (
        cli.main(
            [
                "train",
                "--data",
                str(tiny_data),
                "--out",
                str(out),
                "model=baseline_cnn",
                "model_kw.adapter=channelset",
                "model_kw.subset_bn=true",
                "model_kw.adapter_kw.channel_names=[R,G,B,L,NIR]",
                "channel_sampling=hcs",
                "epochs=1",
                "image_size=16",
                "batch_size=16",
                "test_split=",
            ]
        )
        == 0
    )
    return out / "best.pt"


def test_eval_bands_reads_each_file_as_the_declared_subset(nir_data, nir_checkpoint, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert (
        cli.main(
            [
                "eval",
                "--checkpoint",
                str(nir_checkpoint),
                "--split",
                str(nir_data / "test.txt"),
                "--channels",
                "R+G+B+NIR",
                "--bands",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())["results"]["R+G+B+NIR"]
    model = load_model(nir_checkpoint).eval()
    x, y = arrays(nir_data, "test")
    with torch.no_grad():
        want = (model(normalise(x, (0, 1, 2, NIR)), (0, 1, 2, NIR)).argmax(1) == y).float().mean()
    assert res["n"] == len(y) and res["accuracy"] == pytest.approx(float(want))
    capsys.readouterr()
    # four bands read as two: one line naming the file
    assert (
        cli.main(
            [
                "eval",
                "--checkpoint",
                str(nir_checkpoint),
                "--split",
                str(nir_data / "test.txt"),
                "--channels",
                "R+NIR",
                "--bands",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ".npy: 4 bands, but --channels R+NIR asks for 2" in err


def test_predict_reads_a_two_band_array_as_r_and_nir(nir_data, nir_checkpoint, tiny_data, tmp_path, capsys):
    full = np.load(next((nir_data / "images").rglob("*.npy")))
    two = tmp_path / "r_nir.npy"
    np.save(two, full[[0, 3]].transpose(1, 2, 0))  # [H, W, 2]: R and NIR
    out = tmp_path / "p.json"
    assert (
        cli.main(["predict", "--checkpoint", str(nir_checkpoint), "--channels", "R+NIR", "--json", str(out), str(two)])
        == 0
    )
    got = json.loads(out.read_text())[0]
    model = load_model(nir_checkpoint, form="inference", channels=(0, NIR))
    x = normalise(torch.from_numpy(full[[0, 3]]).float()[None] / 255, (0, NIR))
    with torch.no_grad():
        p = model(x, (0, NIR)).softmax(1)[0]
    assert got["channels"] == "R+NIR" and got["top"][0]["prob"] == pytest.approx(float(p.max()), abs=1e-4)
    capsys.readouterr()
    photo = next((tiny_data / "images").rglob("*.jpg"))
    assert cli.main(["predict", "--checkpoint", str(nir_checkpoint), "--channels", "R+NIR", str(photo)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a photo (RGB or gray), but --channels R+NIR asks for 2 bands" in err
    assert cli.main(["predict", "--checkpoint", str(nir_checkpoint), "--channels", "R+XYZ", str(two)]) == 2
    assert "declared channels joined by + (R+G+B+L+NIR)" in capsys.readouterr().err


def test_tiffs_of_any_band_count_read_as_their_declared_channels(nir_checkpoint, tmp_path):
    tifffile = pytest.importorskip("tifffile", reason="band TIFFs need tifffile (pip install 'prismlab[bands]')")
    rng = np.random.default_rng(0)
    five = rng.integers(0, 256, (5, 16, 16), dtype=np.uint8)  # planar: R, G, B, L, NIR
    two = (rng.integers(0, 65536, (16, 16, 2))).astype(np.uint16)  # contiguous, 16-bit: R and NIR
    tifffile.imwrite(tmp_path / "five.tif", five, photometric="minisblack", planarconfig="separate")
    tifffile.imwrite(tmp_path / "two.tiff", two, photometric="minisblack", planarconfig="contig")
    model = load_model(nir_checkpoint).eval()
    for name, channels, ids, want in [
        ("five.tif", "R+G+B+L+NIR", (0, 1, 2, 3, NIR), five),
        ("two.tiff", "R+NIR", (0, NIR), (two >> 8).astype(np.uint8).transpose(2, 0, 1)),
    ]:
        out = tmp_path / f"{name}.json"
        assert (
            cli.main(
                [
                    "predict",
                    "--checkpoint",
                    str(nir_checkpoint),
                    "--channels",
                    channels,
                    "--json",
                    str(out),
                    str(tmp_path / name),
                ]
            )
            == 0
        )
        with torch.no_grad():
            p = model(normalise(torch.from_numpy(want).float()[None] / 255, ids), ids).softmax(1)[0]
        assert json.loads(out.read_text())[0]["top"][0]["prob"] == pytest.approx(float(p.max()), abs=1e-4), name


def test_a_fifo_or_an_rgba_photo_is_read_as_everywhere_else(nir_checkpoint, tiny_data, tmp_path, capsys):
    import os
    import threading

    from PIL import Image

    fifo = tmp_path / "x.npy"
    os.mkfifo(fifo)
    timer = threading.Timer(60, lambda: open(fifo, "wb").close())  # a hang fails instead of blocking
    timer.start()
    try:
        assert cli.main(["predict", "--checkpoint", str(nir_checkpoint), "--channels", "R+NIR", str(fifo)]) == 2
    finally:
        timer.cancel()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "x.npy: cannot read (not a regular file)" in err
    # RGBA photos in an image folder: eval --bands RGB reads their colour, as predict does
    classes = (tiny_data / "classes.txt").read_text().split()
    paths = []
    for label, name in enumerate(classes):
        photo = next((tiny_data / "images" / name).glob("*.jpg"))
        (tmp_path / "tree" / name).mkdir(parents=True)
        paths.append(tmp_path / "tree" / name / "x.png")
        Image.open(photo).convert("RGBA").save(paths[-1])
    out, pred = tmp_path / "e.json", tmp_path / "p.json"
    assert (
        cli.main(
            [
                "eval",
                "--checkpoint",
                str(nir_checkpoint),
                "--split",
                str(tmp_path / "tree"),
                "--channels",
                "RGB",
                "--bands",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    assert cli.main(["predict", "--checkpoint", str(nir_checkpoint), "--json", str(pred), *map(str, paths)]) == 0
    hits = sum(r["top"][0]["label"] == label for label, r in enumerate(json.loads(pred.read_text())))
    res = json.loads(out.read_text())["results"]["RGB"]
    assert res["n"] == len(classes) and res["accuracy"] == pytest.approx(hits / len(classes))

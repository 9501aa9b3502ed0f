"""The synthetic set: course layout, determinism, gray files, and the class design (colour-only pairs)."""

import hashlib
import re
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prismlab.data.channels import LUMA
from prismlab.data.synth import COLOURS, MAX_CLASSES, class_names, class_specs, colour_pairs, make_synthetic
from prismlab.errors import ConfigError

SMALL = dict(num_classes=5, train_per_class=4, val_per_class=2, test_per_class=2, size=16, gray_fraction=0.25)
PER_CLASS = {"train": 4, "val": 2, "test": 2}
LINE = re.compile(r"^images/(c\d\d_[a-z]+_[a-z]+_[a-z]+)/(\1_\d{5}\.jpg) (\d+)$")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp("synth") / "data", seed=0, **SMALL)


def split_lines(root: Path, split: str) -> list[tuple[str, str, int]]:
    """(class dir, relative path, label) of every line, checking the line format on the way."""
    out = []
    for line in (root / f"{split}.txt").read_text().splitlines():
        m = LINE.match(line)
        assert m, f"{split}.txt: bad line {line!r}"
        out.append((m.group(1), line.rsplit(" ", 1)[0], int(m.group(3))))
    return out


def file_hashes(root: Path) -> dict[str, str]:
    files = (p for p in sorted(root.rglob("*")) if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_layout_and_line_format(small):
    names = (small / "classes.txt").read_text().splitlines()
    assert len(names) == SMALL["num_classes"]
    assert sorted(p.name for p in (small / "images").iterdir()) == names
    listed = []
    for split, count in PER_CLASS.items():
        lines = split_lines(small, split)
        assert len(lines) == count * len(names)
        listed += [path for _, path, _ in lines]
        for _, path, _ in lines:
            with Image.open(small / path) as im:
                assert im.format == "JPEG" and im.size == (SMALL["size"], SMALL["size"])
    # every image is in exactly one split, and every split line names an image
    on_disk = sorted(str(p.relative_to(small)) for p in (small / "images").rglob("*.jpg"))
    assert sorted(listed) == on_disk and len(set(listed)) == len(listed)
    readme = (small / "README.md").read_text()
    assert "seed=0" in readme and "\n\n" not in readme.strip()  # one paragraph


def test_labels_are_ranks_of_sorted_class_names(small):
    names = (small / "classes.txt").read_text().splitlines()
    assert names == sorted(names) == class_names(SMALL["num_classes"])
    for split in PER_CLASS:
        for class_dir, _, label in split_lines(small, split):
            assert names[label] == class_dir


def test_every_class_in_every_split(small):
    for split, count in PER_CLASS.items():
        labels = [label for _, _, label in split_lines(small, split)]
        assert {k: labels.count(k) for k in set(labels)} == {k: count for k in range(SMALL["num_classes"])}


def test_same_seed_gives_byte_identical_files(small, tmp_path):
    again = make_synthetic(tmp_path / "again", seed=0, **SMALL)
    assert file_hashes(again) == file_hashes(small)


def test_different_seeds_give_different_images(small, tmp_path):
    other = make_synthetic(tmp_path / "other", seed=1, **SMALL)
    a, b = file_hashes(small), file_hashes(other)
    assert a.keys() == b.keys()
    assert a["train.txt"] == b["train.txt"]  # the layout does not depend on the seed ...
    images = [k for k in a if k.endswith(".jpg")]
    assert all(a[k] != b[k] for k in images)  # ... the pixels do


def test_gray_files_are_single_channel(small, tmp_path):
    for split, count in PER_CLASS.items():
        n = count * SMALL["num_classes"]
        modes = [Image.open(small / path).mode for _, path, _ in split_lines(small, split)]
        assert modes.count("L") == max(1, round(SMALL["gray_fraction"] * n)), split
        assert set(modes) == {"L", "RGB"}
    none = make_synthetic(tmp_path / "none", seed=0, **{**SMALL, "gray_fraction": 0.0})
    assert {Image.open(p).mode for p in none.rglob("*.jpg")} == {"RGB"}


def channel_and_gray_means(root: Path) -> dict[int, np.ndarray]:
    """Per label: mean R, G, B and gray level over its training images."""
    stats: dict[int, list] = {}
    for _, path, label in split_lines(root, "train"):
        with Image.open(root / path) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.float64)
            gray = np.asarray(im.convert("L"), dtype=np.float64)
        stats.setdefault(label, []).append([*rgb.mean((0, 1)), gray.mean()])
    return {k: np.mean(v, axis=0) for k, v in stats.items()}


def test_colour_only_pair_differs_in_colour_but_not_in_gray(tmp_path):
    root = make_synthetic(
        tmp_path / "pairs",
        seed=0,
        num_classes=10,
        train_per_class=60,
        val_per_class=1,
        test_per_class=1,
        size=16,
        gray_fraction=0.0,
    )
    names = (root / "classes.txt").read_text().splitlines()
    means = channel_and_gray_means(root)
    red, blue = names.index("c00_red_solid_disc"), names.index("c01_blue_solid_disc")
    assert (red, blue) in colour_pairs(10)
    delta = means[red] - means[blue]
    assert delta[0] > 20 and delta[2] < -20, delta  # red has more R, blue more B ...
    assert abs(delta[3]) < 15, delta  # ... at the same gray level
    # control: a class of another luminance is told apart by the same gray statistic
    yellow = next(k for k, n in enumerate(names) if "_yellow_" in n)
    assert abs(means[yellow][3] - means[red][3]) > 40, (means[yellow], means[red])


def test_class_design():
    specs = class_specs(10)
    assert len(set(specs)) == 10
    pairs = colour_pairs(10)
    assert len(pairs) >= 2
    for a, b in pairs:
        # same shape and texture, colours of equal luminance
        assert specs[a][:2] == specs[b][:2]
        luma_a, luma_b = (float(np.dot(COLOURS[specs[k][2]], LUMA)) for k in (a, b))
        assert abs(luma_a - luma_b) < 1.5
    # outside the colour-only pairs, shape or texture tells every two classes apart (so gray can)
    paired = {k for pair in pairs for k in pair}
    for a, b in combinations(range(10), 2):
        if (a, b) not in pairs:
            assert specs[a][:2] != specs[b][:2], (specs[a], specs[b])
    assert len({s[2] for s in specs}) == len(COLOURS)  # every colour is used
    assert len(paired) < 10  # most classes are not colour-only


@pytest.mark.parametrize("n", [2, 50, MAX_CLASSES])
def test_class_names_are_unique_and_sort_in_label_order(n):
    names = class_names(n)
    assert len(set(class_specs(n))) == n and len(set(names)) == n
    assert names == sorted(names)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(num_classes=1), "num_classes"),
        (dict(num_classes=MAX_CLASSES + 1), "num_classes"),
        (dict(val_per_class=0), "val_per_class"),
        (dict(size=4), "size"),
        (dict(gray_fraction=1.5), "gray_fraction"),
    ],
)
def test_bad_arguments_are_config_errors(tmp_path, kw, message):
    with pytest.raises(ConfigError, match=message):
        make_synthetic(tmp_path / "x", **{**SMALL, **kw})


def test_refuses_a_non_empty_folder(small, tmp_path):
    (tmp_path / "old.txt").write_text("stale")
    with pytest.raises(ConfigError, match="not an empty directory"):
        make_synthetic(tmp_path, **SMALL)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert make_synthetic(empty, **SMALL) == empty

"""The decode-once cache: built once, reused, rebuilt when its inputs change, RGB-correct."""

import numpy as np
import pytest
from PIL import Image

from prismlab.data import cache as cache_mod
from prismlab.data.cache import build_cache
from prismlab.data.splits import load_split
from prismlab.errors import DataError


@pytest.fixture
def decode_calls(monkeypatch):
    """Counts real decodes (the cache decodes in-process for small splits)."""
    calls = []
    real = cache_mod.load_image

    def counting(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(cache_mod, "load_image", counting)
    return calls


def small_split(tmp_path, images: dict[str, Image.Image]):
    """Write the images and a split file listing them (labels 0, 1, ...)."""
    (tmp_path / "img").mkdir()
    lines = []
    for i, (name, img) in enumerate(images.items()):
        img.save(tmp_path / "img" / name)
        lines.append(f"img/{name} {i}\n")
    (tmp_path / "split.txt").write_text("".join(lines))
    return tmp_path / "split.txt"


def test_built_once_then_reused(tiny_data, private_cache, decode_calls):
    split = load_split(tiny_data / "val.txt")
    first = build_cache(split, 16)
    assert len(decode_calls) == len(split) == len(first) == 24
    folders = list(private_cache.iterdir())
    again = build_cache(split, 16)
    assert len(decode_calls) == 24, "a second build_cache decoded again"
    assert list(private_cache.iterdir()) == folders
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.labels, [e.label for e in split.entries])
    assert first.images.shape == (24, 16, 16, 3) and first.images.dtype == np.uint8
    assert first.num_classes == 4


def test_rebuilt_when_size_or_split_changes(tiny_data, tmp_path, private_cache, decode_calls):
    text = (tiny_data / "val.txt").read_text()
    split_file = tmp_path / "val.txt"
    split_file.write_text(text.replace("images/", f"{tiny_data}/images/"))
    build_cache(load_split(split_file), 16)
    build_cache(load_split(split_file), 20)  # another size: another cache
    assert len(decode_calls) == 48
    split_file.write_text("".join(split_file.read_text().splitlines(keepends=True)[:-1]))  # one line fewer
    edited = build_cache(load_split(split_file), 16)
    assert len(decode_calls) == 48 + 23 and len(edited) == 23
    assert len(list(private_cache.iterdir())) == 3


def test_red_is_channel_0_and_gray_is_flagged(tmp_path):
    split = small_split(
        tmp_path,
        {
            "red.png": Image.new("RGB", (30, 20), (255, 0, 0)),
            "blue.png": Image.new("RGB", (20, 20), (0, 0, 255)),
            "gray.png": Image.new("L", (20, 20), 90),
        },
    )
    data = build_cache(load_split(split), 8)
    assert data.images.shape == (3, 8, 8, 3)
    assert (data.images[0] == [255, 0, 0]).all()  # a BGR slip would put red in channel 2
    assert (data.images[1] == [0, 0, 255]).all()
    assert (data.images[2] == 90).all()
    assert data.gray.tolist() == [False, False, True]


def test_gray_flags_of_the_synthetic_set(tiny_data):
    split = load_split(tiny_data / "train.txt")
    data = build_cache(split, 24)
    expected = [Image.open(e.path).mode == "L" for e in split.entries]
    assert any(expected), "the tiny set should hold a gray file"
    assert data.gray.tolist() == expected
    g = data.images[data.gray]
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()


def test_bad_image_names_the_split_line_or_is_skipped(tmp_path):
    split = small_split(tmp_path, {"a.png": Image.new("RGB", (8, 8), (1, 2, 3)), "b.png": Image.new("RGB", (8, 8))})
    (tmp_path / "img" / "b.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"b\.png.*split\.txt:2"):
        build_cache(load_split(split), 8)
    data = build_cache(load_split(split), 8, skip_bad=True)
    assert len(data) == 1 and data.labels.tolist() == [0] and (data.images[0] == [1, 2, 3]).all()
    assert len(data.skipped) == 1 and "b.png" in data.skipped[0]
    # The cache built with skip_bad must not hide the bad file from a later strict run.
    with pytest.raises(DataError, match="b.png"):
        build_cache(load_split(split), 8)


def test_parallel_build_keeps_order_and_compacts_skipped_files(tmp_path):
    """Real data sets take the process-pool path (more than 256 images): labels stay aligned with
    images, and a skipped bad file is compacted away."""
    import numpy as np
    from PIL import Image

    from prismlab.data.cache import build_cache
    from prismlab.data.splits import read_split

    lines = []
    for i in range(300):
        label = i % 3
        p = tmp_path / "images" / f"{i:03d}.png"
        p.parent.mkdir(exist_ok=True)
        Image.new("RGB", (8, 8), (i % 256, label * 100, 0)).save(p)
        lines.append(f"images/{i:03d}.png {label}")
    (tmp_path / "images" / "100.png").write_bytes(b"not an image")
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    data = build_cache(read_split(tmp_path / "train.txt", num_classes=3), 8, tmp_path / "c", skip_bad=True, workers=2)
    assert len(data) == 299 and len(data.skipped) == 1 and "100.png" in data.skipped[0]
    kept = [i for i in range(300) if i != 100]
    assert np.array_equal(data.labels, np.array([i % 3 for i in kept]))
    assert np.array_equal(data.images[:, 0, 0, 0], np.array([i % 256 for i in kept], dtype=np.uint8))
    assert np.array_equal(data.images[:, 0, 0, 1], np.array([(i % 3) * 100 for i in kept], dtype=np.uint8))

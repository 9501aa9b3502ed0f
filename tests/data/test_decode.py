"""Decoding real image files written with PIL: colour order, gray policy, odd modes, bad files."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prismlab.data import decode
from prismlab.data.decode import load_image, resize_center_crop
from prismlab.errors import DataError

MINI = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mini-imagenet-50"


def save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def assert_rgb(arr, is_gray, expected, gray=False, tol=0):
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
    assert is_gray is gray
    diff = np.abs(arr.astype(int) - np.array(expected)).max()
    assert diff <= tol, f"pixels {arr[0, 0]} differ from {expected} by {diff}"


@pytest.mark.parametrize("name", ["red.jpg", "red.png"])
def test_red_stays_in_channel_0(tmp_path, name):
    arr, is_gray = load_image(save(Image.new("RGB", (16, 12), (255, 0, 0)), tmp_path / name))
    assert arr.shape == (12, 16, 3)
    assert_rgb(arr, is_gray, (255, 0, 0), tol=3)  # a BGR decoder would give (0, 0, 255)


def test_gray_jpeg_is_marked_and_replicated(tmp_path):
    arr, is_gray = load_image(save(Image.new("L", (8, 8), 77), tmp_path / "g.jpg"))
    assert is_gray is True
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()
    assert abs(int(arr[0, 0, 0]) - 77) <= 2


def test_gray_with_alpha_and_one_bit(tmp_path):
    arr, is_gray = load_image(save(Image.new("LA", (4, 4), (90, 0)), tmp_path / "la.png"))
    assert_rgb(arr, is_gray, (90, 90, 90), gray=True)
    bits = Image.new("1", (4, 4), 0)
    bits.putpixel((0, 0), 1)
    arr, is_gray = load_image(save(bits, tmp_path / "bits.png"))
    assert is_gray and arr[0, 0].tolist() == [255, 255, 255] and arr[1, 1].tolist() == [0, 0, 0]


def test_rgba_drops_alpha_without_compositing(tmp_path):
    # Fully transparent red: compositing on black would give (0, 0, 0).
    arr, is_gray = load_image(save(Image.new("RGBA", (4, 4), (255, 0, 0, 0)), tmp_path / "a.png"))
    assert_rgb(arr, is_gray, (255, 0, 0))


def palette_image(transparency=None) -> Image.Image:
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 255, 255, 255, 0] + [0] * 762)
    img.putpixel((3, 3), 1)
    if transparency is not None:
        img.info["transparency"] = transparency
    return img


@pytest.mark.parametrize("transparency", [None, 1, bytes([0, 128])])  # bytes: one alpha per entry
def test_palette_png(tmp_path, transparency, recwarn):
    arr, is_gray = load_image(save(palette_image(transparency), tmp_path / "p.png"))
    assert is_gray is False
    assert arr[0, 0].tolist() == [0, 0, 255] and arr[3, 3].tolist() == [255, 255, 0]
    assert not [w for w in recwarn if "Palette" in str(w.message)]


def test_cmyk_jpeg_converts_to_rgb(tmp_path):
    cyan = Image.new("CMYK", (8, 8), (255, 0, 0, 0))
    arr, is_gray = load_image(save(cyan, tmp_path / "c.jpg"))
    r, g, b = (int(v) for v in arr[4, 4])
    assert not is_gray and r < 40 and g > 215 and b > 215


def test_16_bit_png_scales_instead_of_clipping(tmp_path):
    values = np.array([[0, 255, 32768, 65535]], dtype=np.uint16)
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    arr, is_gray = load_image(save(img, tmp_path / "deep.png"))
    assert is_gray and arr[..., 0].tolist() == [[0, 0, 128, 255]]
    assert (arr[..., 0] == arr[..., 2]).all()


def test_32_bit_integer_tiff_uses_the_16_bit_range(tmp_path):
    values = np.array([[0, 32768, 65535, 100000]], dtype=np.int32)
    img = Image.fromarray(values)
    assert img.mode == "I"
    arr, is_gray = load_image(save(img, tmp_path / "wide.tif"))
    assert is_gray and arr[..., 1].tolist() == [[0, 128, 255, 255]]


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (8, 4), (255, 0, 0))
    img.paste((0, 0, 255), (4, 0, 8, 4))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display turns it 90 degrees clockwise
    arr, _ = load_image(save(img, tmp_path / "o.png", exif=exif.tobytes()))
    assert arr.shape == (8, 4, 3)
    assert arr[0, 0].tolist() == [255, 0, 0] and arr[-1, -1].tolist() == [0, 0, 255]


def noise_jpeg(path: Path) -> Path:
    rng = np.random.default_rng(0)
    return save(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), path, quality=95)


def test_bad_files_raise_one_line_data_errors(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    data = noise_jpeg(tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.jpg").write_text("this is not a picture\n")
    cases = {
        "empty.jpg": "empty file",
        "cut.jpg": "truncated",
        "text.jpg": "not an image",
        "missing.jpg": "image not found",
    }
    for name, reason in cases.items():
        with pytest.raises(DataError) as err:
            load_image(tmp_path / name)
        message = str(err.value)
        assert name in message and reason in message and "\n" not in message


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height 1-bit pixels: a few bytes, no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(b"\0"))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + pixels + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [9000, 20000])  # over the limit; over twice the limit
def test_decompression_bomb_is_refused(tmp_path, side):
    with pytest.raises(DataError, match=r"bomb\.png: cannot decode image \(.*bomb"):
        load_image(png_header_only(tmp_path / "bomb.png", side, side))


def test_pixel_limit_is_read_at_call_time(tmp_path, monkeypatch):
    path = save(Image.new("RGB", (20, 10)), tmp_path / "small.png")
    assert load_image(path)[0].shape == (10, 20, 3)
    monkeypatch.setattr(decode, "MAX_PIXELS", 199)
    with pytest.raises(DataError, match=r"small\.png: cannot decode image \(20x10 is over 199 pixels"):
        load_image(path)


@pytest.mark.parametrize("shape, size", [((30, 50), 16), ((50, 30), 16), ((4, 6), 8), ((12, 12), 12)])
def test_resize_center_crop_shapes(shape, size):
    out = resize_center_crop(np.zeros(shape + (3,), dtype=np.uint8), size)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8


def test_resize_center_crop_keeps_the_centre():
    img = np.zeros((10, 40, 3), dtype=np.uint8)
    img[:, :10] = (255, 0, 0)
    img[:, 10:30] = (0, 255, 0)
    img[:, 30:] = (0, 0, 255)
    out = resize_center_crop(img, 10)
    assert (out == np.array([0, 255, 0], dtype=np.uint8)).all()


def test_resize_antialiases_when_shrinking():
    board = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    out = resize_center_crop(np.repeat(board[:, :, None], 3, axis=2), 8)
    assert np.abs(out.astype(int) - 128).max() <= 8  # point sampling would keep 0s and 255s


def test_resize_rejects_non_uint8_rgb():
    with pytest.raises(ValueError):
        resize_center_crop(np.zeros((8, 8), dtype=np.uint8), 4)
    with pytest.raises(ValueError):
        resize_center_crop(np.zeros((8, 8, 3), dtype=np.float32), 4)


@pytest.mark.skipif(not MINI.is_dir(), reason="mini-imagenet-50 not present (../shared/data/mini-imagenet-50)")
def test_real_one_channel_jpeg_is_gray():
    gray_file = None
    for path in sorted((MINI / "images").glob("*/*.jpg")):
        with Image.open(path) as img:  # reads the header only
            if img.mode == "L":
                gray_file = path
                break
    assert gray_file is not None, "the data set's README promises 1-channel JPEGs"
    arr, is_gray = load_image(gray_file)
    assert is_gray and arr.shape == (84, 84, 3)
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()

"""Image files -> uint8 RGB arrays, with PIL only (cv2 decodes to BGR, an easy silent R/B swap).

Storage policy: every image becomes uint8 HxWx3 in RGB order. A 1-channel image (modes "1", "L",
"LA", 16- and 32-bit integer, float) keeps the truth that it is gray: load_image returns
is_gray=True and its one channel replicated to R=G=B, so every channel subset of it agrees with
its luminance. Alpha is dropped, not composited (convert("RGB")); palette and CMYK images go
through PIL's own conversion to RGB. 16-bit values are scaled to 8 bits (v >> 8), never clipped
at 255. EXIF orientation is applied. Any unreadable file is a DataError naming the path.
"""

from __future__ import annotations

import os
import stat
import warnings
from typing import Union

import numpy as np
from PIL import Image, ImageOps

from prismlab.errors import DataError, first_line

# Decompression-bomb guard: a tiny file may declare a huge image. Checked against the header
# before decoding; PIL's own check (warning above the limit, error above twice it) is kept too.
MAX_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# Beyond this many size x size squares, the resize goes straight to the centre square's box.
MAX_RESIZED = 16

PathLike = Union[str, "os.PathLike[str]"]

# Modes with one colour channel (an alpha channel does not count).
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


def load_image(path: PathLike) -> tuple[np.ndarray, bool]:
    """Decode an image file -> (uint8 HxWx3 RGB array, is_gray); see the module doc for the policy."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):  # opening a FIFO would wait for a writer
            raise _Unreadable("not a regular file")
        if st.st_size == 0:
            raise _Unreadable("empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise _Unreadable(f"{width}x{height} is over {MAX_PIXELS:,} pixels (decompression bomb?)")
                _refuse_dropped_samples(img)
                # Decode every byte here, so that a truncated file fails now and not later.
                img.load()
                img = ImageOps.exif_transpose(img)
    except _Unreadable as e:
        raise DataError(f"{os.fspath(path)}: cannot decode image ({e})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{os.fspath(path)}: cannot decode image (decompression bomb: {e})") from None
    except FileNotFoundError:
        raise DataError(f"{os.fspath(path)}: image not found") from None
    except IsADirectoryError:
        raise DataError(f"{os.fspath(path)}: is a folder, not an image") from None
    except Image.UnidentifiedImageError:
        raise DataError(f"{os.fspath(path)}: cannot decode image (not an image, or an unknown format)") from None
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, EOFError... on bad data
        raise DataError(f"{os.fspath(path)}: cannot decode image ({first_line(e)})") from None
    return _to_rgb(img)


def resize_center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """uint8 HxWx3 -> uint8 size x size x 3: shorter side to `size` (PIL bilinear, which
    antialiases when shrinking), then the centre square."""
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 array, got {img.dtype} {img.shape}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    height, width = img.shape[:2]
    scale = size / min(height, width)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    pil = Image.fromarray(img)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    if new_w * new_h > MAX_RESIZED * size * size:
        # An extreme aspect ratio (a 6,400,000 x 10 strip resized whole would be billions of pixels):
        # resample only the source box that becomes the centre square.
        sx, sy = width / new_w, height / new_h
        box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
        return np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR, box=box), dtype=np.uint8).copy()
    if (new_w, new_h) != (width, height):
        pil = pil.resize((new_w, new_h), Image.Resampling.BILINEAR)
    return np.asarray(pil.crop((left, top, left + size, top + size)), dtype=np.uint8).copy()


def _refuse_dropped_samples(img: Image.Image) -> None:
    """A TIFF whose samples per pixel exceed what PIL decodes (5 bands read as RGB, a gray band with a
    data band read as L) would lose channels without a word; an alpha extra sample is dropped by policy."""
    tags = getattr(img, "tag_v2", None)
    if tags is None:
        return
    samples, bands = tags.get(277), len(img.getbands())  # SamplesPerPixel
    extra = tags.get(338, ())  # ExtraSamples: 1 and 2 are alpha, 0 unspecified data
    extra = extra if isinstance(extra, tuple) else (extra,)
    data = [e for e in extra if e not in (1, 2)]
    if isinstance(samples, int) and samples > bands and (data or len(extra) < samples - bands):
        raise _Unreadable(
            f"{samples} channels per pixel, of which PIL reads {bands} ({img.mode}); prismlab "
            "reads gray, gray+alpha, RGB and RGBA images, and would drop the others"
        )


class _Unreadable(Exception):
    """A reason, in words, why a file cannot be decoded."""


def _to_rgb(img: Image.Image) -> tuple[np.ndarray, bool]:
    mode = img.mode
    if mode not in GRAY_MODES:
        if mode in ("P", "PA") and "transparency" in img.info:
            # Through RGBA: PIL warns when a palette's transparency goes straight to RGB.
            img = img.convert("RGBA")
        return np.array(img.convert("RGB"), dtype=np.uint8), False
    if mode == "I" or mode.startswith("I;16"):
        # 16-bit range to 8 bits by scaling; "I" is 32-bit, values beyond 16 bits are clipped.
        wide = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        gray = (wide >> 8).astype(np.uint8)
    else:
        # "1" -> 0/255, "LA" drops alpha, "F" is clipped to 0..255 by PIL.
        gray = np.asarray(img.convert("L"), dtype=np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2), True

"""Top-k predictions for image files of any channel count, with a trained checkpoint.

The fastest path prismlab has that keeps the model's output: its inference form (fused, BatchNorm
folded), in channels_last memory, with the images of one channel subset in batches (`prismlab bench
infer` times these runtimes; the form and the layout change the logits by float rounding only).

What a file's channels are: a file with as many bands as the asked subset has channels is read as
those channels, band by band (a 1-channel file with --channels R is R, a 2-band PNG or an [2, H, W]
.npy with --channels RB is R and B). Otherwise an RGB file gives the subset's channels and a gray
file is fed as L, its true channel set. `.npy` files hold [C, H, W] or [H, W, C] arrays, uint8 or
float in [0, 1]. Every file is resized as the decode cache does (shorter side, PIL bilinear, then
the centre square).
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from prismlab.channels import GRAY_ID, parse_subsets, subset_ids
from prismlab.data.channels import normalise, to_subset
from prismlab.data.decode import GRAY_MODES, MAX_PIXELS, load_image, resize_center_crop
from prismlab.data.splits import IMAGE_EXTENSIONS
from prismlab.engine.checkpoint import model_from_checkpoint
from prismlab.engine.rundir import load_checkpoint
from prismlab.errors import ConfigError, DataError, first_line
from prismlab.models.base import declared_of
from prismlab.models.fuse import inference_form

BATCH = 64
ARRAY = ".npy"
TIFF = (".tif", ".tiff")


def image_files(paths: list[str | Path]) -> list[Path]:
    """Files as given; folders are read recursively for images and .npy arrays, in sorted order."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in (*IMAGE_EXTENSIONS, ARRAY))
        else:
            out.append(p)
    if not out:
        raise DataError(f"{', '.join(map(str, paths))}: no image files")
    return out


def read_bands(path: Path) -> np.ndarray | None:
    """A file's bands as [H, W, C] (uint8, or float in [0, 1] for arrays), or None for a plain RGB or
    gray file that load_image reads. TIFFs of any band count go through tifffile where it is
    installed (pip install 'prismlab[bands]'); PIL reads 1-, 2- and 4-band ones. Bounded as
    load_image is: regular files only (a FIFO would wait for a writer), at most MAX_PIXELS per band."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise DataError(f"{path}: cannot read (not a regular file)")
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    if path.suffix.lower() == ARRAY:
        try:
            return _as_hwc(np.load(path, allow_pickle=False), path)
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot read array ({e})") from None
    if path.suffix.lower() in TIFF and importlib.util.find_spec("tifffile"):
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                shape = tif.series[0].shape
                if int(np.prod(shape)) > 16 * MAX_PIXELS:
                    raise DataError(f"{path}: a TIFF of shape {tuple(shape)} is over 16 bands of {MAX_PIXELS:,} pixels")
                return _as_hwc(tif.asarray(), path)
        except (OSError, ValueError, IndexError, tifffile.TiffFileError) as e:
            raise DataError(f"{path}: cannot read TIFF ({first_line(e)})") from None
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise DataError(f"{path}: {im.width}x{im.height} is over {MAX_PIXELS:,} pixels (decompression bomb?)")
            if im.mode in ("LA", "La", "RGBA"):  # the bands as stored, alpha among them
                return np.asarray(im.convert("RGBA" if im.mode == "RGBA" else "LA"))
            gray = im.mode in GRAY_MODES
    except (OSError, Image.DecompressionBombError):
        return None  # load_image says why, in one line
    # one band: load_image's policy (16-bit scaled to 8 bits, EXIF orientation)
    return load_image(path)[0][..., :1] if gray else None


def _as_hwc(a: np.ndarray, path: Path) -> np.ndarray:
    """An array [H, W], [C, H, W] or [H, W, C] (C <= 16) -> [H, W, C]: uint8 as it is, 16-bit scaled to
    8 bits, float checked to lie in [0, 1]."""
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or min(a.shape[0], a.shape[-1]) > 16:
        raise DataError(f"{path}: expected an array [C, H, W] or [H, W, C] with C <= 16, got shape {a.shape}")
    a = a if a.shape[-1] <= 16 and a.shape[-1] <= a.shape[0] else np.moveaxis(a, 0, -1)
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.uint16:
        return (a >> 8).astype(np.uint8)
    a = a.astype(np.float32)
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        raise DataError(f"{path}: a float array must hold values in [0, 1]")
    return a


def _resize_bands(bands: np.ndarray, size: int) -> torch.Tensor:
    """[H, W, C] -> float [C, size, size] in [0, 1], each band as the decode cache resizes an image."""
    u8 = bands if bands.dtype == np.uint8 else np.round(bands * 255).astype(np.uint8)
    out = [resize_center_crop(np.repeat(u8[..., c : c + 1], 3, axis=2), size)[..., 0] for c in range(u8.shape[-1])]
    return torch.from_numpy(np.stack(out)).float() / 255


def one_subset(channels: str, declared: tuple[str, ...], command: str) -> str:
    subsets = parse_subsets(channels, declared)
    if len(subsets) != 1:
        raise ConfigError(f"--channels takes one subset for {command}, got {channels!r} (e.g. RGB, RB, L or R+NIR)")
    return subsets[0]


def read_as_bands(path: Path, subset: str, ids: tuple[int, ...], size: int) -> torch.Tensor | None:
    """The file's bands as the subset's channels, normalised [1, m, size, size]; None for an RGB or gray
    photo to be read as such. A file that cannot give the subset is a one-line error."""
    bands = read_bands(path)
    if bands is not None and bands.shape[-1] == len(ids):
        return normalise(_resize_bands(bands, size)[None], ids)
    if path.suffix.lower() == ARRAY or max(ids) > GRAY_ID:
        have = f"{bands.shape[-1]} bands" if bands is not None else "a photo (RGB or gray)"
        raise DataError(f"{path}: {have}, but --channels {subset} asks for {len(ids)} bands")
    return None


def file_bands(path: Path, subset: str, ids: tuple[int, ...], size: int) -> torch.Tensor:
    """eval --bands: the file's bands as the subset's channels (read_as_bands), else a photo's own
    channels (RGB, or gray as L) when the subset has as many; normalised [1, m, size, size]."""
    x = read_as_bands(path, subset, ids, size)
    if x is not None:
        return x
    img, gray = load_image(path)  # RGBA and LA read as RGB and gray, as everywhere else
    if (1 if gray else 3) != len(ids):
        raise DataError(
            f"{path}: a {'gray' if gray else 'RGB'} photo, but --channels {subset} asks for {len(ids)} bands"
        )
    return normalise(_resize_bands(img[..., :1] if gray else img, size)[None], ids)


@torch.no_grad()
def predict(
    checkpoint: str | Path,
    images: list[str | Path],
    channels: str = "RGB",
    topk: int = 5,
    size: int | None = None,
    json_out: str | Path | None = None,
) -> list[dict]:
    ckpt = load_checkpoint(checkpoint)
    trained = model_from_checkpoint(ckpt, checkpoint)
    declared = declared_of(trained)
    subset = one_subset(channels, declared, "predict")
    ids = subset_ids(subset, declared)
    size = size or int(ckpt["config"]["image_size"])
    names = ckpt.get("classes") or [str(i) for i in range(ckpt["model_spec"]["num_classes"])]
    files = []
    for path in image_files(images):
        x = read_as_bands(path, subset, ids, size)
        if x is not None:
            files.append(
                {"image": str(path), "channels": subset, "read_as": "bands", "gray": False, "x": x, "ids": ids}
            )
            continue
        img, gray = load_image(path)
        used = "L" if gray else subset
        x = torch.from_numpy(resize_center_crop(img, size)).permute(2, 0, 1)[None]
        files.append(
            {
                "image": str(path),
                "channels": used,
                "read_as": "gray" if gray else "rgb",
                "gray": gray,
                "x": to_subset(x, used)[0],
                "ids": subset_ids(used),
            }
        )
    for used in dict.fromkeys(f["channels"] for f in files):
        group = [f for f in files if f["channels"] == used]
        used_ids = group[0]["ids"]
        # Deployed per subset: a model with per-subset BatchNorm folds that subset's statistics.
        model = inference_form(trained, used_ids).to(memory_format=torch.channels_last)
        for start in range(0, len(group), BATCH):
            chunk = group[start : start + BATCH]
            xs = torch.cat([f.pop("x") for f in chunk])
            for f in chunk:
                del f["ids"]  # not for the JSON
            probs = model(xs.contiguous(memory_format=torch.channels_last), used_ids).softmax(1)
            for f, row in zip(chunk, probs):
                p, i = row.topk(min(topk, len(row)))
                f["top"] = [{"class": names[int(c)], "label": int(c), "prob": float(q)} for q, c in zip(p, i)]
    if json_out:
        from prismlab.files import write_text

        write_text(json_out, json.dumps(files, indent=2), "predictions")
    return files

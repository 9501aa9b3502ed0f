"""A synthetic image-classification set in the course layout, for tests, demos and smoke runs.

Each class is a (shape, texture, colour) combination. A few classes come in colour-only pairs:
same shape and texture, two colours of equal luminance (BT.601 luma), so those pairs are
separable in colour but not in gray, while every other class stays separable by shape and
texture alone. Dropping channels therefore costs accuracy as it does on real photos.
Position, scale, rotation, background, smaller distractor objects, brightness and noise vary
per image so that a small CNN does not reach 100% trivially (about 80-90% on RGB after a few
epochs at 32 pixels; far less on gray, where the colour-only pairs merge). One image is drawn by
prismlab.data.synth_draw.

Layout written (the same as mini-imagenet-50):
    images/<class_name>/<class_name>_<index>.jpg, train.txt, val.txt, test.txt
    ("images/<class_name>/<file>.jpg <label>" per line), classes.txt (class of label N on line N+1),
    README.md.
Everything is drawn from one numpy Generator seeded by `seed`, and JPEGs are written with fixed
settings, so the same arguments give byte-identical files (with the same numpy and Pillow).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from prismlab.data.channels import LUMA
from prismlab.data.synth_draw import COLOUR_NAMES, COLOURS, SHAPES, TEXTURES, pixel_grid, render
from prismlab.errors import ConfigError

JPEG_QUALITY = 90
SPLITS = ("train", "val", "test")
MAX_CLASSES = len(SHAPES) * len(TEXTURES) * len(COLOURS)


def partner_colour(name: str) -> str:
    """The isoluminant partner of a palette colour (red <-> blue, green <-> magenta, ...)."""
    i = COLOUR_NAMES.index(name)
    return COLOUR_NAMES[i ^ 1]


def _candidates():
    """(shape, texture, colour) triples in an order where neighbours differ in all three.

    The (shape, texture) combos run along diagonals so that the first six differ in both; each
    later pass over the combos shifts the colour by 3 (coprime with 8), so no triple repeats.
    """
    combos = [(SHAPES[i], TEXTURES[(i + d) % len(TEXTURES)]) for d in range(len(TEXTURES)) for i in range(len(SHAPES))]
    for r in range(len(COLOURS)):
        for c, (shape, texture) in enumerate(combos):
            yield shape, texture, COLOUR_NAMES[(c + 3 * r) % len(COLOURS)]


def class_specs(num_classes: int) -> list[tuple[str, str, str]]:
    """The (shape, texture, colour) of each label, in label order.

    The first num_classes // 5 (at least one) designs are each followed by their colour-only
    partner; the remaining labels take further designs that differ in shape or texture.
    """
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ConfigError(f"num_classes must be in [2, {MAX_CLASSES}], got {num_classes}")
    n_pairs = max(1, num_classes // 5)
    specs: list[tuple[str, str, str]] = []
    used: set[tuple[str, str, str]] = set()

    def add(spec):
        specs.append(spec)
        used.add(spec)

    for spec in _candidates():
        if len(specs) >= num_classes:
            break
        if spec in used:
            continue
        add(spec)
        if n_pairs > 0 and len(specs) < num_classes:
            partner = (spec[0], spec[1], partner_colour(spec[2]))
            if partner not in used:
                add(partner)
                n_pairs -= 1
    return specs


def colour_pairs(num_classes: int) -> list[tuple[int, int]]:
    """Label pairs (a, b) with the same shape and texture and isoluminant colours."""
    specs = class_specs(num_classes)
    return [
        (a, b)
        for a in range(num_classes)
        for b in range(a + 1, num_classes)
        if specs[a][:2] == specs[b][:2] and specs[b][2] == partner_colour(specs[a][2])
    ]


def class_names(num_classes: int) -> list[str]:
    """Names such as c00_red_solid_disc; the zero-padded prefix makes sorted order label order."""
    width = max(2, len(str(num_classes - 1)))
    specs = class_specs(num_classes)
    return [f"c{k:0{width}d}_{colour}_{texture}_{shape}" for k, (shape, texture, colour) in enumerate(specs)]


def nir_levels(num_classes: int) -> np.ndarray:
    """Each class's NIR level in [0, 1]: the colour-only pairs get levels far apart."""
    order = np.argsort(np.arange(num_classes) * 7 % num_classes, kind="stable")  # neighbours spread apart
    return (order + 1) / (num_classes + 1)


def with_nir(pixels: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """RGB [H, W, 3] uint8 -> [4, H, W] uint8: R, G, B and NIR = 0.5 luma + 0.5 * 255 * level + noise."""
    luma = pixels.astype(np.float32) @ np.asarray(LUMA, dtype=np.float32)
    band = 0.5 * luma + 127.5 * level + rng.normal(0, 6, luma.shape)
    return np.concatenate([pixels.transpose(2, 0, 1), np.clip(np.round(band), 0, 255).astype(np.uint8)[None]])


def _check_args(out_dir: Path, per_class: dict[str, int], size: int, gray_fraction: float) -> None:
    for name, count in per_class.items():
        if count < 1:
            raise ConfigError(f"{name}_per_class must be at least 1, got {count}")
    if size < 8:
        raise ConfigError(f"size must be at least 8 pixels, got {size}")
    if not 0.0 <= gray_fraction <= 1.0:
        raise ConfigError(f"gray_fraction must be in [0, 1], got {gray_fraction}")
    # refuse to write into a set already there: its images would sit beside the new split files
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigError(f"{out_dir} already exists and is not an empty directory")


def _write(path: Path, text: str) -> None:
    path.write_bytes(text.encode("utf-8"))  # "\n" line ends on every platform


def make_synthetic(
    out_dir,
    seed: int = 0,
    num_classes: int = 10,
    train_per_class: int = 120,
    val_per_class: int = 20,
    test_per_class: int = 20,
    size: int = 40,
    gray_fraction: float = 0.02,
    nir: bool = False,
) -> Path:
    """Write the synthetic set to out_dir (created; must be absent or empty) and return its path.

    nir=True: a fourth band, near infrared, and every image a uint8 .npy array [4, H, W] (R, G, B, NIR)
    instead of a JPEG. NIR is the image's luma lifted by a level of the class's own (nir_levels), so
    it keeps the shapes and, unlike gray, also tells the colour-only pairs apart."""
    out_dir = Path(out_dir)
    per_class = {"train": train_per_class, "val": val_per_class, "test": test_per_class}
    if nir and gray_fraction:
        raise ConfigError("nir=True writes 4-band arrays: gray_fraction must be 0")
    _check_args(out_dir, per_class, size, gray_fraction)
    levels = nir_levels(num_classes)
    specs = class_specs(num_classes)
    names = class_names(num_classes)
    total = num_classes * sum(per_class.values())

    rng = np.random.default_rng(seed)
    grid = pixel_grid(size)
    # Gray files, like ImageNet's gray photos: an exact share of each split, at least one per split
    # when any are asked for, so that every split exercises the gray path.
    gray = {}
    for split, count in per_class.items():
        n = num_classes * count
        gray[split] = np.zeros(n, dtype=bool)
        if gray_fraction > 0:
            gray[split][rng.choice(n, size=max(1, round(gray_fraction * n)), replace=False)] = True
    n_gray = sum(int(g.sum()) for g in gray.values())

    lines = {split: [] for split in SPLITS}
    for label, (name, spec) in enumerate(zip(names, specs)):
        class_dir = out_dir / "images" / name
        class_dir.mkdir(parents=True)
        index = 0
        for split in SPLITS:
            for j in range(per_class[split]):
                pixels = render(spec, size, rng, grid)
                if nir:
                    file = f"{name}_{index:05d}.npy"
                    np.save(class_dir / file, with_nir(pixels, levels[label], rng), allow_pickle=False)
                    lines[split].append(f"images/{name}/{file} {label}\n")
                    index += 1
                    continue
                image = Image.fromarray(pixels, "RGB")
                if gray[split][label * per_class[split] + j]:
                    image = image.convert("L")
                file = f"{name}_{index:05d}.jpg"
                image.save(class_dir / file, format="JPEG", quality=JPEG_QUALITY)
                lines[split].append(f"images/{name}/{file} {label}\n")
                index += 1

    for split in SPLITS:
        _write(out_dir / f"{split}.txt", "".join(lines[split]))
    _write(out_dir / "classes.txt", "".join(n + "\n" for n in names))
    pairs = [f"{names[a]} / {names[b]}" for a, b in colour_pairs(num_classes)]
    _write(
        out_dir / "README.md",
        f"Synthetic image-classification set written by prismlab.data.synth.make_synthetic with "
        f"seed={seed}: {num_classes} classes, each a (shape, texture, colour) combination named "
        f"c<label>_<colour>_<texture>_<shape>, with {train_per_class}/{val_per_class}/{test_per_class} "
        f"train/val/test images per class of {size}x{size} pixels ("
        + (
            "uint8 arrays [4, H, W] in .npy files: R, G, B and a near-infrared band, NIR; "
            if nir
            else f"JPEG quality {JPEG_QUALITY}; "
        )
        + f"{n_gray} of the {total} files are single-channel gray). The colour-only pairs {', '.join(pairs)} "
        f"share shape and texture and have equal luminance, so only colour separates them; the other classes "
        f"differ in shape and texture as well. Position, scale, rotation, background, smaller distractor "
        f"objects, brightness and noise vary per image. The same arguments regenerate byte-identical files.\n",
    )
    return out_dir

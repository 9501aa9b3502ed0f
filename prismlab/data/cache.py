"""Decode-once cache: each (split, image size) becomes one uint8 array on disk, memory-mapped.

Key = hash of the split file's bytes (or an image folder's listing), its location and the size,
so editing the split or changing the size builds a new cache; an unchanged one is reused.
Images are stored resized (shorter side) and centre-cropped to size x size, RGB, R=G=B for gray
photos (their `gray` flag says so). Writes are atomic: a half-built cache is never read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prismlab.data.decode import load_image, resize_center_crop
from prismlab.data.splits import Split
from prismlab.errors import DataError

FORMAT_VERSION = 1


@dataclass
class CachedSplit:
    images: np.ndarray  # [N, S, S, 3] uint8 (memory-mapped)
    labels: np.ndarray  # [N] int64
    gray: np.ndarray  # [N] bool: decoded from a 1-channel file
    num_classes: int
    size: int
    source: str
    skipped: list[str]  # "path: reason" for each image dropped with skip_bad
    classes: list[str] | None = None  # names by label, where the split names them

    def __len__(self) -> int:
        return len(self.labels)


def default_cache_dir() -> Path:
    return Path(os.environ.get("PRISMLAB_CACHE", Path.home() / ".cache" / "prismlab"))


def cache_key(split: Split, size: int) -> str:
    h = hashlib.sha256(f"v{FORMAT_VERSION}|{size}|{Path(split.source).resolve()}".encode())
    if Path(split.source).is_file():
        h.update(Path(split.source).read_bytes())
    else:  # an image folder: its listing is its content
        for e in split.entries:
            h.update(f"{e.path}|{e.label}|{e.path.stat().st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _decode(args):
    path, size = args
    try:
        img, gray = load_image(path)
    except DataError as e:
        return None, False, str(e)
    return resize_center_crop(img, size), gray, None


def build_cache(split: Split, size: int, cache_dir: Path | None = None, skip_bad: bool = False,
                workers: int | None = None, progress: bool | None = False) -> CachedSplit:
    """Load the cache for (split, size), building it first if needed."""
    root = Path(cache_dir or default_cache_dir())
    final = root / cache_key(split, size)
    if not (final / "meta.json").exists():
        _build(split, size, final, skip_bad, workers, progress)
    meta = json.loads((final / "meta.json").read_text())
    if meta["skipped"] and not skip_bad:
        # Built earlier with skip_bad; without it the same files must fail loudly.
        raise DataError(f"{split.source}: bad image {meta['skipped'][0]} (use --skip-bad to skip bad files)")
    return CachedSplit(
        images=np.load(final / "images.npy", mmap_mode="r"),
        labels=np.load(final / "labels.npy"),
        gray=np.load(final / "gray.npy"),
        num_classes=meta["num_classes"],
        size=size,
        source=str(split.source),
        skipped=list(split.skipped) + meta["skipped"],
        classes=split.classes,
    )


def _build(split: Split, size: int, final: Path, skip_bad: bool, workers: int | None, progress: bool | None) -> None:
    from tqdm import tqdm

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    n = len(split.entries)
    images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    gray = np.zeros(n, dtype=bool)
    keep = np.ones(n, dtype=bool)
    skipped: list[str] = []
    jobs = [(e.path, size) for e in split.entries]
    workers = workers or min(os.cpu_count() or 1, 8)
    chunk = max(1, min(256, n // (workers * 4) or 1))
    pool = ProcessPoolExecutor(workers) if workers > 1 and n > 256 else None
    ok = False
    try:
        results = pool.map(_decode, jobs, chunksize=chunk) if pool else map(_decode, jobs)
        for i, (img, g, err) in enumerate(tqdm(results, total=n, desc=f"cache {size}px", disable=None if progress is None else not progress)):
            if err is not None:
                if not skip_bad:
                    raise DataError(f"{err} (listed at {split.source}:{split.entries[i].line}; use --skip-bad to skip)")
                skipped.append(err)
                keep[i] = False
                continue
            images[i] = img
            gray[i] = g
        ok = True
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
        if not ok:  # a failed build leaves nothing behind
            del images
            shutil.rmtree(tmp, ignore_errors=True)
    if not keep.all():  # compact: drop the rows of skipped files
        kept = np.lib.format.open_memmap(tmp / "kept.npy", mode="w+", dtype=np.uint8, shape=(int(keep.sum()), size, size, 3))
        kept[:] = images[keep]
        kept.flush()
        del images
        os.replace(tmp / "kept.npy", tmp / "images.npy")
    else:
        images.flush()
        del images
    np.save(tmp / "labels.npy", np.array([e.label for e in split.entries], dtype=np.int64)[keep])
    np.save(tmp / "gray.npy", gray[keep])
    (tmp / "meta.json").write_text(json.dumps({"num_classes": split.num_classes, "size": size, "n": int(keep.sum()),
                                                "source": str(split.source), "skipped": skipped}))
    try:
        os.replace(tmp, final)  # atomic publish; a concurrent builder may have won the race
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)

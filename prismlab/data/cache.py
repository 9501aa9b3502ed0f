"""Decode-once cache: each (split, image size) becomes one uint8 array on disk, memory-mapped.

Key = hash of the split file's bytes (or an image folder's listing), its location, the size and
every image's identity (size and modification time), so editing the split, replacing an image or
changing the size builds a new cache; an unchanged one is reused. Images are stored resized
(shorter side) and centre-cropped to size x size, RGB, R=G=B for gray photos (their `gray` flag
says so). A cache is checked when opened (its arrays' shapes, its labels against the split's) and
rebuilt when it does not fit. Builds are atomic: a half-built cache is never read, its temporary
folder goes on any exit the process sees (and the next build removes one a kill -9 left), and the
decode workers die with the process that started them.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prismlab.data.decode import load_image, resize_center_crop
from prismlab.data.splits import Split
from prismlab.errors import DataError
from prismlab.files import WriteError, pid_alive

FORMAT_VERSION = 2  # 2: keyed by the images' identities, with the kept entries' indices in meta.json


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
    for e in split.entries:  # every image's identity: a replaced file has another size or mtime
        try:
            st = e.path.stat()
            h.update(f"{e.path}|{e.label}|{st.st_size}|{st.st_mtime_ns}\n".encode(errors="surrogateescape"))
        except OSError:
            h.update(f"{e.path}|{e.label}|missing\n".encode(errors="surrogateescape"))
    return h.hexdigest()[:20]


def _worker_init() -> None:
    """A decode worker dies with the process that started it (Linux: a kill -9 of the parent too)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


def _decode(args):
    path, size = args
    try:
        img, gray = load_image(path)
    except DataError as e:
        return None, False, str(e)
    return resize_center_crop(img, size), gray, None


def build_cache(
    split: Split,
    size: int,
    cache_dir: Path | None = None,
    skip_bad: bool = False,
    workers: int | None = None,
    progress: bool | None = False,
) -> CachedSplit:
    """Load the cache for (split, size), building it first if needed (or if the one on disk does not fit)."""
    root = Path(cache_dir or default_cache_dir())
    final = root / cache_key(split, size)
    opened = _open(final, split, size)
    if opened is None:
        _build(split, size, final, skip_bad, workers, progress)
        opened = _open(final, split, size)
        if opened is None:
            raise DataError(f"{final}: the decode cache just built does not read back (a full or failing disk?)")
    images, labels, gray, meta = opened
    if meta["skipped"] and not skip_bad:
        # This cache was built with skip_bad; without it the same files must fail loudly.
        raise DataError(f"{split.source}: bad image {meta['skipped'][0]} (use --skip-bad to skip bad files)")
    return CachedSplit(
        images=images,
        labels=labels,
        gray=gray,
        num_classes=meta["num_classes"],
        size=size,
        source=str(split.source),
        skipped=list(split.skipped) + meta["skipped"],
        classes=split.classes,
    )


def _open(final: Path, split: Split, size: int):
    """(images, labels, gray, meta) of a cache that fits `split`, or None (missing, truncated or
    inconsistent: it is then rebuilt, never trusted)."""
    if not final.exists():
        return None
    try:
        meta = json.loads((final / "meta.json").read_text())
        kept = meta["kept"]
        images = np.load(final / "images.npy", mmap_mode="r")
        labels = np.load(final / "labels.npy")
        gray = np.load(final / "gray.npy")
        want = np.array([split.entries[i].label for i in kept], dtype=np.int64)
        fits = (
            images.shape == (len(kept), size, size, 3)
            and images.dtype == np.uint8
            and gray.shape == (len(kept),)
            and np.array_equal(labels, want)
            and meta["num_classes"] == split.num_classes
            and len(kept) + len(meta["skipped"]) == len(split.entries)
        )
    except (OSError, ValueError, KeyError, TypeError, IndexError, EOFError):
        fits = False
    if not fits:
        shutil.rmtree(final, ignore_errors=True)
        return None
    return images, labels, gray, meta


def _build(split: Split, size: int, final: Path, skip_bad: bool, workers: int | None, progress: bool | None) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob("*.tmp*"):  # left by a build that was killed (kill -9 runs no cleanup)
        pid = stale.name.rsplit(".tmp", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = final.with_name(final.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _fill(split, size, tmp, skip_bad, workers, progress)
        shutil.rmtree(final, ignore_errors=True)  # an unfit cache under the same key
        try:
            os.replace(tmp, final)  # atomic publish; a concurrent builder may have won the race
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException as e:  # a failed or interrupted build leaves nothing behind
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise WriteError(
                f"{final.parent}: cannot build the decode cache of {split.source} (no space left on the disk)"
            ) from None
        if isinstance(e, OSError):
            raise WriteError(
                f"{final.parent}: cannot build the decode cache of {split.source} ({e.strerror or e})"
            ) from None
        raise


def _fill(split: Split, size: int, tmp: Path, skip_bad: bool, workers: int | None, progress: bool | None) -> None:
    from tqdm import tqdm

    n = len(split.entries)
    path = tmp / "images.npy"
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    with open(path, "r+b") as f:  # reserve the disk now: a full disk under a memory map is a SIGBUS later
        os.posix_fallocate(f.fileno(), 0, os.path.getsize(path))
    gray = np.zeros(n, dtype=bool)
    keep = np.ones(n, dtype=bool)
    skipped: list[str] = []
    jobs = [(e.path, size) for e in split.entries]
    workers = workers or min(os.cpu_count() or 1, 8)
    chunk = max(1, min(256, n // (workers * 4) or 1))
    pool = ProcessPoolExecutor(workers, initializer=_worker_init) if workers > 1 and n > 256 else None
    try:
        results = pool.map(_decode, jobs, chunksize=chunk) if pool else map(_decode, jobs)
        bar = tqdm(results, total=n, desc=f"cache {size}px", disable=None if progress is None else not progress)
        for i, (img, g, err) in enumerate(bar):
            if err is not None:
                if not skip_bad:
                    raise DataError(f"{err} (listed at {split.source}:{split.entries[i].line}; use --skip-bad to skip)")
                skipped.append(err)
                keep[i] = False
                continue
            images[i] = img
            gray[i] = g
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    if not keep.all():  # compact: drop the rows of skipped files
        kept = np.lib.format.open_memmap(
            tmp / "kept.npy", mode="w+", dtype=np.uint8, shape=(int(keep.sum()), size, size, 3)
        )
        kept[:] = images[keep]
        kept.flush()
        del images
        os.replace(tmp / "kept.npy", path)
    else:
        images.flush()
        del images
    np.save(tmp / "labels.npy", np.array([e.label for e in split.entries], dtype=np.int64)[keep])
    np.save(tmp / "gray.npy", gray[keep])
    (tmp / "meta.json").write_text(
        json.dumps(
            {
                "num_classes": split.num_classes,
                "size": size,
                "n": int(keep.sum()),
                "source": str(split.source),
                "skipped": skipped,
                "kept": np.flatnonzero(keep).tolist(),
            }
        )
    )

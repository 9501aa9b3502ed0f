"""Split files and image folders -> a list of (absolute image path, label) entries.

A split file holds one `<path> <label>` per line, the path relative to the split file's folder.
Blank lines and lines starting with `#` are ignored. Every problem is a DataError whose one-line
message names the file and line (`train.txt:17: label 50 out of range 0..49`); with skip_bad=True
bad lines are left out and described in `Split.skipped` instead, but a split with no usable entry
is always an error.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from prismlab.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
CLASSES_FILE = "classes.txt"
_INTEGER = re.compile(r"-?[0-9]+")

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Entry:
    path: Path  # absolute
    label: int
    line: int  # 1-based line in the split file; 0 for entries found by read_image_folder


@dataclass
class Split:
    source: Path  # the split file (or image folder)
    entries: list[Entry]
    num_classes: int
    skipped: list[str] = field(default_factory=list)  # "FILE:LINE: reason", one per skipped line
    classes: Optional[list[str]] = None  # names by label: classes.txt, or an image folder's class folders

    def __len__(self) -> int:
        return len(self.entries)


def read_split(
    path: PathLike, num_classes: Optional[int] = None, check_files: bool = True, skip_bad: bool = False
) -> Split:
    """Read a `<path> <label>` split file.

    num_classes: if None, the number of class names in classes.txt beside the split file,
    else max label + 1. check_files=False skips the existence check (split files without images).
    """
    path = Path(path)
    text = _read_text(path)
    classes = _class_names(path.parent / CLASSES_FILE)
    if num_classes is None:
        num_classes = len(classes) if classes else None
    elif num_classes < 1:
        raise ConfigError(f"num_classes must be positive, got {num_classes}")
    elif classes and len(classes) != num_classes:
        raise DataError(
            f"{path.parent / CLASSES_FILE}: names {len(classes)} classes, but the labels need "
            f"{num_classes} (the training split's classes)"
        )

    # The parent is made absolute once; joining strings per line keeps 63k lines well under a second.
    folder = os.path.abspath(path.parent)
    entries: list[tuple[str, int, int]] = []
    skipped: list[str] = []
    first_line: dict[str, int] = {}  # normalised path -> line it was first listed on

    # split("\n"), not splitlines(): the latter also breaks at \f, \x1c..., so line numbers would drift.
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            item, label = _parse_line(line, num_classes)
            full = os.path.normpath(os.path.join(folder, item))
            if full in first_line:
                raise _BadLine(f"{item} is listed twice (lines {first_line[full]} and {lineno})")
            if check_files and not os.path.isfile(full):
                raise _BadLine(f"{'not a regular file' if os.path.exists(full) else 'image not found'}: {item}")
        except _BadLine as bad:
            message = f"{path}:{lineno}: {bad}"
            if not skip_bad:
                raise DataError(message) from None
            skipped.append(message)
            continue
        first_line[full] = lineno
        entries.append((full, label, lineno))

    if not entries:
        what = "no usable entries" if skipped else "no entries"
        raise DataError(f"{path}: {what}" + (f" ({len(skipped)} bad lines skipped)" if skipped else ""))
    if num_classes is None:
        # Without classes.txt the labels say how many classes there are; a label far beyond the
        # ones in use (a typo, a hostile file) would size the model's head, so it must name them.
        top, lineno = max((label, ln) for _, label, ln in entries)
        used = len({label for _, label, _ in entries})
        if top + 1 > 2 * used + 16:
            raise DataError(
                f"{path}:{lineno}: label {top}, but only {used} distinct labels are used; a split with "
                f"gaps that large needs {CLASSES_FILE} beside it to name its classes"
            )
        num_classes = top + 1
    return Split(source=path, entries=_make_entries(entries), num_classes=num_classes, skipped=skipped, classes=classes)


def read_image_folder(
    root: PathLike,
    num_classes: Optional[int] = None,
    skip_bad: bool = False,
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
) -> Split:
    """Read `<root>/<class>/<image>`: classes are the sorted folder names, label = rank.

    num_classes: the classes the labels must cover (the training folder's, for a validation or
    test folder); a folder with another count of classes would give its images other labels.

    Images are the files directly inside a class folder with one of `extensions` (any case); other
    files are ignored. A class folder with no image is an error (with skip_bad=True it is recorded
    in `skipped`; its label stays reserved so that labels keep matching the sorted class names).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    # Hidden folders (.ipynb_checkpoints, .git) are never classes.
    classes = sorted(d.name for d in os.scandir(root) if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class folders (expected <root>/<class>/<image>)")
    if num_classes is not None and len(classes) != num_classes:
        raise DataError(
            f"{root}: {len(classes)} class folders, but the labels need {num_classes} "
            "(the training split's classes), so its labels would not match"
        )

    base = root.absolute()
    entries: list[Entry] = []
    skipped: list[str] = []
    for label, name in enumerate(classes):
        files = sorted(
            f.name
            for f in os.scandir(base / name)
            if f.is_file() and not f.name.startswith(".") and f.name.lower().endswith(extensions)
        )
        if not files:
            message = f"{root / name}: no images ({', '.join(IMAGE_EXTENSIONS)})"
            if not skip_bad:
                raise DataError(message)
            skipped.append(message)
        entries.extend(Entry(base / name / f, label, 0) for f in files)

    if not entries:
        raise DataError(f"{root}: no images in any class folder")
    return Split(source=root, entries=entries, num_classes=len(classes), skipped=skipped, classes=classes)


def check_classes(split: Split, names: Optional[list[str]], whose: str) -> None:
    """A split scored by a model names its labels as the model's training split did (where both name
    them): a test folder with other class folders would otherwise be scored against the wrong labels."""
    if not (split.classes and names) or split.classes == names:
        return
    if len(split.classes) != len(names):
        raise DataError(f"{split.source}: {len(split.classes)} classes, but {whose} has {len(names)}")
    i, here, there = next((i, a, b) for i, (a, b) in enumerate(zip(split.classes, names)) if a != b)
    raise DataError(
        f"{split.source}: label {i} is {here!r} here but {there!r} in {whose}, so its labels would not match"
    )


def load_split(path_or_dir: PathLike, extensions: tuple[str, ...] = IMAGE_EXTENSIONS, **kw) -> Split:
    """A split file -> read_split(path, **kw) (it names its files); a folder -> read_image_folder(path,
    extensions=extensions, **kw)."""
    path = Path(path_or_dir)
    if path.is_dir():
        return read_image_folder(path, extensions=extensions, **kw)
    return read_split(path, **kw)


class _BadLine(Exception):
    """A reason why one line is unusable; read_split adds the file and line number."""


def _parse_line(line: str, num_classes: Optional[int]) -> tuple[str, int]:
    # Split on the last whitespace so that a path with spaces stays whole.
    parts = line.rsplit(None, 1)
    if len(parts) != 2:
        raise _BadLine(f"expected '<path> <label>', got {line!r}")
    item, label_text = parts
    # Stricter than int(), which also takes "+3", "1_0" and non-ASCII digits.
    if not _INTEGER.fullmatch(label_text):
        raise _BadLine(f"label {label_text!r} is not an integer")
    label = int(label_text)
    if label < 0:
        raise _BadLine(f"negative label {label}")
    if num_classes is not None and label >= num_classes:
        raise _BadLine(f"label {label} out of range 0..{num_classes - 1}")
    return item, label


def _make_entries(rows: list[tuple[str, int, int]]) -> list[Entry]:
    # Building Path objects dominates the run time (pathlib parses every component); joining a
    # file name onto its folder's shared Path parses one component instead of the whole path.
    folders: dict[str, Path] = {}
    out = []
    for full, label, lineno in rows:
        folder, name = os.path.split(full)
        parent = folders.get(folder)
        if parent is None:
            parent = folders[folder] = Path(folder)
        out.append(Entry(parent.joinpath(name), label, lineno))
    return out


def _read_text(path: Path, what: str = "split file") -> str:
    if path.exists() and not path.is_file() and not path.is_dir():  # a FIFO would block the read forever
        raise DataError(f"{path}: not a regular file, not a {what}")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not a {what}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a UTF-8 text file (byte {e.start})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read {what} ({e.strerror or e})") from None


def _class_names(classes_file: Path) -> Optional[list[str]]:
    """The non-empty lines of classes.txt, or None when there is no such file."""
    if not classes_file.is_file():
        return None
    names = [line.strip() for line in _read_text(classes_file, "class list").splitlines() if line.strip()]
    if not names:
        raise DataError(f"{classes_file}: no class names")
    return names

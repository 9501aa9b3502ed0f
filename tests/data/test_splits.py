"""Split files and image folders: good input, every error case, skip_bad, and the real splits."""

from pathlib import Path

import pytest
from PIL import Image

from prismlab.data.splits import Entry, check_classes, load_split, read_image_folder, read_split
from prismlab.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
COURSE = SHARED / "course-splits"
MINI = SHARED / "mini-imagenet-50"


def make_images(root: Path, names):
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), (10, 20, 30)).save(p)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def folder(tmp_path):
    make_images(tmp_path, ["images/a/1.jpg", "images/a/2.jpg", "images/b/3.jpg", "images/c d/4.jpg"])
    return tmp_path


def test_good_split(folder):
    split = read_split(
        write(folder / "train.txt", "# comment\nimages/a/1.jpg 0\n\nimages/b/3.jpg 1\n  images/c d/4.jpg\t2  \n")
    )
    assert split.source == folder / "train.txt"
    assert split.entries == [
        Entry(folder / "images/a/1.jpg", 0, 2),
        Entry(folder / "images/b/3.jpg", 1, 4),
        Entry(folder / "images/c d/4.jpg", 2, 5),
    ]
    assert all(e.path.is_absolute() for e in split.entries)
    assert split.num_classes == 3  # max label + 1 without classes.txt
    assert split.skipped == []


def test_relative_split_path_gives_absolute_entries(folder, monkeypatch):
    write(folder / "train.txt", "images/a/1.jpg 0\n")
    monkeypatch.chdir(folder)
    split = read_split("train.txt")
    assert split.entries[0].path == folder / "images/a/1.jpg"


def test_num_classes_from_classes_txt_and_argument(folder):
    split_file = write(folder / "train.txt", "images/a/1.jpg 0\n")
    write(folder / "classes.txt", "a\nb\n\nc\nd\n")
    assert read_split(split_file).num_classes == 4
    assert read_split(split_file, num_classes=4).num_classes == 4
    # A model of 7 classes scoring a split whose classes.txt names 4: its names cannot be the model's.
    with pytest.raises(DataError, match=r"classes\.txt: names 4 classes, but the labels need 7"):
        read_split(split_file, num_classes=7)
    (folder / "classes.txt").unlink()
    assert read_split(split_file, num_classes=7).num_classes == 7
    with pytest.raises(DataError, match=r"train\.txt:1: label 3 out of range 0\.\.2"):
        read_split(write(folder / "train.txt", "images/a/1.jpg 3\n"), num_classes=3)


@pytest.mark.parametrize(
    "text, line, reason",
    [
        ("images/a/1.jpg 0\nimages/a/2.jpg\n", 2, "expected '<path> <label>'"),
        ("images/a/1.jpg 0\nimages/a/2.jpg x\n", 2, "not an integer"),
        ("images/a/1.jpg 0\nimages/a/2.jpg 1.0\n", 2, "not an integer"),
        ("images/a/1.jpg 0\nimages/a/2.jpg -1\n", 2, "negative label -1"),
        ("images/a/1.jpg 0\n\nimages/a/2.jpg 50\n", 3, r"label 50 out of range 0\.\.49"),
        ("images/a/1.jpg 0\nimages/a/9.jpg 1\n", 2, "image not found: images/a/9.jpg"),
        ("images/a/1.jpg 0\nimages/b/3.jpg 1\nimages/./a/1.jpg 0\n", 3, r"listed twice \(lines 1 and 3\)"),
    ],
)
def test_bad_line_names_file_and_line(folder, text, line, reason):
    write(folder / "train.txt", text)
    with pytest.raises(DataError, match=rf"train\.txt:{line}: .*{reason}") as err:
        read_split(folder / "train.txt", num_classes=50)
    assert "\n" not in str(err.value)


def test_missing_files_pass_without_check(folder):
    split = read_split(write(folder / "train.txt", "images/zz/9.jpg 0\n"), check_files=False)
    assert split.entries[0].path == folder / "images/zz/9.jpg"


@pytest.mark.parametrize("text", ["", "\n# only a comment\n\n"])
def test_empty_split_is_an_error(folder, text):
    with pytest.raises(DataError, match=r"train\.txt: no entries"):
        read_split(write(folder / "train.txt", text))


def test_missing_split_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.txt: split file not found"):
        read_split(tmp_path / "nope.txt")


def test_skip_bad_records_each_bad_line(folder):
    text = (
        "images/a/1.jpg 0\n"
        "images/a/2.jpg\n"  # malformed
        "images/a/2.jpg 9\n"  # out of range
        "images/a/8.jpg 0\n"  # missing
        "images/a/1.jpg 0\n"  # duplicate
        "images/b/3.jpg 1\n"
    )
    split = read_split(write(folder / "train.txt", text), num_classes=2, skip_bad=True)
    assert [e.line for e in split.entries] == [1, 6]
    assert len(split.skipped) == 4
    for message, line in zip(split.skipped, [2, 3, 4, 5]):
        assert f"train.txt:{line}: " in message


def test_skip_bad_with_nothing_left_is_an_error(folder):
    with pytest.raises(DataError, match=r"train\.txt: no usable entries \(2 bad lines skipped\)"):
        read_split(write(folder / "train.txt", "x.jpg 0\ny.jpg 0\n"), skip_bad=True)


def test_image_folder(tmp_path):
    make_images(tmp_path, ["dog/b.JPG", "dog/a.png", "cat/x.jpeg", "cat/y.TIFF", "emu/z.webp"])
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    split = load_split(tmp_path)
    assert split.num_classes == 3
    assert [(e.path.relative_to(tmp_path).as_posix(), e.label) for e in split.entries] == [
        ("cat/x.jpeg", 0),
        ("cat/y.TIFF", 0),
        ("dog/a.png", 1),
        ("dog/b.JPG", 1),
        ("emu/z.webp", 2),
    ]


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="image folder not found"):
        read_image_folder(tmp_path / "nope")
    with pytest.raises(DataError, match="no class folders"):
        read_image_folder(tmp_path)
    make_images(tmp_path, ["a/1.png", "c/2.png"])
    (tmp_path / "b").mkdir()
    with pytest.raises(DataError, match=r"b: no images"):
        read_image_folder(tmp_path)
    split = read_image_folder(tmp_path, skip_bad=True)
    # The empty class keeps its label, so labels still match the sorted class names.
    assert [e.label for e in split.entries] == [0, 2] and split.num_classes == 3
    assert len(split.skipped) == 1


def test_image_folder_names_its_classes_and_must_have_the_training_count(tmp_path):
    make_images(tmp_path / "val", ["cat/1.png", "dog/2.png"])
    split = load_split(tmp_path / "val", num_classes=2, skip_bad=False)
    assert split.classes == ["cat", "dog"] and split.num_classes == 2
    # A validation folder missing one of three training classes would label dog as class 1 of 3.
    with pytest.raises(DataError, match=r"val: 2 class folders, but the labels need 3"):
        load_split(tmp_path / "val", num_classes=3)


def test_check_classes_names_the_first_label_that_differs(tmp_path):
    make_images(tmp_path / "test", ["cat/1.png", "dog/2.png"])
    split = load_split(tmp_path / "test")
    check_classes(split, ["cat", "dog"], "the checkpoint")
    check_classes(split, None, "a checkpoint without names")  # nothing to compare with
    with pytest.raises(DataError, match=r"test: label 1 is 'dog' here but 'emu' in the checkpoint"):
        check_classes(split, ["cat", "emu"], "the checkpoint")
    with pytest.raises(DataError, match=r"test: 2 classes, but the checkpoint has 3"):
        check_classes(split, ["cat", "dog", "emu"], "the checkpoint")


def test_split_file_names_its_classes_from_classes_txt(folder):
    write(folder / "classes.txt", "a\nb\nc d\n")
    split = read_split(write(folder / "val.txt", "images/a/1.jpg 0\n"))
    assert split.classes == ["a", "b", "c d"] and split.num_classes == 3
    (folder / "classes.txt").unlink()
    assert read_split(folder / "val.txt").classes is None


def test_load_split_dispatches_on_file(folder):
    split = load_split(write(folder / "val.txt", "images/a/1.jpg 0\n"), num_classes=2)
    assert split.num_classes == 2 and len(split.entries) == 1


@pytest.mark.skipif(not COURSE.is_dir(), reason="course split files not present (../shared/data/course-splits)")
def test_real_course_splits():
    splits = {n: read_split(COURSE / f"{n}.txt", check_files=False) for n in ("train", "val", "test")}
    assert {n: len(s.entries) for n, s in splits.items()} == {"train": 63325, "val": 450, "test": 450}
    wnids = sorted({e.path.parent.name for s in splits.values() for e in s.entries})
    assert len(wnids) == 50
    rank = {w: i for i, w in enumerate(wnids)}
    for s in splits.values():
        assert s.num_classes == 50
        assert all(e.label == rank[e.path.parent.name] for e in s.entries)
    paths = [{e.path for e in s.entries} for s in splits.values()]
    assert not (paths[0] & paths[1]) and not (paths[0] & paths[2]) and not (paths[1] & paths[2])


@pytest.mark.skipif(not MINI.is_dir(), reason="mini-imagenet-50 not present (../shared/data/mini-imagenet-50)")
def test_real_mini_imagenet_split():
    split = read_split(MINI / "train.txt", check_files=True)
    assert len(split.entries) == 24999 and split.num_classes == 50
    classes = (MINI / "classes.txt").read_text().split()
    assert all(classes[e.label] == e.path.parent.name for e in split.entries)

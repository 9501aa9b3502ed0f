"""Bad input through the real CLI, as a user meets it.

Each case copies the tiny synthetic set, breaks one thing with a real file, and runs `prismlab eval`
or `prismlab train`: a user error gives ONE line naming the file (and the split line), exit code 2
and no traceback; with --skip-bad it becomes a counted skip instead. Legitimate but unusual image
formats must decode and run. Most cases call prismlab.cli.main in-process (a subprocess costs
seconds of torch import each); one runs `python -m prismlab` to check the real process end to end.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prismlab.cli import main
from prismlab.data.decode import MAX_PIXELS

TRAIN = ["batch_size=16", "image_size=24", "epochs=1"]


@pytest.fixture(scope="module")
def checkpoint(tiny_data, tmp_path_factory) -> Path:
    """best.pt of a real one-epoch run on the tiny set."""
    tmp = tmp_path_factory.mktemp("trained")
    assert (
        main(
            [
                "train",
                "--data",
                str(tiny_data),
                "--out",
                str(tmp / "run"),
                *TRAIN,
                f"cache_dir={tmp / 'cache'}",
                "test_split=",
            ]
        )
        == 0
    )
    return tmp / "run" / "best.pt"


def copy_set(tiny_data: Path, dest: Path) -> Path:
    shutil.copytree(tiny_data, dest)
    return dest


def entry(data: Path, split: str = "test.txt", index: int = 0) -> Path:
    """The image file on line index+1 of a split."""
    return data / (data / split).read_text().splitlines()[index].rsplit(None, 1)[0]


def append_line(data: Path, text: str, split: str = "test.txt") -> None:
    with open(data / split, "a") as f:
        f.write(text + "\n")


def replace_in_split(data: Path, old: str, new: str, split: str = "test.txt") -> None:
    text = (data / split).read_text()
    assert old in text
    (data / split).write_text(text.replace(old, new, 1))


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *names) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prismlab: error: "), err
    for name in names:
        assert str(name) in lines[0], f"{name!r} not in: {lines[0]}"


# ---- broken data: each case breaks one thing and says what the error must name ----------------------


def malformed_line(d):
    append_line(d, "images/no-label-here.jpg")
    return [f"{d / 'test.txt'}:25:", "expected '<path> <label>'"]


def missing_file(d):
    entry(d).unlink()
    return [f"{d / 'test.txt'}:1:", "image not found", entry(d).name]


def zero_byte_file(d):
    entry(d).write_bytes(b"")
    return [entry(d), "empty file", f"{d / 'test.txt'}:1"]


def truncated_jpeg(d):
    data = entry(d).read_bytes()
    entry(d).write_bytes(data[: len(data) // 2])
    return [entry(d), "cannot decode", f"{d / 'test.txt'}:1"]


def text_named_jpg(d):
    entry(d).write_text("a text file, whatever its name says\n")
    return [entry(d), "not an image", f"{d / 'test.txt'}:1"]


def label_out_of_range(d):
    replace_in_split(d, " 0\n", " 4\n")  # 4 classes: labels 0..3
    return [f"{d / 'test.txt'}:1:", "label 4 out of range 0..3"]


def negative_label(d):
    replace_in_split(d, " 0\n", " -1\n")
    return [f"{d / 'test.txt'}:1:", "negative label -1"]


def empty_split(d):
    (d / "test.txt").write_text("")
    return [d / "test.txt", "no entries"]


def same_path_twice(d):
    append_line(d, (d / "test.txt").read_text().splitlines()[0])
    return [f"{d / 'test.txt'}:25:", "listed twice (lines 1 and 25)"]


def decompression_bomb(d):
    # A 10 KB PNG that declares 81 million pixels: decoding it would take 81 MB or far more.
    side = int(MAX_PIXELS**0.5) + 1000
    Image.new("1", (side, side)).save(entry(d), format="PNG")
    return [entry(d), "decompression bomb", f"{d / 'test.txt'}:1"]


# (break the set, entries --skip-bad keeps out of 24 test images; None: no skip possible)
BAD = {
    "malformed-line": (malformed_line, 24),
    "missing-file": (missing_file, 23),
    "0-byte-file": (zero_byte_file, 23),
    "truncated-jpeg": (truncated_jpeg, 23),
    "text-file-named-jpg": (text_named_jpg, 23),
    "label-out-of-range": (label_out_of_range, 23),
    "negative-label": (negative_label, 23),
    "empty-split": (empty_split, None),
    "same-path-twice": (same_path_twice, 24),
    "decompression-bomb": (decompression_bomb, 23),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_eval_input_is_one_clear_line(case, tiny_data, checkpoint, tmp_path, capsys):
    data = copy_set(tiny_data, tmp_path / "data")
    names = BAD[case][0](data)
    code, _, err = cli(capsys, "eval", "--checkpoint", checkpoint, "--split", data / "test.txt", "--channels", "RGB")
    assert_one_line_error(code, err, *names)


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_skip_bad_counts_and_lists_the_skip(case, tiny_data, checkpoint, tmp_path, capsys):
    data = copy_set(tiny_data, tmp_path / "data")
    breaker, kept = BAD[case]
    names = breaker(data)
    report = tmp_path / "eval.json"
    code, out, err = cli(
        capsys,
        "eval",
        "--checkpoint",
        checkpoint,
        "--split",
        data / "test.txt",
        "--channels",
        "RGB",
        "--skip-bad",
        "--json",
        report,
    )
    if kept is None:  # nothing usable left: still an error, --skip-bad or not
        assert_one_line_error(code, err, *names)
        return
    assert code == 0, err
    assert [ln for ln in err.splitlines() if ln.startswith("skipped ")] == err.strip().splitlines()
    assert len(err.strip().splitlines()) == 1 and str(names[0]) in err
    result = json.loads(report.read_text())
    assert result["n"] == kept and result["results"]["RGB"]["n"] == kept and len(result["skipped"]) == 1


def test_train_names_the_bad_training_file(tiny_data, tmp_path, capsys):
    data = copy_set(tiny_data, tmp_path / "data")
    bad = entry(data, "train.txt", 5)
    bad.write_bytes(bad.read_bytes()[:100])
    code, _, err = cli(capsys, "train", "--data", data, "--out", tmp_path / "run", *TRAIN)
    assert_one_line_error(code, err, bad, f"{data / 'train.txt'}:6", "--skip-bad")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_train_skip_bad_logs_each_skip_and_the_count(tiny_data, tmp_path, capsys):
    data = copy_set(tiny_data, tmp_path / "data")
    bad = entry(data, "train.txt", 5)
    bad.write_bytes(bad.read_bytes()[:100])
    append_line(data, "images/not-there.jpg 1", "train.txt")
    run = tmp_path / "run"
    code, out, err = cli(capsys, "train", "--data", data, "--out", run, "--skip-bad", *TRAIN, "test_split=")
    assert code == 0, err
    assert f"{data / 'train.txt'}: skipped 2 bad entries" in out
    log = (run / "train.log").read_text()
    skipped = [ln for ln in log.splitlines() if ln.split(" ", 2)[2].startswith("skipped ")]
    assert len(skipped) == 2
    assert str(bad) in skipped[1] and f"{data / 'train.txt'}:97: image not found" in skipped[0]
    assert f"{data / 'train.txt'}: 2 bad entries skipped" in log
    assert "train 95 images" in log  # 97 lines: 96 images, one of them broken, and one missing file


# ---- legitimate formats: decoded like their plain RGB equivalent, never skipped --------------------


def _as_png(data: Path, split: str, image: Image.Image) -> None:
    """Swap the split's first image for `image` saved as PNG (the split line follows the new name)."""
    old = entry(data, split)
    image.save(old.with_suffix(".png"))
    old.unlink()
    replace_in_split(data, old.name, old.with_suffix(".png").name, split)


def cmyk_jpeg(data, reference, split="test.txt"):
    path = entry(data, split)
    Image.open(path).convert("CMYK").save(path, format="JPEG", quality=95)
    if reference:  # what the CMYK file shows on screen, stored losslessly
        _as_png(data, split, Image.open(path).convert("RGB"))


def rgba_png(data, reference, split="test.txt"):
    rgb = Image.open(entry(data, split)).convert("RGB")
    alpha = np.random.default_rng(0).integers(0, 256, rgb.size[::-1], dtype=np.uint8)
    rgba = Image.fromarray(np.dstack([np.asarray(rgb), alpha]), "RGBA")
    _as_png(data, split, rgb if reference else rgba)  # alpha is dropped, never composited onto a background


def palette_png(data, reference, split="test.txt"):
    pal = Image.open(entry(data, split)).convert("RGB").quantize(64)
    _as_png(data, split, pal.convert("RGB") if reference else pal)


def png_16_bit(data, reference, split="test.txt"):
    gray = np.asarray(Image.open(entry(data, split)).convert("L"))
    deep = Image.fromarray(gray.astype(np.uint16) * 257)  # the same shades at 16 bits: v * 257 >> 8 == v
    assert deep.mode == "I;16"
    _as_png(data, split, Image.fromarray(gray) if reference else deep)


FORMATS = {"cmyk-jpeg": cmyk_jpeg, "rgba-png": rgba_png, "palette-png": palette_png, "16-bit-png": png_16_bit}


@pytest.mark.parametrize("fmt", FORMATS, ids=list(FORMATS))
def test_odd_formats_evaluate_like_their_rgb_equivalent(fmt, tiny_data, checkpoint, tmp_path, capsys):
    results = {}
    for reference in (False, True):
        data = copy_set(tiny_data, tmp_path / f"data-{reference}")
        FORMATS[fmt](data, reference)
        report = tmp_path / f"eval-{reference}.json"
        code, _, err = cli(capsys, "eval", "--checkpoint", checkpoint, "--split", data / "test.txt", "--json", report)
        assert code == 0 and err == "", err
        results[reference] = json.loads(report.read_text())
    assert results[False]["n"] == 24 and results[False]["skipped"] == []
    assert results[False]["results"] == results[True]["results"]


def test_training_runs_with_every_odd_format(tiny_data, tmp_path, capsys):
    data = copy_set(tiny_data, tmp_path / "data")
    lines = (data / "train.txt").read_text().splitlines()
    for fmt in FORMATS.values():
        fmt(data, reference=False, split="train.txt")
        # rotate, so that the next format takes the next image
        lines = (data / "train.txt").read_text().splitlines()
        (data / "train.txt").write_text("\n".join(lines[1:] + lines[:1]) + "\n")
    assert sum(".png " in ln for ln in (data / "train.txt").read_text().splitlines()) == 3
    code, out, err = cli(capsys, "train", "--data", data, "--out", tmp_path / "run", *TRAIN, "test_split=")
    assert code == 0 and "skipped" not in out, err
    assert "train 96 images" in (tmp_path / "run" / "train.log").read_text()


# ---- bad arguments and configs ------------------------------------------------------------------------

ARGS = {
    "unknown-channels": (["eval", "--split", "{data}/test.txt", "--channels", "RX"], ["unknown channel subset 'RX'"]),
    "unknown-model": (["train", "model=resnet35", *TRAIN], ["unknown model 'resnet35'", "resnet34"]),
    "negative-epochs": (["train", "epochs=-1"], ["epochs must be in 1..100000, got -1"]),
    "lr-not-a-number": (["train", "lr=abc"], ["lr='abc'", "expected float"]),
    "unknown-config-key": (["train", "learning_rate=0.1"], ["unknown config key 'learning_rate'"]),
    "bad-yaml-value": (["train", "model_kw.adapter=[naive"], ["invalid YAML value"]),
    "missing-config-file": (["train", "--config", "{data}/nope.yaml"], ["nope.yaml", "not found"]),
    "missing-resume-checkpoint": (["train", "--resume", "{data}/nope.pt", *TRAIN], ["nope.pt", "checkpoint not found"]),
    "missing-split-file": (["eval", "--split", "{data}/nope.txt"], ["nope.txt", "split file not found"]),
    "export-unknown-channels": (
        ["export", "--out", "{tmp}/m.onnx", "--channels", "RX"],
        ["unknown channel subset 'RX'"],
    ),
    "export-size-too-small": (
        ["export", "--out", "{tmp}/m.onnx", "--size", "4"],
        ["best.pt", "baseline_cnn cannot take 4x4 input", "--size 4"],
    ),
}


@pytest.mark.parametrize("case", ARGS, ids=list(ARGS))
def test_bad_arguments_are_one_clear_line(case, tiny_data, checkpoint, tmp_path, capsys):
    argv, names = ARGS[case]
    argv = [a.format(data=tiny_data, tmp=tmp_path) for a in argv]
    if argv[0] in ("eval", "export"):
        argv += ["--checkpoint", str(checkpoint)]
    else:
        argv += ["--data", str(tiny_data), "--out", str(tmp_path / "run")]
    code, _, err = cli(capsys, *argv)
    assert_one_line_error(code, err, *names)


@pytest.mark.parametrize(
    "argv", [["--size", "0"], ["--size", "-24"], ["--size", "big"]], ids=["zero", "negative", "text"]
)
def test_argparse_rejects_bad_sizes(argv, tiny_data, checkpoint, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["eval", "--checkpoint", str(checkpoint), "--split", str(tiny_data / "test.txt"), *argv])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "argument --size" in err and "Traceback" not in err


def test_bad_checkpoint_files(tiny_data, checkpoint, tmp_path, capsys):
    good = checkpoint.read_bytes()
    files = {"empty.pt": b"", "half.pt": good[: len(good) // 2], "notes.pt": b"not a checkpoint\n"}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
        code, _, err = cli(capsys, "eval", "--checkpoint", tmp_path / name, "--split", tiny_data / "test.txt")
        assert_one_line_error(code, err, tmp_path / name, "cannot read checkpoint")
        code, _, err = cli(capsys, "export", "--checkpoint", tmp_path / name, "--out", tmp_path / "m.onnx")
        assert_one_line_error(code, err, tmp_path / name, "cannot read checkpoint")
    assert not (tmp_path / "m.onnx").exists()


def test_resume_from_another_models_checkpoint(tiny_data, checkpoint, tmp_path, capsys):
    code, _, err = cli(
        capsys,
        "train",
        "--data",
        tiny_data,
        "--out",
        tmp_path / "run",
        "--resume",
        checkpoint,
        *TRAIN,
        "model=resnet34",
    )
    assert_one_line_error(code, err, checkpoint, "holds a baseline_cnn model", "resnet34")


def test_real_process_exit_code_and_stderr(tiny_data, checkpoint, tmp_path):
    data = copy_set(tiny_data, tmp_path / "data")
    names = truncated_jpeg(data)
    proc = subprocess.run(
        [sys.executable, "-m", "prismlab", "eval", "--checkpoint", str(checkpoint), "--split", str(data / "test.txt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_error(proc.returncode, proc.stderr, *names)
    assert proc.stdout == ""

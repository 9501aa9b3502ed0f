"""Nothing lost, nothing silently wrong: every failing command leaves the run folder byte for byte as
it was; one command owns a run folder at a time; the decode cache follows its images and never trusts
a damaged copy; hostile values are refused before they cost memory. Real files, processes and signals."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prismlab.cli import main
from prismlab.data.cache import build_cache, cache_key
from prismlab.data.splits import load_split
from prismlab.engine.rundir import load_checkpoint, save_checkpoint

TRAIN = ["batch_size=16", "image_size=24", "epochs=1", "test_split="]


def digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) -> a hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def finished(tiny_data, tmp_path_factory):
    """A finished one-epoch run folder, copied afresh by each test that may change it."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", "--data", str(tiny_data), "--out", str(run), *TRAIN]) == 0
    return run


@pytest.fixture
def run(finished, tmp_path):
    dest = tmp_path / "run"
    shutil.copytree(finished, dest)
    return dest


# ---- a failing command changes nothing --------------------------------------------------------


def resume(run, *extra):
    return ["train", "--resume", run / "last.pt", *extra]


def with_config(run, *extra):  # the run's own config file: overrides a plain resume refuses reach their checks
    return resume(run, "--config", run / "config.yaml", *extra)


def corrupt(name, field, value):
    """A prepare step: the run's checkpoint `name` with one field of the wrong type."""

    def prepare(run):
        ckpt = load_checkpoint(run / name)
        ckpt[field] = value
        save_checkpoint(ckpt, run / name)

    return prepare


def evaluate(run, data, split="test.txt"):
    return ["eval", "--checkpoint", run / "best.pt", "--split", data / split, "--json", run / "eval.json"]


# case -> (prepare the run folder (before its hash), argv(run, data), data damage, words of the one line)
FAILING = {
    "another model on resume": (
        None,
        lambda r, d: with_config(r, "model=shallow"),
        None,
        "holds a baseline_cnn model, but the config asks for shallow",
    ),
    "a bad config value on resume": (
        None,
        lambda r, d: with_config(r, "weight_decay=-1"),
        None,
        "weight_decay must be in 0.0..1.0, got -1.0",
    ),
    "a nan lr on resume": (None, lambda r, d: resume(r, "lr=nan"), None, "lr must be a positive number, got nan"),
    "no epochs on resume": (None, lambda r, d: resume(r, "epochs=0"), None, "epochs must be in 1..100000, got 0"),
    "warm-up longer than the run": (
        None,
        lambda r, d: with_config(r, "warmup_epochs=3"),
        None,
        "warmup_epochs must be in 0..epochs (1), got 3.0",
    ),
    "a missing validation split": (
        None,
        lambda r, d: with_config(r, "val_split=nope.txt"),
        None,
        "nope.txt: val_split not found",
    ),
    "a split label that is no number": (
        None,
        lambda r, d: resume(r, f"data={d}"),
        "label",
        "label 'many' is not an integer",
    ),
    "a split line naming a FIFO": (
        None,
        lambda r, d: resume(r, f"data={d}"),
        "fifo",
        "not a regular file: images/fifo.png",
    ),
    "an unreadable image without --skip-bad": (
        None,
        lambda r, d: resume(r, f"data={d}"),
        "image",
        "cannot decode image (not an image, or an unknown format)",
    ),
    "a checkpoint whose config is text, resumed": (
        corrupt("last.pt", "config", "lr: 9"),
        lambda r, d: resume(r),
        None,
        "last.pt: not a prismlab checkpoint (its config is a str, not a mapping)",
    ),
    "a checkpoint whose epoch is text, resumed": (
        corrupt("last.pt", "epoch", "three"),
        lambda r, d: resume(r),
        None,
        "last.pt: cannot resume from it (its epoch, best_acc, history or optimizer has the wrong type)",
    ),
    "a checkpoint whose classes are a mapping, evaluated": (
        corrupt("best.pt", "classes", {"a": 1}),
        lambda r, d: evaluate(r, d),
        None,
        "best.pt: not a prismlab checkpoint (its classes are not a list of names)",
    ),
    "a checkpoint whose model is a list, evaluated": (
        corrupt("best.pt", "model", [1, 2]),
        lambda r, d: evaluate(r, d),
        None,
        "best.pt: not a prismlab checkpoint (its model is not a mapping of names to tensors)",
    ),
    "an unreadable image, evaluated": (None, lambda r, d: evaluate(r, d), "image", "cannot decode image"),
    "a split label that is no number, evaluated": (
        None,
        lambda r, d: evaluate(r, d),
        "label",
        "label 'many' is not an integer",
    ),
    "a report with a folder that is no run": (
        None,
        lambda r, d: ["report", r, d / "images"],
        None,
        "images: not a run folder (no config.yaml)",
    ),
    "a report of a folder with a broken stamp": (
        lambda r: (r / "format.json").write_text("{}"),
        lambda r, d: ["report", r],
        None,
        "format.json: not a format stamp",
    ),
}


def damaged(tiny_data: Path, dest: Path, damage: str | None) -> Path:
    """A copy of the data set with one hostile thing in train.txt and test.txt (None: the data set itself)."""
    if damage is None:
        return tiny_data
    shutil.copytree(tiny_data, dest)
    for split in ("train.txt", "test.txt"):
        lines = (dest / split).read_text().splitlines()
        if damage == "label":
            lines.insert(0, f"{lines[0].split()[0]} many")
        elif damage == "fifo":
            lines.insert(0, "images/fifo.png 0")
        else:
            (dest / lines[0].split()[0]).write_bytes(b"no image in here")
        (dest / split).write_text("\n".join(lines) + "\n")
    if damage == "fifo":
        os.mkfifo(dest / "images" / "fifo.png")
    return dest


@pytest.mark.parametrize("case", FAILING)
def test_a_failing_command_leaves_the_run_folder_as_it_was(
    case, run, tiny_data, tmp_path, capsys, restore_torch_globals
):
    prepare, argv, damage, words = FAILING[case]
    if prepare:
        prepare(run)
    data = damaged(tiny_data, tmp_path / "data", damage)
    before = digest(run)
    code, _, err = cli(capsys, *argv(run, data))
    assert code == 2 and err.count("\n") == 1 and err.startswith("prismlab: error: ") and words in err, err
    assert digest(run) == before


def test_a_resume_writes_only_into_its_own_folder(run, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(run, other)
    before = digest(other)
    code, _, err = cli(capsys, "train", "--out", other, "--resume", run / "last.pt")
    assert code == 2 and f"a resume continues the run in its own folder ({run})" in err and f"--out {run}" in err
    assert digest(other) == before


def test_a_refused_fresh_run_leaves_no_folder(tiny_data, tmp_path, capsys):
    code, _, err = cli(capsys, "train", "--data", tiny_data, "--out", tmp_path / "new", *TRAIN, "val_split=nope.txt")
    assert code == 2 and "nope.txt" in err and not (tmp_path / "new").exists()


def test_a_full_disk_at_the_end_keeps_the_run_unfinished(tiny_data, tmp_path, monkeypatch, capsys):
    # The test results are written atomically and last: a failed write leaves no eval-test.json that
    # would mark the run finished.
    import prismlab.files as files

    real = files.atomic_write

    def full_at_test(path, write, what="file"):
        if Path(path).name == "eval-test.json":
            raise files.WriteError(
                f"{path}: cannot write {what} (no space left on the disk); the previous file is unchanged"
            )
        real(path, write, what)

    monkeypatch.setattr(files, "atomic_write", full_at_test)
    out = tmp_path / "run"
    code, _, err = cli(capsys, "train", "--data", tiny_data, "--out", out, *TRAIN[:-1])
    assert code == 1 and "eval-test.json: cannot write test results (no space left" in err
    assert not (out / "eval-test.json").exists() and (out / "last.pt").exists()
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


# ---- one command per run folder -----------------------------------------------------------------

TWIN = """
import sys, time
import prismlab.engine.train as train
real = train.setup
def slow_setup(*a, **k):
    run = real(*a, **k)
    time.sleep(float(sys.argv[2]))  # hold the folder while the other one starts
    return run
train.setup = slow_setup
from prismlab.cli import main
sys.exit(main(["train", "--data", sys.argv[1], "--out", sys.argv[3], "batch_size=16", "image_size=24",
               "epochs=1", "test_split=", f"seed={sys.argv[4]}"]))
"""


def test_two_trainers_on_one_folder_exactly_one_runs(tiny_data, tmp_path):
    out = tmp_path / "twin"
    first = subprocess.Popen(
        [sys.executable, "-c", TWIN, str(tiny_data), "8", str(out), "0"], stderr=subprocess.PIPE, text=True
    )
    for _ in range(600):  # until the first one holds the folder
        if (out / "config.yaml").exists():
            break
        time.sleep(0.1)
    second = subprocess.run(
        [sys.executable, "-c", TWIN, str(tiny_data), "0", str(out), "1"], capture_output=True, text=True, timeout=300
    )
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert second.returncode == 2
    assert (
        second.stderr.strip()
        == f"prismlab: error: {out}: in use by another prismlab command; wait for it to end, or choose another --out"
    )
    assert load_checkpoint(out / "last.pt")["config"]["seed"] == 0


HOLD = """
import sys
from prismlab.files import FolderLock
FolderLock(sys.argv[1], "choose another --out").acquire()  # as train holds its run folder
print("held", flush=True)
sys.stdin.read()  # until the test closes the pipe
"""


@pytest.fixture
def held(run):
    """The run folder, locked by another process for as long as the test runs."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "held\n"
        yield run
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


@pytest.mark.parametrize(
    "argv, alternative",
    [
        (["report", "{run}"], ", or write the report elsewhere with --out"),
        (["report", "{other}", "--out", "{run}/other.md"], ", or write the report elsewhere with --out"),
    ],
)
def test_a_folder_another_command_owns_is_refused_in_one_line(argv, alternative, held, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(held, other)
    before = digest(tmp_path)
    code, _, err = cli(capsys, *(a.format(run=held, other=other) for a in argv))
    assert code == 2
    assert err == f"prismlab: error: {held}: in use by another prismlab command; wait for it to end{alternative}\n"
    assert digest(tmp_path) == before


def test_a_report_written_elsewhere_reads_a_folder_another_command_owns(held, tmp_path, capsys):
    before = digest(held)
    code, out, _ = cli(capsys, "report", held, "--out", tmp_path / "elsewhere" / "report.md")
    assert code == 0 and (tmp_path / "elsewhere" / "report.md").is_file() and digest(held) == before


# ---- the decode cache -------------------------------------------------------------------------


def test_replaced_images_give_a_new_cache(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    split = load_split(data / "val.txt")
    old, key = build_cache(split, 16, tmp_path / "cache"), cache_key(split, 16)
    assert old.images.max() > 0
    for e in split.entries:  # every image black; the split file is unchanged
        Image.new("RGB", (24, 24)).save(e.path, format="JPEG")
    new = build_cache(load_split(data / "val.txt"), 16, tmp_path / "cache")
    assert new.images.max() <= 2 and cache_key(load_split(data / "val.txt"), 16) != key


@pytest.mark.parametrize("damage", ["truncated images", "short labels", "no meta", "other labels"])
def test_a_damaged_cache_is_rebuilt_not_trusted(damage, tiny_data, tmp_path):
    split = load_split(tiny_data / "val.txt")
    good = build_cache(split, 16, tmp_path / "cache")
    want = (np.array(good.images), good.labels.copy())
    folder = tmp_path / "cache" / cache_key(split, 16)
    if damage == "truncated images":
        with open(folder / "images.npy", "r+b") as f:
            f.truncate(os.path.getsize(folder / "images.npy") // 2)
    elif damage == "short labels":
        np.save(folder / "labels.npy", good.labels[:-2])
    elif damage == "other labels":
        np.save(folder / "labels.npy", (good.labels + 1) % 4)
    else:
        (folder / "meta.json").unlink()
    again = build_cache(split, 16, tmp_path / "cache")
    assert np.array_equal(np.array(again.images), want[0]) and np.array_equal(again.labels, want[1])


@pytest.fixture(scope="module")
def slow_split(tmp_path_factory) -> Path:
    """A split of 400 images, enough for a worker pool (over 256), each slow to decode."""
    data = tmp_path_factory.mktemp("slow")
    big = data / "images" / "big"
    big.mkdir(parents=True)
    noise = big / "0.png"  # noise: no compression to speak of, so every file is slow to decode
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (600, 600, 3), dtype=np.uint8)).save(noise)
    for i in range(1, 400):
        shutil.copyfile(noise, big / f"{i}.png")
    (data / "big.txt").write_text("".join(f"images/big/{i}.png {i % 4}\n" for i in range(400)))
    return data / "big.txt"


BUILD = """
import signal, sys
from prismlab.cli import _terminate
from prismlab.data.cache import build_cache
from prismlab.data.splits import load_split
signal.signal(signal.SIGTERM, _terminate)
build_cache(load_split(sys.argv[1]), 32, sys.argv[2], workers=2)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_killed_build_leaves_nothing_behind(sig, slow_split, tmp_path):
    # Killed mid-build, the decode workers die with their parent; SIGTERM removes the temp folder at
    # once, kill -9 runs no cleanup, so the next build removes it, then builds.
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", BUILD, str(slow_split), str(cache)], start_new_session=True)
    for _ in range(600):
        if list(cache.glob("*.tmp*")):
            break
        time.sleep(0.05)
    time.sleep(1.0)
    children = _children(proc.pid)
    try:
        assert children, "the build should have started its decode workers"
        proc.send_signal(sig)
        proc.wait(timeout=60)
        for _ in range(100):
            if not [c for c in children if _running(c)]:
                break
            time.sleep(0.05)
        assert not [c for c in children if _running(c)]
    finally:
        for c in children:  # a worker that outlived the test would decode on (ours to end)
            if _running(c):
                os.kill(c, signal.SIGKILL)
    assert bool(list(cache.glob("*.tmp*"))) == (sig == signal.SIGKILL)
    built = build_cache(load_split(slow_split), 32, cache, workers=1)
    assert built.images.shape == (400, 32, 32, 3) and not list(cache.glob("*.tmp*"))


def _children(pid: int) -> list[int]:
    """Every descendant of `pid` (the children of each of its threads, theirs in turn)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
        for kid in kids:
            found += [kid, *_children(kid)]
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


# ---- hostile values ---------------------------------------------------------------------------

HOSTILE_SPEC = """
import resource, sys
import torch, prismlab.engine.evaluate
from prismlab.cli import main
size = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
limit = size + (1 << 30)  # 1 GiB more than torch's own mappings: a million-class head (2 GB) would not fit
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
sys.exit(main(["eval", "--checkpoint", sys.argv[1], "--split", sys.argv[2]]))
"""


def test_a_hostile_checkpoint_spec_is_refused_before_it_is_built(finished, tiny_data, tmp_path):
    ckpt = load_checkpoint(finished / "best.pt")
    ckpt["model_spec"] = {**ckpt["model_spec"], "num_classes": 1_000_000}
    save_checkpoint(ckpt, tmp_path / "hostile.pt")
    proc = subprocess.run(
        [sys.executable, "-c", HOSTILE_SPEC, str(tmp_path / "hostile.pt"), str(tiny_data / "test.txt")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert (
        proc.stderr.count("\n") == 1
        and "weights do not fit this model (trunk.head.4.weight: its model_spec gives (1000000, 512), "
        "the file holds (4, 512)"
        in proc.stderr
    )


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("config", "not a mapping", "its config is a str, not a mapping"),
        ("classes", {"a": 1}, "its classes are not a list of names"),
        ("model", [1, 2], "its model is not a mapping of names to tensors"),
    ],
)
def test_checkpoint_fields_of_the_wrong_type_are_one_line(field, value, words, finished, tiny_data, tmp_path, capsys):
    ckpt = load_checkpoint(finished / "best.pt")
    ckpt[field] = value
    save_checkpoint(ckpt, tmp_path / "bad.pt")
    code, _, err = cli(capsys, "eval", "--checkpoint", tmp_path / "bad.pt", "--split", tiny_data / "test.txt")
    assert code == 2 and err.count("\n") == 1 and words in err


def test_a_label_far_beyond_the_classes_needs_a_class_list(tmp_path, tiny_data, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "classes.txt").unlink()
    first = (data / "train.txt").read_text().splitlines()[0].rsplit(None, 1)[0]
    with open(data / "train.txt", "a") as f:
        f.write(f"{first.replace('.', '_copy.')} 999999\n")
    shutil.copy(data / first, data / first.replace(".", "_copy."))
    code, _, err = cli(capsys, "train", "--data", data, "--out", tmp_path / "r", *TRAIN)
    assert code == 2 and "label 999999, but only 5 distinct labels are used" in err and "classes.txt" in err


def test_a_fifo_as_split_file_is_one_line_not_a_hang(tmp_path, tiny_data, finished, capsys):
    fifo = tmp_path / "split.txt"
    os.mkfifo(fifo)
    code, _, err = cli(capsys, "eval", "--checkpoint", finished / "best.pt", "--split", fifo)
    assert code == 2 and "not a regular file" in err


@contextmanager
def deadline(seconds: float):
    """A TimeoutError in place of a hang (a blocked open() is interrupted by the signal)."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_fifo_as_an_image_is_one_line_not_a_hang(tmp_path, tiny_data, finished, capsys):
    from prismlab.errors import DataError

    data = tmp_path / "data"
    data.mkdir()
    image = data / "x.png"
    shutil.copy(next((tiny_data / "images").rglob("*.jp*g")), image)
    (data / "test.txt").write_text("x.png 0\n")
    split = load_split(data / "test.txt")  # an image when the split is read...
    image.unlink()
    os.mkfifo(image)  # ...a FIFO by the time it is decoded
    with deadline(60):
        with pytest.raises(DataError) as e:
            build_cache(split, 16, tmp_path / "cache")
        code, _, err = cli(capsys, "eval", "--checkpoint", finished / "best.pt", "--split", data / "test.txt")
    assert str(e.value) == (
        f"{image}: cannot decode image (not a regular file) (listed at {data / 'test.txt'}:1; use --skip-bad to skip)"
    )
    assert code == 2 and err == f"prismlab: error: {data / 'test.txt'}:1: not a regular file: x.png\n"


def test_the_same_subset_twice_is_evaluated_once(finished, tiny_data, capsys):
    code, out, _ = cli(
        capsys,
        "eval",
        "--checkpoint",
        finished / "best.pt",
        "--split",
        tiny_data / "test.txt",
        "--channels",
        "RGB,R,RGB",
    )
    assert code == 0 and [ln.split()[0] for ln in out.splitlines()[2:]] == ["RGB", "R"]


def test_an_extreme_aspect_ratio_is_resized_within_bounded_memory():
    from prismlab.data.decode import resize_center_crop

    strip = np.zeros((8, 2_000_000, 3), dtype=np.uint8)  # 16 M pixels, under the bomb limit
    strip[:, 999_998:1_000_002] = 255  # a white bar at the centre, narrower than the crop's 8 source pixels
    out = resize_center_crop(strip, 64)  # resized whole: 64 x 16 M pixels, 3 GB
    assert out.shape == (64, 64, 3) and out.max() == 255 and out.min() == 0


def test_sigterm_keeps_the_last_finished_epoch_like_ctrl_c(tiny_data, tmp_path):
    out = tmp_path / "run"
    script = (
        "import sys, os, signal\nimport prismlab.engine.train as t\nreal = t.close_epoch\n"
        "def close(run, epoch, row):\n    r = real(run, epoch, row)\n"
        "    if epoch == 0:\n        os.kill(os.getpid(), signal.SIGTERM)\n    return r\n"
        "t.close_epoch = close\nfrom prismlab.cli import main\n"
        f"sys.exit(main(['train', '--data', {str(tiny_data)!r}, '--out', {str(out)!r}, 'batch_size=16', "
        "'image_size=24', 'epochs=3', 'test_split=']))"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 143, proc.stderr
    assert "prismlab: terminated: stopped during epoch" in proc.stderr
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["interrupted"] is True and ckpt["epoch"] == 1
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


FULL_DISK = """
import json, sys, torch
from prismlab.data.cache import build_cache
from prismlab.data.splits import load_split
from prismlab.engine.checkpoint import read_weights_only
from prismlab.engine.rundir import save_checkpoint
from prismlab.errors import PrismError
disk, split = sys.argv[1], sys.argv[2]
out = {}
save_checkpoint({"model": {"w": torch.ones(100_000)}}, f"{disk}/last.pt")  # 0.4 MB: fits
try:
    save_checkpoint({"model": {"w": torch.ones(1_000_000)}}, f"{disk}/last.pt")  # 4 MB: does not
except PrismError as e:
    out["checkpoint"] = str(e)
out["previous"] = int(read_weights_only(f"{disk}/last.pt")["model"]["w"].numel())
try:
    build_cache(load_split(split), 256, f"{disk}/cache")  # 96 images x 196 KB: more than is left
except PrismError as e:
    out["cache"] = str(e)
print(json.dumps(out))
"""


def small_disk(tmp_path: Path) -> Path:
    """A folder where `unshare -rm` can mount a small tmpfs (in its own mount namespace); else the test is skipped."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not shutil.which("unshare"):
        pytest.skip("needs unshare (util-linux) to mount a small tmpfs")
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=2m tmpfs {disk}"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({probe.stderr.strip() or 'unshare -rm failed'})")
    return disk


def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tiny_data, tmp_path):
    disk = small_disk(tmp_path)
    proc = subprocess.run(
        [
            "unshare",
            "-rm",
            "sh",
            "-c",
            'mount -t tmpfs -o size=2m tmpfs "$1" && exec "$2" -c "$3" "$1" "$4"',
            "sh",
            str(disk),
            sys.executable,
            FULL_DISK,
            str(tiny_data / "train.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["checkpoint"].endswith(
        "last.pt: cannot write checkpoint (no space left on the disk); the previous file is unchanged"
    )
    assert out["previous"] == 100_000
    assert "cannot build the decode cache" in out["cache"] and "no space left on the disk" in out["cache"]


# On a full disk: an old eval.json, then `prismlab eval --json` over it; its exit status, the file, the folder.
FULL_EVAL = """mount -t tmpfs -o size=1m tmpfs "$1" || exit 99
printf '{"old": true}' > "$1/eval.json"
dd if=/dev/zero of="$1/fill" bs=64k 2>/dev/null
"$2" -m prismlab eval --checkpoint "$3" --split "$4" --json "$1/eval.json" > /dev/null
echo "rc=$?"
cat "$1/eval.json"; echo
ls -a "$1"
"""


def test_eval_json_on_a_full_disk_keeps_the_previous_file(finished, tiny_data, tmp_path):
    disk = small_disk(tmp_path)
    proc = subprocess.run(
        [
            "unshare",
            "-rm",
            "sh",
            "-c",
            FULL_EVAL,
            "sh",
            str(disk),
            sys.executable,
            str(finished / "best.pt"),
            str(tiny_data / "test.txt"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    rc, content, *files = proc.stdout.split("\n")
    assert rc == "rc=1" and content == '{"old": true}', proc.stdout + proc.stderr
    assert proc.stderr == (
        f"prismlab: error: {disk}/eval.json: cannot write evaluation results (no space left on "
        "the disk); the previous file is unchanged\n"
    )
    assert sorted(f for f in files if f) == [".", "..", "eval.json", "fill"]  # no temporary file left


@pytest.mark.parametrize("override", ["model_kw.widths=[-1,2,3,4]", "model_kw.stem_width=0", "model_kw.dropout=7"])
def test_a_model_keyword_it_cannot_build_is_one_line(override, tiny_data, tmp_path, capsys):
    code, _, err = cli(capsys, "train", "--data", tiny_data, "--out", tmp_path / "r", *TRAIN, "model=shallow", override)
    assert code == 2 and err.count("\n") == 1 and "model 'shallow' with" in err and not (tmp_path / "r").exists()


def test_a_temp_file_left_by_a_kill_is_removed_by_the_next_run(run, capsys, restore_torch_globals):
    stale = run / ".last.pt.tmp999999999"  # no such process
    stale.write_bytes(b"half a checkpoint")
    code, _, _ = cli(capsys, "train", "--resume", run / "last.pt", "epochs=2")
    assert code == 0 and not stale.exists()


def test_a_non_utf8_file_name_is_printed_escaped_not_a_traceback(tmp_path, tiny_data, finished):
    folder = tmp_path / "imgs"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not UTF-8
    shutil.copy(next((tiny_data / "images").rglob("*.jp*g")), folder / name)
    proc = subprocess.run(
        [sys.executable, "-m", "prismlab", "predict", str(folder / name), "--checkpoint", str(finished / "best.pt")],
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert b"caf\\udce9.png" in proc.stdout or b"caf\\xe9.png" in proc.stdout


def tiff(path: Path, samples: int, photometric: int, extra: tuple[int, ...], w: int = 6, h: int = 4) -> Path:
    """An uncompressed 8-bit TIFF with `samples` channels per pixel, written byte by byte (Pillow
    writes no such file)."""
    import struct

    pixels = bytes(range(256))[: w * h * samples] * 1 + bytes(max(0, w * h * samples - 256))
    entries = []
    data = b""
    base = 8  # after the header: the pixels, then the bits-per-sample array, then the IFD

    def extra_data(blob: bytes) -> int:
        nonlocal data
        off = base + len(pixels) + len(data)
        data += blob
        return off

    bps = extra_data(struct.pack(f"<{samples}H", *[8] * samples))
    tags = [
        (256, 3, 1, w),
        (257, 3, 1, h),
        (258, 3, samples, bps),
        (259, 3, 1, 1),
        (262, 3, 1, photometric),
        (273, 4, 1, base),
        (277, 3, 1, samples),
        (278, 3, 1, h),
        (279, 4, 1, len(pixels)),
        (284, 3, 1, 1),
    ]
    if extra:
        value = (
            extra_data(struct.pack(f"<{len(extra)}H", *extra))
            if len(extra) > 2
            else int.from_bytes(struct.pack(f"<{len(extra)}H", *extra).ljust(4, b"\0"), "little")
        )
        tags.append((338, 3, len(extra), value))
    ifd = base + len(pixels) + len(data)
    for tag, typ, count, value in sorted(tags):
        entries.append(
            struct.pack("<HHII", tag, typ, count, value)
            if typ == 4 or count > 1
            else struct.pack("<HHIHH", tag, typ, count, value, 0)
        )
    blob = (
        b"II*\0"
        + struct.pack("<I", ifd)
        + pixels
        + data
        + struct.pack("<H", len(entries))
        + b"".join(entries)
        + b"\0" * 4
    )
    path.write_bytes(blob)
    return path


@pytest.mark.parametrize(
    "samples, photometric, extra, refused",
    [
        (5, 2, (0, 0), True),  # RGB and two data bands: read as RGB, two channels lost
        (2, 1, (0,), True),  # gray and a data band: read as L
        (4, 2, (2,), False),  # RGBA: alpha is dropped by policy
        (3, 2, (), False),
    ],
)
def test_a_tiff_whose_channels_would_be_dropped_is_refused(samples, photometric, extra, refused, tmp_path):
    from prismlab.data.decode import load_image
    from prismlab.errors import DataError

    path = tiff(tmp_path / "x.tif", samples, photometric, extra)
    if refused:
        with pytest.raises(DataError, match="x.tif: cannot decode image"):  # one line, never a silent drop
            load_image(path)
    else:
        assert load_image(path)[0].shape == (4, 6, 3)

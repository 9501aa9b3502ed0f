"""The run folder: its file names, what each holds, and the format they are written in.

train() writes a run folder; bench, report, eval, predict and export read it back through here
only. The folder (format.json) and every checkpoint in it (its "format" key) carry FORMAT; a
folder or checkpoint of any other format, or without a stamp, is refused in one line, never read
as if it were this one.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import yaml

from prismlab.engine.checkpoint import check_layout, is_prismlab, read_weights_only, write_atomic
from prismlab.engine.config import ADDED_KEYS, TrainConfig, make_config, read_mapping
from prismlab.errors import ConfigError, DataError
from prismlab.files import write_text

# Raised with any change to what a run folder or checkpoint holds or what its weights mean, so that
# files of the other design are refused rather than loaded into different maths. The one exception:
# a config key that is off by default (config.ADDED_KEYS, with what it adds to a checkpoint) leaves
# every folder without it meaning what it meant, so a folder without it reads it as off; a prismlab
# without the key refuses a folder that has it as holding an unknown config key.
FORMAT = 1

STAMP = "format.json"  # {"format": FORMAT}
CONFIG = "config.yaml"  # the TrainConfig, every key
METRICS = "metrics.csv"  # one row per finished epoch: epoch, lr, train_loss, train_acc, time_s, img_s[, val_*]
CURVES = "curves.png"  # metrics.csv drawn
LOG = "train.log"
BEST = "best.pt"  # the checkpoint of the best validation accuracy among deployable weights
LAST = "last.pt"  # the checkpoint of the last finished epoch: what --resume continues
TEST = "eval-test.json"  # best.pt on the test split, per subset and image (engine/evaluate.py: eval_report)
COMMITS = "commits.txt"  # bench: the commit of each (re)start of the run
# What a run leaves that another run in the same folder must not inherit.
RESULTS = (TEST, LAST, BEST, METRICS, CURVES, LOG, COMMITS)


class FormatError(DataError):
    """A run folder or checkpoint of another format than this code's."""


def format_problem(path: Path, found: int | None) -> str | None:
    """The one-line refusal of a file or folder of format `found` (None: unstamped), or None when it
    is this code's."""
    if found == FORMAT:
        return None
    if found is None:
        return f"{path}: no format stamp, this prismlab reads format {FORMAT} (not a run of its design; train it again)"
    why = "a newer prismlab wrote it" if found > FORMAT else "an older format, and no upgrade from it exists"
    return f"{path}: format {found}, this prismlab reads format {FORMAT} ({why})"


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write a checkpoint stamped with this format (atomically)."""
    write_atomic({**state, "format": FORMAT}, path)


def load_checkpoint(path: str | Path) -> dict:
    """Read a prismlab checkpoint of this format (weights_only=True); anything else is a one-line DataError."""
    path = Path(path)
    ckpt = read_weights_only(path)
    if is_prismlab(ckpt):
        found = ckpt.get("format")
        problem = format_problem(path, None if found is None else _stamp_value(found, path))
        if problem:
            raise FormatError(problem)
    return check_layout(ckpt, path)


def mark_interrupted(source: str | Path, dest: str | Path) -> int:
    """Copy checkpoint `source` to `dest` flagged interrupted=True -> the epochs it holds."""
    ckpt = load_checkpoint(source)
    ckpt["interrupted"] = True
    save_checkpoint(ckpt, dest)
    return int(ckpt["epoch"])


class RunDir:
    """One run folder. Writers: start, save, write_metrics, write_test, add_commit, clear.
    Readers (each checks the folder's format first): config, metrics, test, checkpoint, commits."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # ---- writing --------------------------------------------------------------------------------

    def start(self, cfg: TrainConfig) -> None:
        """A fresh or resumed run: the folder, its stamp and its config."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.stamp()
        self.write_config(cfg)

    def stamp(self) -> None:
        write_text(self / STAMP, json.dumps({"format": FORMAT}) + "\n", "format stamp")

    def write_config(self, cfg: TrainConfig) -> None:
        write_text(self / CONFIG, yaml.safe_dump(cfg.to_dict(), sort_keys=False), "config")

    def save(self, name: str, state: dict) -> None:
        save_checkpoint(state, self / name)

    def write_metrics(self, history: list[dict]) -> None:
        from prismlab.analysis.plots import plot_curves  # matplotlib: only where a run is written

        keys = list(dict.fromkeys(k for h in history for k in h))
        table = io.StringIO(newline="")
        w = csv.DictWriter(table, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
        write_text(self / METRICS, table.getvalue(), "metrics")
        plot_curves(history, self / CURVES)

    def write_test(self, report: dict) -> None:
        """Written last and atomically: its presence is what marks the run finished."""
        write_text(self / TEST, json.dumps(report, indent=2), "test results")

    def add_commit(self, commit: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        before = (self / COMMITS).read_text() if (self / COMMITS).exists() else ""
        write_text(self / COMMITS, before + commit + "\n", "commit list")

    def clear(self) -> None:
        """Drop another run's results, so that none is taken for this run's own."""
        for name in RESULTS:
            (self / name).unlink(missing_ok=True)

    def indices_file(self, rank: int, epoch: int) -> Path:
        """log_indices: the sample indices rank `rank` trained on in `epoch` (1-based)."""
        return self / f"indices-rank{rank}-epoch{epoch}.pt"

    # ---- reading --------------------------------------------------------------------------------

    def exists(self) -> bool:
        return (self / CONFIG).is_file()

    def finished(self) -> bool:
        return (self / TEST).is_file()

    def format(self) -> int | None:
        """The folder's stamp; None for a folder without one."""
        if not (self / STAMP).is_file():
            return None
        try:
            value = json.loads((self / STAMP).read_text())["format"]
        except (ValueError, KeyError, TypeError):
            raise DataError(f'{self / STAMP}: not a format stamp (expected {{"format": N}})') from None
        return _stamp_value(value, self / STAMP)

    def check(self) -> RunDir:
        """This folder, if it is a run folder of this format; else a one-line DataError."""
        if not self.exists():
            raise DataError(f"{self.path}: not a run folder (no {CONFIG})")
        problem = format_problem(self.path, self.format())
        if problem:
            raise FormatError(problem)
        return self

    def config(self) -> TrainConfig:
        self.check()
        values = {**ADDED_KEYS, **read_mapping(self / CONFIG, DataError)}
        missing = [k for k in TrainConfig().to_dict() if k not in values]
        if missing:
            raise DataError(f"{self / CONFIG}: lacks {', '.join(missing)}")
        try:
            return make_config(None, values)
        except ConfigError as e:
            raise DataError(f"{self / CONFIG}: {e}") from None

    def metrics(self) -> list[dict[str, float]]:
        self.check()
        return read_metrics(self / METRICS)

    def test(self) -> dict | None:
        """eval-test.json, or None when the run has not finished."""
        self.check()
        return read_test(self / TEST) if self.finished() else None

    def checkpoint(self, name: str = BEST) -> dict:
        self.check()
        return load_checkpoint(self / name)

    def commits(self) -> list[str]:
        self.check()
        return (self / COMMITS).read_text().split() if (self / COMMITS).exists() else []


def read_metrics(path: Path) -> list[dict[str, float]]:
    """metrics.csv: one row per finished epoch, every value a float (epoch an int); a key a row
    lacks (val_acc without a validation split) is absent from it."""
    with open(path, newline="") as f:
        try:
            return [
                {k: int(v) if k == "epoch" else float(v) for k, v in row.items() if v != ""}
                for row in csv.DictReader(f)
            ]
        except ValueError as e:
            raise DataError(f"{path}: not a metrics table ({e})") from None


def read_test(path: Path) -> dict:
    """eval-test.json: {checkpoint, split, n, size, precision, skipped, results: {subset: {accuracy,
    loss, n}}, test_correct: {subset: one '0'/'1' per image, in split order}} (a file without test_correct:
    evaluate.test_correct scores best.pt again)."""
    try:
        report = json.loads(path.read_text())
    except ValueError as e:
        raise DataError(f"{path}: not JSON ({e})") from None
    if not isinstance(report, dict) or not isinstance(report.get("results"), dict):
        raise DataError(f"{path}: no per-subset results")
    return report


def _stamp_value(value: object, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{path}: format stamp {value!r} is not a whole number")
    return value

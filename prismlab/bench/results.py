"""What every results file shares: one provenance header (command, commit, date, machine with the CPU
flags precision rests on), one writer, targets in one form, and tables rendered from column specs."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from prismlab.analysis.report import md_table
from prismlab.analysis.stats import from_bits, paired_ratio
from prismlab.engine.precision import AVX512_CORE_FLAGS, NATIVE_BF16_FLAGS, RECORDED_FLAGS, cpu_flags
from prismlab.errors import ConfigError
from prismlab.files import write_text

REPO = Path(__file__).resolve().parents[2]  # the checkout whose commit the results name


def git_commit() -> str:
    """HEAD, with -dirty when tracked files differ from it (results files aside: the benches write them)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = cpu_flags()
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_flags": [f for f in RECORDED_FLAGS if f in flags],  # what bf16 and channels-last speed rests on
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def isa(m: dict) -> str:
    """The CPU features a machine record names, in words and as flags ('' for a record without them)."""
    if "cpu_flags" not in m:
        return ""
    f = set(m["cpu_flags"])
    vector = "AVX-512" if set(AVX512_CORE_FLAGS) <= f else "AVX2" if "avx2" in f else "no AVX2"
    return (
        f"; {vector}, {'native' if f & set(NATIVE_BF16_FLAGS) else 'no native'} bf16"
        f"; CPU flags: {' '.join(m['cpu_flags']) or 'none of ' + ' '.join(RECORDED_FLAGS)}"
    )


def trained_on(m: dict | None) -> str:
    """', trained on CPU (N cores; ...)' for a machine record ('' for none)."""
    return f", trained on {m['cpu']} ({m['cores']} cores{isa(m)})" if m else ""


def provenance(argv: list[str] | None, seed: int | None = None, **extra) -> dict:
    """The head of every results file. argv: the words after `prismlab` (cli.main may be given its own
    list: sys.argv is then another program's); seed: None for a study that only reads files."""
    return {
        "command": "prismlab " + shlex.join(argv) if argv is not None else shlex.join(sys.argv),
        "commit": git_commit(),
        **({"seed": seed} if seed is not None else {}),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        **extra,
    }


def header(doc: dict, title: str, setup: str = "", machine_note: str = "", data_note: str = "") -> list[str]:
    """`# title` and the provenance lines (Markdown line breaks), then a blank line. setup: what was
    run, after the commit; the notes: what else the machine and data lines name."""
    m = doc.get("machine") or {}
    head = [
        f"Command: `{doc['command']}`",
        f"Commit: `{doc['commit']}`" + (f", seed {doc['seed']}" if "seed" in doc else "") + setup,
    ]
    if m:
        threads = f", {m['torch_threads']} torch threads" if m.get("torch_threads") else ""
        head.append(
            f"Machine: {m['cpu']} ({m['cores']} cores{threads}{isa(m)})"
            f"{', ' + m['gpu'] if m.get('gpu') else ''}, torch {m['torch']}{machine_note}"
        )
    if "data" in doc:
        head.append(f"Data: `{doc['data']}`{data_note}" if doc["data"] else "Data: the built-in synthetic set")
    return [f"# {title}", "", *(line + "  " for line in head[:-1]), head[-1], ""]


def write_results(results_dir: str | Path, name: str, doc: dict, markdown: str) -> Path:
    d = Path(results_dir)
    d.mkdir(parents=True, exist_ok=True)
    write_text(d / f"{name}.json", json.dumps(doc, indent=2) + "\n", "results")
    write_text(d / f"{name}.md", markdown, "results")
    return d / f"{name}.json"


def read_results(results_dir: str | Path, name: str, needs: tuple[str, ...] = ()) -> dict | None:
    """benchmarks/results/<name>.json, or None where that study has not been run; a file that is not
    JSON, or lacks a key in `needs`, is a one-line error naming it (and the line)."""
    p = Path(results_dir) / f"{name}.json"
    if not p.exists():
        return None
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}:{e.lineno}: not a results file ({e.msg})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a results file (not UTF-8 text)") from None
    if missing := [k for k in needs if not isinstance(doc, dict) or k not in doc]:
        raise ConfigError(f"{p}: not a {name.split('-')[0]} results file (no {', '.join(missing)})")
    return doc


def check_targets(doc: dict, path: Path) -> None:
    """A task-2 study's targets are true, false, or absent (not judged): anything else is a file another
    program wrote or edited, refused in one line."""
    bad = [k for k, v in (doc.get("targets") or {}).items() if not isinstance(v, bool)]
    if bad:
        raise ConfigError(f"{path}: target {bad[0]!r} is neither true nor false")


def paired(mine: str, theirs: str) -> dict:
    """Two rows' packed 0/1 scores on the same test images -> the accuracy ratio with its paired interval."""
    return paired_ratio(from_bits(mine), from_bits(theirs))


@dataclass(frozen=True)
class Col:
    """A table column: its header and its cell, a row's field written with `fmt` (— where the row has
    none) or a function of (row key, row)."""

    head: str
    cell: str | Callable[[str, dict], object]
    fmt: str = "{}"

    def __call__(self, key: str, row: dict):
        if callable(self.cell):
            return self.cell(key, row)
        return "—" if row.get(self.cell) is None else self.fmt.format(row[self.cell])


def table(cols: list[Col], rows: Iterable[tuple[str, dict]], extra: Iterable[list] = ()) -> str:
    """The rows under the columns; `extra`: whole rows as cells (a summary row, say)."""
    return md_table([c.head for c in cols], [[c(k, r) for c in cols] for k, r in rows] + list(extra))


@dataclass(frozen=True)
class Target:
    """A target of a study: its name in the results file and whether the rows meet it, judged only
    where the rows it `needs` are in the study."""

    name: str
    met: Callable[[dict], bool]
    needs: tuple[str, ...] = ()


def judge(targets: list[Target], rows: dict) -> dict[str, bool]:
    return {t.name: bool(t.met(rows)) for t in targets if all(k in rows for k in t.needs)}


def targets_line(
    targets: dict | None,
    label: str = "Targets",
    sep: str = ", ",
    detail: Callable[[str, object], str] = lambda k, v: "",
) -> list[str]:
    """`Targets: name: met, name: NOT met` and a blank line; a target's value is a bool, a {"met": ...}
    record, or None for not judged (—)."""

    def verdict(v) -> str:
        met = v.get("met") if isinstance(v, dict) else v
        return "—" if met is None else "met" if met else "NOT met"

    if not targets:
        return []
    return [f"{label}: " + sep.join(f"{k}: {verdict(v)}{detail(k, v)}" for k, v in targets.items()), ""]


def notes(doc: dict, rows: dict, label: str = "Targets") -> list[str]:
    """The lines after a study's tables: rows trained at uncommitted code, rows still to run, targets."""
    return uncommitted_note(rows) + pending_lines(doc) + targets_line(doc.get("targets"), label)


def pending_lines(doc: dict) -> list[str]:
    """A study stopped half-way names what it still has to run."""
    return [f"Partial results: still to run: {', '.join(doc['pending'])}.", ""] if doc.get("pending") else []


def uncommitted_note(rows: dict) -> list[str]:
    """The rows that trained, at least in part, at uncommitted code: no checkout reproduces them exactly."""
    keys = [k for k, r in rows.items() if any(c.endswith("-dirty") for c in r.get("trained_at", []))]
    note = "Trained at least in part at uncommitted code (a `-dirty` commit in `trained_at`)"
    return [f"{note}: {', '.join(keys)}.", ""] if keys else []


def shares(share: dict | None, kinds) -> str:
    """A step's time per kind of op, in %: '61 / 12 / 27'."""
    return " / ".join(f"{100 * share[c]:.0f}" for c in kinds) if share else "—"


def trained(doc: dict) -> str:
    """', N epochs at SxS' for the commit line, naming --epochs where it set the budget."""
    more = " (--epochs: not the tier preset)" if doc.get("epochs_overridden") else ""
    return f", {doc['epochs']} epochs{more} at {doc['image_size']}x{doc['image_size']}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"

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
from prismlab.engine.precision import AVX512_CORE_FLAGS, NATIVE_BF16_FLAGS, RECORDED_FLAGS, cpu_flags
from prismlab.files import write_text

REPO = Path(__file__).resolve().parents[2]  # the checkout whose commit the results name


def git_commit() -> str:
    """HEAD, with -dirty when tracked files differ from it (results files aside: they are what the
    benches write, so rewriting one is not a change to the code that produced it)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results"],
                cwd=REPO,
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
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
    """The CPU features a machine record names, in words, then the flags themselves ('' for a record
    written without them)."""
    if "cpu_flags" not in m:
        return ""
    f = set(m["cpu_flags"])
    vector = "AVX-512" if set(AVX512_CORE_FLAGS) <= f else "AVX2" if "avx2" in f else "no AVX2"
    return (
        f"; {vector}, {'native' if f & set(NATIVE_BF16_FLAGS) else 'no native'} bf16"
        f"; CPU flags: {' '.join(m['cpu_flags']) or 'none of ' + ' '.join(RECORDED_FLAGS)}"
    )


def provenance(argv: list[str] | None, seed: int | None = None, **extra) -> dict:
    """The head of every results file. argv: the words after `prismlab` (cli.main passes them: it may
    be called with a list of its own, and then sys.argv is another program's); None: this process's.
    seed: the one the study trained or initialised with; None for a study that only reads files."""
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
    run (budget, sizes, what was timed); machine_note: what else the machine line should name."""
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
        head.append(f"Data: `{doc['data']}`{data_note}")
    return [f"# {title}", "", *(line + "  " for line in head[:-1]), head[-1], ""]


def write_results(results_dir: str | Path, name: str, doc: dict, markdown: str) -> Path:
    d = Path(results_dir)
    d.mkdir(parents=True, exist_ok=True)
    write_text(d / f"{name}.json", json.dumps(doc, indent=2) + "\n", "results")
    write_text(d / f"{name}.md", markdown, "results")
    return d / f"{name}.json"


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
    """`Targets: name: met, name: NOT met` and a blank line (nothing without targets); a target's
    value is a bool, a {"met": ...} record, or None for not judged (—)."""

    def verdict(v) -> str:
        met = v.get("met") if isinstance(v, dict) else v
        return "—" if met is None else "met" if met else "NOT met"

    if not targets:
        return []
    return [f"{label}: " + sep.join(f"{k}: {verdict(v)}{detail(k, v)}" for k, v in targets.items()), ""]


def pending_lines(doc: dict) -> list[str]:
    """A study stopped half-way names what it still has to run."""
    return [f"Partial results: still to run: {', '.join(doc['pending'])}.", ""] if doc.get("pending") else []


def uncommitted_note(rows: dict) -> list[str]:
    """A Markdown line naming the rows that trained, at least in part, at uncommitted code (a `-dirty`
    commit in their `trained_at`): no checkout reproduces exactly what they ran."""
    keys = [k for k, r in rows.items() if any(c.endswith("-dirty") for c in r.get("trained_at", []))]
    return (
        [f"Trained at least in part at uncommitted code (a `-dirty` commit in `trained_at`): {', '.join(keys)}.", ""]
        if keys
        else []
    )


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"

"""What every results file carries (command, commit, seed, machine) and the shared run helper."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import torch
import yaml

from prismlab.engine.config import make_config, saved_config
from prismlab.engine.train import train
from prismlab.errors import ConfigError, PrismError

REPO = Path(__file__).resolve().parents[2]


def default_data() -> Path:
    p = REPO.parent / "shared" / "data" / "mini-imagenet-50"
    if not p.is_dir():
        raise PrismError(f"{p}: benchmark data not found; pass --data DIR (a course-layout folder)")
    return p


def preset(name: str) -> dict:
    """A tier preset from prismlab/configs/<name>.yaml."""
    text = resources.files("prismlab").joinpath("configs", f"{name}.yaml").read_text()
    return yaml.safe_load(text)


def study_name(study: str, tier: str, epochs: int | None, preset_epochs: int, amp: str | None = None) -> str:
    """`task1-cpu`, or `task1-cpu-30ep` when --epochs departs from the preset, `task2-cpu-bf16` with
    --amp bf16: another budget or precision is another study, with its own runs folder and results
    file (it must not replace the preset's)."""
    name = f"{study}-{tier}"
    name = name if not epochs or epochs == preset_epochs else f"{name}-{epochs}ep"
    return name if not amp or amp == "auto" else f"{name}-{amp}"


def pick(spec: str, known: dict, default: list[str], study: str) -> list[str]:
    """--methods: 'default', 'all', or a comma list of known keys (in the order given, once each)."""
    if spec == "default":
        return list(default)
    if spec == "all":
        return list(known)
    names = list(dict.fromkeys(m.strip() for m in spec.split(",") if m.strip()))
    if not names:
        raise ConfigError(f"no {study} method given (--methods default, all, or a comma list)")
    for m in names:
        if m not in known:
            raise ConfigError(f"unknown {study} method {m!r} (known: {', '.join(known)})")
    return names


def git_commit() -> str:
    """HEAD, with -dirty when tracked files differ from it (results files aside: they are what the
    benches write, so rewriting one is not a change to the code that produced it)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                     ":(exclude)benchmarks/results"], cwd=REPO,
                                    capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def provenance(seed: int, argv: list[str] | None = None, **extra) -> dict:
    """argv: the words after `prismlab` (cli.main passes them: it may be called with a list of its
    own, and then sys.argv is another program's); without them, this process's command line."""
    return {
        "command": "prismlab " + shlex.join(argv) if argv is not None else shlex.join(sys.argv),
        "commit": git_commit(),
        "seed": seed,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        **extra,
    }


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def write_results(results_dir: str | Path, name: str, data: dict, markdown: str) -> Path:
    d = Path(results_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    (d / f"{name}.md").write_text(markdown)
    return d / f"{name}.json"


def train_or_reuse(overrides: dict, out: Path) -> Path:
    """Train one run; a finished run with the same config is reused, an unfinished one resumed,
    so a long study killed half-way picks up where it stopped."""
    cfg = make_config(None, {**overrides, "out": str(out)})
    same = (out / "config.yaml").exists() and saved_config(out / "config.yaml").effective() == cfg.effective()
    if same and (out / "eval-test.json").exists():
        print(f"[bench] reusing finished run {out}", flush=True)
        return out
    if not same:
        # A run of another config is replaced: drop its results first, or a new run stopped early
        # would leave them beside the new config.yaml, to be reused or resumed as if they were its own.
        for name in ("eval-test.json", "last.pt", "best.pt", "metrics.csv", "curves.png", "train.log", "commits.txt"):
            (out / name).unlink(missing_ok=True)
    resume = out / "last.pt" if same and (out / "last.pt").exists() else None
    print(f"[bench] training {out}" + (f" (resuming {resume})" if resume else ""), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "commits.txt", "a") as f:  # the code each (re)start of this run trained with
        f.write(git_commit() + "\n")
    return train(cfg, resume=resume)


def run_commits(run: Path) -> list[str]:
    p = run / "commits.txt"
    return p.read_text().split() if p.exists() else []


def metrics(run: Path) -> list[dict]:
    import csv

    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def training_seconds(run: Path) -> float:
    return sum(float(r["time_s"]) for r in metrics(run))


def val_curve(run: Path) -> list[float]:
    """Validation accuracy after each epoch, as train() logged it."""
    return [float(r["val_acc"]) for r in metrics(run) if r.get("val_acc")]


def test_scores(run: Path, subsets: list[str]) -> dict:
    """-> {subset: one 0/1 per test image} for the run's best.pt on its test split, in the
    precision the run was tested in: what the bootstrap intervals resample."""
    from prismlab.data.cache import build_cache
    from prismlab.data.loader import BatchLoader
    from prismlab.data.splits import load_split
    from prismlab.engine.checkpoint import load_checkpoint, model_from_checkpoint
    from prismlab.engine.evaluate import correct_per_image
    from prismlab.engine.precision import use_bf16

    cfg = saved_config(run / "config.yaml")
    model = model_from_checkpoint(load_checkpoint(run / "best.pt"), run / "best.pt")
    split = load_split(Path(cfg.data) / cfg.test_split, num_classes=model.spec["num_classes"], skip_bad=cfg.skip_bad)
    data = build_cache(split, cfg.image_size, cfg.cache_dir or None, cfg.skip_bad)
    cpu = torch.device("cpu")
    return correct_per_image(model, BatchLoader(data, 256, train=False), subsets, cpu, use_bf16(cfg.amp, cpu))

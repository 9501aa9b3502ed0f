"""What the studies share to run: their arguments, data, presets, names, and the one runner that
trains or reuses a row's run."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
import yaml

from prismlab.bench.results import git_commit
from prismlab.data.cache import default_cache_dir
from prismlab.engine.checkpoint import model_from_checkpoint
from prismlab.engine.config import make_config
from prismlab.engine.evaluate import test_correct
from prismlab.engine.rundir import BEST, LAST, RunDir
from prismlab.engine.train import train
from prismlab.errors import ConfigError, PrismError
from prismlab.files import FolderLock

DATA = Path("..") / "shared" / "data" / "mini-imagenet-50"  # beside the checkout one works in


@dataclass
class StudyArgs:
    """What `prismlab bench STUDY` was asked for (bench/cli.py fills it from the study's own flags)."""

    tier: str = "cpu"
    data: Path | None = None  # None: default_data()
    methods: str = "default"  # default, all, or a comma list of the study's rows
    epochs: int | None = None  # another budget than the tier preset's
    steps: int | None = None  # timed batches or steps: each study's parser says which
    amp: str = "auto"
    recipe: str = ""  # task2: a prismlab/configs/recipe-<name>.yaml applied to every row; "" for the preset's
    size: int | None = None  # task2: another image size than the tier preset's
    against: Path | None = None  # task2: an earlier results file of the same rows to compare with
    add: bool = False  # task2: keep the rows of the study's results file that --methods does not name
    results_dir: Path = Path("benchmarks/results")
    # Under the cache, not the checkout: hours-long runs survive a fresh clone and are resumed there.
    runs_dir: Path = field(default_factory=lambda: default_cache_dir() / "bench-runs")
    seed: int = 0
    argv: list[str] | None = None  # the words after `prismlab`, for the results files

    def data_dir(self) -> Path:
        return Path(self.data).resolve() if self.data else default_data()  # results name it absolute


def default_data() -> Path:
    """$PRISMLAB_DATA, else ../shared/data/mini-imagenet-50 from the working directory (absolute:
    the results and the runs' configs name it)."""
    p = Path(os.environ.get("PRISMLAB_DATA") or DATA).resolve()
    if not p.is_dir():
        raise PrismError(
            f"{p}: benchmark data not found; pass --data DIR (a course-layout folder) or set PRISMLAB_DATA"
        )
    return p


def preset(name: str) -> dict:
    """A tier preset from prismlab/configs/<name>.yaml."""
    return yaml.safe_load(resources.files("prismlab").joinpath("configs", f"{name}.yaml").read_text())


def recipe(name: str) -> dict:
    """The config keys of prismlab/configs/recipe-<name>.yaml, or a ConfigError naming the known ones."""
    names = [p.name for p in resources.files("prismlab").joinpath("configs").iterdir()]
    known = sorted(n[len("recipe-") : -len(".yaml")] for n in names if n.startswith("recipe-") and n.endswith(".yaml"))
    if name not in known:
        raise ConfigError(f"unknown recipe {name!r} (known: {', '.join(known)})")
    return preset(f"recipe-{name}")


def study_name(
    study: str,
    tier: str,
    epochs: int | None,
    preset_epochs: int,
    amp: str | None = None,
    recipe: str = "",
    size: int | None = None,
    preset_size: int | None = None,
    seed: int = 0,
) -> str:
    """`<study>-<tier>`, then -seedN, -<size>px, -<N>ep, -<amp>, -<recipe> where the study departs from
    the tier preset: another study, with its own runs folder and results file, never the preset's."""
    parts = [
        f"seed{seed}" if seed else "",
        f"{size}px" if size and size != preset_size else "",
        f"{epochs}ep" if epochs and epochs != preset_epochs else "",
        amp if amp and amp != "auto" else "",
        recipe,
    ]
    return "-".join([study, tier, *(p for p in parts if p)])


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


def train_or_reuse(overrides: dict, out: Path) -> Path:
    """Train one run; a finished run with the same config is reused, an unfinished one resumed (a
    study killed half-way picks up where it stopped). The folder is locked: two benches never share a run."""
    cfg = make_config(None, {**overrides, "out": str(out)})
    run = RunDir(out)
    out.mkdir(parents=True, exist_ok=True)
    with FolderLock(out, "let the other bench finish, or pass another --runs-dir"):
        same = run.exists() and run.config().effective() == cfg.effective()
        if same and run.finished():
            print(f"[bench] reusing finished run {out}", flush=True)
            return out
        resume = run / LAST if same and (run / LAST).exists() else None
        if resume is None:
            # A run of another config (or one stopped before its first last.pt) is replaced: drop its results
            # first, or a new run stopped early would leave them beside the new config.yaml, to be taken as its own.
            run.clear()
        print(f"[bench] training {out}" + (f" (resuming {resume})" if resume else ""), flush=True)
        run.add_commit(git_commit())  # the code each (re)start of this run trained with
        return train(cfg, resume=resume)


def read_run(path: Path, size: int) -> tuple[RunDir, dict, torch.nn.Module, dict]:
    """What a finished run wrote -> (the run, its scores per test image and subset, best.pt's model,
    the row's facts: cost in inference form at `size`, training time, the commits it trained at)."""
    from prismlab.analysis.flops import count_flops, count_params
    from prismlab.models.fuse import inference_form

    run = RunDir(path)
    model = model_from_checkpoint(run.checkpoint(BEST), run / BEST)
    deployed = inference_form(model)  # what is deployed is what the cost is of
    facts = {
        "params": count_params(deployed),
        "flops": count_flops(deployed, size),
        "train_time_s": sum(r["time_s"] for r in run.metrics()),
        "trained_at": run.commits(),  # the commit(s) the run trained at; a reused run predates the file's
        "checkpoint": str(run / BEST),
        "run": str(run.path),
    }
    return run, test_correct(run), model, facts

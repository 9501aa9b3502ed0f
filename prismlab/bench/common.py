"""What every study shares: its typed arguments, the provenance every results file carries
(command, commit, seed, machine, data), the Markdown frame around its rows, and the run helper."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
import yaml

from prismlab.data.cache import default_cache_dir
from prismlab.engine.config import make_config
from prismlab.engine.distributed import local_device
from prismlab.engine.precision import AVX512_CORE_FLAGS, NATIVE_BF16_FLAGS, RECORDED_FLAGS, cpu_flags
from prismlab.engine.rundir import BEST, LAST, RunDir
from prismlab.engine.train import train
from prismlab.errors import ConfigError, PrismError
from prismlab.files import FolderLock, write_text

REPO = Path(__file__).resolve().parents[2]  # the checkout whose commit the results name
DATA = Path("..") / "shared" / "data" / "mini-imagenet-50"  # beside the checkout one works in


@dataclass
class StudyArgs:
    """What `prismlab bench STUDY` was asked for (cli.py fills it from its flags)."""

    tier: str = "cpu"
    data: Path | None = None  # None: default_data()
    methods: str = "default"  # default, all, or a comma list of the study's rows
    epochs: int | None = None  # another budget than the tier preset's
    steps: int | None = None  # timed batches (task2, speed, infer)
    amp: str = "auto"
    recipe: str = ""  # task2: a prismlab/configs/recipe-<name>.yaml applied to every row; "" for the preset's
    size: int | None = None  # task2: another image size than the tier preset's
    against: Path | None = None  # task2: an earlier results file of the same rows to compare with
    results_dir: Path = Path("benchmarks/results")
    # Under the cache, not the checkout: hours-long runs survive a fresh clone and are resumed there.
    runs_dir: Path = field(default_factory=lambda: default_cache_dir() / "bench-runs")
    seed: int = 0
    argv: list[str] | None = None  # the words after `prismlab`, for the results files

    def data_dir(self) -> Path:
        return Path(self.data) if self.data else default_data()


def default_data() -> Path:
    """$PRISMLAB_DATA, else ../shared/data/mini-imagenet-50 from the working directory (absolute:
    the results and the runs' configs name it)."""
    p = Path(os.environ.get("PRISMLAB_DATA") or DATA).resolve()
    if not p.is_dir():
        raise PrismError(f"{p}: benchmark data not found; pass --data DIR (a course-layout folder) or set PRISMLAB_DATA")
    return p


def preset(name: str) -> dict:
    """A tier preset from prismlab/configs/<name>.yaml."""
    text = resources.files("prismlab").joinpath("configs", f"{name}.yaml").read_text()
    return yaml.safe_load(text)


def study_name(study: str, tier: str, epochs: int | None, preset_epochs: int, amp: str | None = None,
               recipe: str = "", size: int | None = None, preset_size: int | None = None, seed: int = 0) -> str:
    """`task1-cpu`, or `task1-cpu-30ep` when --epochs departs from the preset, `task2-cpu-32px` with
    --size 32, `task2-cpu-bf16` with --amp bf16, `task2-cpu-30ep-strong` with --recipe strong,
    `task1-cpu-seed1` with --seed 1: another size, budget, precision, recipe or training seed is
    another study, with its own runs folder and results file (it must not replace the preset's)."""
    name = f"{study}-{tier}" + (f"-seed{seed}" if seed else "")
    name = name if not size or size == preset_size else f"{name}-{size}px"
    name = name if not epochs or epochs == preset_epochs else f"{name}-{epochs}ep"
    name = name if not amp or amp == "auto" else f"{name}-{amp}"
    return f"{name}-{recipe}" if recipe else name


def recipe(name: str) -> dict:
    """The config keys of prismlab/configs/recipe-<name>.yaml, or a ConfigError naming the known ones."""
    known = sorted(p.name[len("recipe-"):-len(".yaml")] for p in resources.files("prismlab").joinpath("configs").iterdir()
                   if p.name.startswith("recipe-") and p.name.endswith(".yaml"))
    if name not in known:
        raise ConfigError(f"unknown recipe {name!r} (known: {', '.join(known)})")
    return preset(f"recipe-{name}")


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


def study_provenance(args: StudyArgs, **extra) -> dict:
    """A study's results file starts with this: provenance, its tier, and `extra` (data first where it reads any)."""
    return {**provenance(args.seed, args.argv), "tier": args.tier, **extra}


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
    flags = cpu_flags()
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cpu_flags": [f for f in RECORDED_FLAGS if f in flags],  # what bf16 and channels-last speed rests on
            "python": platform.python_version(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def isa(m: dict) -> str:
    """The CPU features a machine record names, in words ('' for a record written without them)."""
    if "cpu_flags" not in m:
        return ""
    f = set(m["cpu_flags"])
    vector = "AVX-512" if set(AVX512_CORE_FLAGS) <= f else "AVX2" if "avx2" in f else "no AVX2"
    return f"; {vector}, {'native' if f & set(NATIVE_BF16_FLAGS) else 'no native'} bf16"


def write_results(results_dir: str | Path, name: str, data: dict, markdown: str) -> Path:
    d = Path(results_dir)
    d.mkdir(parents=True, exist_ok=True)
    write_text(d / f"{name}.json", json.dumps(data, indent=2) + "\n", "results")
    write_text(d / f"{name}.md", markdown, "results")
    return d / f"{name}.json"


def frame(doc: dict, title: str, body: list[str], *, recipe: str = "", seed: bool = True, show_machine: bool = True,
          cores: str = "", gpu: bool = False, machine_note: str = "", data: str | None = None) -> str:
    """A study's Markdown: `# title`, the provenance header, a blank line, then the study's own lines.
    The header is the command; the commit, the seed (unless seed=False) and the study's `recipe`
    (budget, sizes, what was timed);
    the machine (unless show_machine=False): `cores` follows the core count inside the parentheses, the
    GPU comes after them with gpu=True, `machine_note` after the torch version; the data folder
    followed by `data` (None: no data line). Its lines end in Markdown line breaks."""
    m = doc.get("machine", {})
    head = [f"Command: `{doc['command']}`", f"Commit: `{doc['commit']}`" + (f", seed {doc['seed']}" if seed else "") + recipe]
    if show_machine:
        head.append(f"Machine: {m['cpu']} ({m['cores']} cores{cores}{isa(m)}){', ' + m['gpu'] if gpu and m['gpu'] else ''}, "
                    f"torch {m['torch']}{machine_note}")
    if data is not None:
        head.append(f"Data: `{doc['data']}`{data}")
    return "\n".join([f"# {title}", "", *(line + "  " for line in head[:-1]), head[-1], "", *body])


def train_or_reuse(overrides: dict, out: Path) -> Path:
    """Train one run; a finished run with the same config is reused, an unfinished one resumed,
    so a long study killed half-way picks up where it stopped. The run folder is locked throughout:
    two benches never train one run."""
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


def uncommitted_note(rows: dict) -> list[str]:
    """A Markdown line naming the rows that trained, at least in part, at uncommitted code (a `-dirty`
    commit in their `trained_at`): no checkout reproduces exactly what they ran."""
    keys = [k for k, r in rows.items() if any(c.endswith("-dirty") for c in r.get("trained_at", []))]
    return [f"Trained at least in part at uncommitted code (a `-dirty` commit in `trained_at`): {', '.join(keys)}.",
            ""] if keys else []


def training_seconds(run: RunDir) -> float:
    return sum(r["time_s"] for r in run.metrics())


def val_curve(run: RunDir) -> list[float]:
    """Validation accuracy after each epoch, as train() logged it."""
    return [r["val_acc"] for r in run.metrics() if "val_acc" in r]


def test_scores(run: RunDir, subsets: list[str]) -> dict:
    """-> {subset: one 0/1 per test image} for the run's best.pt on its test split, scored as the
    run's own test was (eval-test.json): on the device training picks, in the precision (fp32 where an
    older file names none) and batch size the test used. The accuracy and its bootstrap interval are both read from these."""
    from prismlab.data.cache import build_cache
    from prismlab.data.loader import BatchLoader
    from prismlab.data.splits import load_split
    from prismlab.engine.checkpoint import model_from_checkpoint
    from prismlab.engine.evaluate import correct_per_image

    cfg = run.config()
    model = model_from_checkpoint(run.checkpoint(BEST), run / BEST)
    split = load_split(Path(cfg.data) / cfg.test_split, num_classes=model.spec["num_classes"], skip_bad=cfg.skip_bad)
    data = build_cache(split, cfg.image_size, cfg.cache_dir or None, cfg.skip_bad)
    device = local_device()
    model = model.to(device)
    bf16 = run.test().get("precision") == "bf16"
    return correct_per_image(model, BatchLoader(data, cfg.batch_size, train=False), subsets, device, bf16)

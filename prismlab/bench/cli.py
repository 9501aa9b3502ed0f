"""`prismlab bench STUDY`: one subparser per study, each with only the flags that study reads."""

from __future__ import annotations

import importlib
from dataclasses import fields
from pathlib import Path

from prismlab.bench.common import StudyArgs
from prismlab.cli import positive_int

FLAGS = {  # flag -> its argparse keywords
    "--data": {
        "help": "course-layout data folder (default: $PRISMLAB_DATA, else ../shared/data/mini-imagenet-50 "
        "from the working directory)"
    },
    "--tier": {"choices": ["cpu", "gpu"], "default": "cpu", "help": "the tier preset (prismlab/configs/)"},
    "--methods": {"default": "default", "help": "default, all, or a comma list of the study's rows"},
    "--epochs": {"type": positive_int, "help": "another budget than the tier preset's: its own study, <study>-<N>ep"},
    "--amp": {
        "choices": ["auto", "bf16", "off"],
        "default": "auto",
        "help": "training precision (engine/precision.py); not auto is its own study, task2-<tier>-<amp>",
    },
    "--recipe": {
        "default": "",
        "help": "apply prismlab/configs/recipe-NAME.yaml (e.g. strong: mixup, cutmix, weight "
        "average) to every row; its own study, task2-<tier>-NAME, paired against the plain one",
    },
    "--size": {"type": positive_int, "help": "another image size than the tier's: its own study, task2-<tier>-<N>px"},
    "--against": {
        "type": Path,
        "metavar": "FILE",
        "help": "an earlier results file of the same rows (another "
        "commit's, say): each row's paired accuracy ratio and training speed-up against it",
    },
    "--add": {
        "action": "store_true",
        "default": None,
        "help": "keep the rows of the study's results file that --methods does not name, their training and "
        "test results as written (a file of the same study only); ratios and speeds are this run's",
    },
    "--seed": {"type": int, "default": 0, "help": "training seed; not 0 is its own study, <study>-seedN"},
    "--results-dir": {"type": Path, "default": Path("benchmarks/results")},
    "--runs-dir": {"type": Path, "help": "where the runs live (default: $PRISMLAB_CACHE/bench-runs)"},
}
TRAINS = ["--data", "--tier", "--methods", "--epochs", "--seed", "--results-dir", "--runs-dir"]
INIT_SEED = ("--seed", "seed of the random-init weights timed")
# study -> (what it does, its flags: a name, or (name, what it means in this study), what --steps counts there)
STUDIES = {
    "task1": ("task 1: channel methods on every subset", TRAINS, None),
    "task2": (
        "task 2: shallow nets against ResNet34",
        [*TRAINS, "--amp", "--recipe", "--size", "--against", "--add"],
        "inference batches timed per row (default: about 3 s)",
    ),
    "speed": (
        "training speed against the machine's peak",
        ["--data", "--tier", ("--seed", "seed of the models' weights and of the batches"), "--results-dir"],
        "timed training steps per source (default 24 cpu / 99 gpu)",
    ),
    "infer": (
        "ResNet34, ours and the any-channel model in every CPU runtime (random-init weights)",
        [("--methods", "default (every row), all, or a comma list of rows"), INIT_SEED, "--results-dir"],
        "timed batches of 64 per runtime (default 30)",
    ),
    "frontier": (
        "task 2 as accuracy against cost: the task2 files of each cell, every row timed here",
        ["--tier", INIT_SEED, "--results-dir"],
        "timed batches of 64 per model (default 30)",
    ),
    "demo": (
        "`prismlab demo` from an empty cache, timed: what a first `make demo` takes after the install",
        [
            ("--data", "the demo's --data (default: the built-in synthetic set)"),
            ("--epochs", "the demo's --epochs (default: its own)"),
            "--results-dir",
        ],
        None,
    ),
    "budget": (
        "task 2 across budgets: the task2 files of each budget gathered (every plain task2 study also does)",
        ["--tier", "--results-dir"],
        None,
    ),
    "seeds": (
        "the task1 files of every --seed N read together (means over seeds)",
        ["--tier", ("--epochs", "read the task1 studies of this budget (task1-<tier>[-seedN]-<N>ep)"), "--results-dir"],
        None,
    ),
}


def add_parsers(sub) -> None:
    studies = sub.add_parser("bench", help="run a study and write benchmarks/results/").add_subparsers(
        dest="study", required=True, metavar="STUDY"
    )
    for study, (about, flags, steps) in STUDIES.items():
        s = studies.add_parser(study, help=about, description=about)
        for flag in flags:
            flag, meaning = flag if isinstance(flag, tuple) else (flag, None)
            s.add_argument(flag, **{**FLAGS[flag], **({"help": meaning} if meaning else {})})
        if study == "infer":  # CPU runtimes only
            s.add_argument("--tier", choices=["cpu"], default="cpu")
        if steps:
            s.add_argument("--steps", type=positive_int, help=f"{steps}; the results say so")
        s.set_defaults(fn=cmd_bench)


def cmd_bench(a) -> int:
    given = {f.name: getattr(a, f.name) for f in fields(StudyArgs) if getattr(a, f.name, None) is not None}
    importlib.import_module(f"prismlab.bench.{a.study}").run(StudyArgs(**given))
    return 0

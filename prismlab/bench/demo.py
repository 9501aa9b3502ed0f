"""`prismlab demo`: both studies, quick, on the built-in synthetic set (or a course folder)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import prismlab
from prismlab.bench import task1, task2
from prismlab.bench.common import StudyArgs, preset
from prismlab.bench.results import header, provenance, write_results
from prismlab.data.cache import default_cache_dir
from prismlab.engine.rundir import CURVES
from prismlab.files import write_text

# The demo keeps the two rows that matter: the frontier's rows (the low-resolution ResNets cost many
# times ResNet34 at 64 px) and the report's baselines are the full study's.
TASK2_MODELS = {k: task2.MODELS[k] for k in ("resnet34", "ours")}


def builtin_data(seed: int = 0) -> Path:
    """The synthetic set, made once and kept beside the cache."""
    from prismlab.data.synth import make_synthetic

    root = default_cache_dir() / f"synth-seed{seed}"
    if not (root / "test.txt").exists():
        print(f"[demo] writing the synthetic data set to {root}", flush=True)
        make_synthetic(root, seed=seed)
    return root


def run_demo(
    data: str | Path | None, out: str | Path, epochs: int | None = None, seed: int = 0, argv: list[str] | None = None
) -> Path:
    """Train (or reuse) both studies' runs under out/ and write out/report.md; returns its path.
    argv: the command's words after `prismlab`, for the report (default: sys.argv)."""
    out = Path(out)
    data = Path(data) if data else builtin_data(seed)
    base = preset("demo")
    t1 = task1.run_study(data, "demo", task1.DEFAULT, out / "task1", seed, epochs)
    head = provenance(argv, seed, tier="demo", data=str(data))
    doc1 = {**head, "image_size": base["image_size"], "epochs": epochs or base["epochs"], "methods": t1}
    doc1["targets"] = task1.targets(t1)
    chart = out / "task1-subsets.png"
    from prismlab.analysis.plots import plot_subset_bars

    plot_subset_bars(
        {k: {s: r["accuracy"] for s, r in m["results"].items()} for k, m in t1.items()},
        chart,
        "Task 1 (demo): test accuracy per channel subset",
    )
    # ResNet34's standard stem needs 64px or more (at 32px it leaves a 1x1 map).
    base2 = {**base, "image_size": 64, "epochs": epochs or 4, "test_subsets": "RGB"}
    t2 = task2.run_study(data, base2, TASK2_MODELS, out / "task2", seed, seconds=1.0)  # quick, like the rest
    doc2 = {**head, "image_size": 64, "epochs": base2["epochs"], "models": t2}
    parts = [
        "# prismlab demo report",
        "",
        "A quick run of both studies. The full studies are `prismlab bench task1|task2`; their results are in "
        "`benchmarks/results/`.",
        "",
        task1.markdown(doc1, chart.name).replace("# Task", "## Task", 1),
        task2.markdown(doc2).replace("# Task", "## Task", 1),
        "## Training curves",
        "",
    ]
    for study in ("task1", "task2"):
        for run in sorted((out / study).iterdir()):
            if (run / CURVES).exists():
                parts += [f"{study} / {run.name}:", "", f"![{run.name}]({study}/{run.name}/{CURVES})", ""]
    report = out / "report.md"
    write_text(report, "\n".join(parts), "report")
    return report


def run(args: StudyArgs) -> None:
    """`prismlab bench demo`: `prismlab demo` timed from an empty cache in a fresh process, as the first
    `make demo` runs it once the install is done (the synthetic set written and decoded, every row trained)."""
    with tempfile.TemporaryDirectory() as tmp:
        checkout = str(Path(prismlab.__file__).resolve().parents[1])  # this checkout's code, not another install's
        env = {
            **os.environ,
            "PRISMLAB_CACHE": str(Path(tmp) / "cache"),
            "PYTHONPATH": os.pathsep.join([checkout, *filter(None, [os.environ.get("PYTHONPATH")])]),
        }
        argv = [sys.executable, "-m", "prismlab", "demo", "--out", str(Path(tmp) / "demo")]
        argv += ["--epochs", str(args.epochs)] if args.epochs else []
        argv += ["--data", str(Path(args.data).resolve())] if args.data else []
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
    rows = len(task1.DEFAULT) + len(TASK2_MODELS)
    data = str(Path(args.data).resolve()) if args.data else None
    doc = provenance(args.argv, 0, data=data, epochs=args.epochs, rows=rows, seconds=seconds)
    path = write_results(args.results_dir, "demo", doc, markdown(doc))
    print(path.with_suffix(".md").read_text())


def markdown(doc: dict) -> str:
    budget = f"--epochs {doc['epochs']}" if doc["epochs"] else "the demo's own epochs"
    made = "the data decoded" if doc["data"] else "the built-in synthetic set written and decoded"
    lines = [
        f"`prismlab demo` from an empty cache, {budget}: {made}, {doc['rows']} rows trained and tested, the report "
        f"written, in {doc['seconds'] / 60:.1f} min.",
        "",
    ]
    return "\n".join(header(doc, "The demo's time") + lines)

"""Task 2 study: shallow nets against torchvision's ResNet34, one recipe for every model."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from prismlab.analysis.report import beyond_noise, ci
from prismlab.analysis.stats import accuracy_interval, to_bits
from prismlab.bench import budget
from prismlab.bench.common import StudyArgs, pick, preset, read_run, recipe, study_name, train_or_reuse
from prismlab.bench.results import (
    Col,
    Target,
    header,
    judge,
    notes,
    paired,
    plural,
    provenance,
    read_results,
    table,
    trained,
    trained_on,
    write_results,
)
from prismlab.engine.config import make_config
from prismlab.engine.distributed import local_device
from prismlab.engine.precision import precision_name, use_bf16
from prismlab.engine.preflight import read_splits
from prismlab.errors import ConfigError
from prismlab.models import create_model
from prismlab.models.cards import cards_section

# key in the results -> registered model name
MODELS = {
    "resnet34": "resnet34",
    "ours": "shallow",
    "seed_cool_model": "seed_cool_model",
    "seed_parallel": "seed_parallel",
    # the fair deep references at low resolution, and ours as a family of widths (4 body layers each)
    "resnet34_lowres": "resnet34_lowres",
    "resnet18_lowres": "resnet18_lowres",
    "ours_xs": "shallow_xs",
    "ours_s": "shallow_s",
    "ours_l": "shallow_l",
}
DEFAULT = ["resnet34", "ours", "seed_cool_model", "seed_parallel"]  # --methods default: the original study
REFERENCES = ("resnet34", "resnet34_lowres")  # each row's accuracy is divided by theirs, paired
OURS = ("ours", "ours_xs", "ours_s", "ours_l")
RGB_ONLY = {"channel_sampling": "rgb", "val_subsets": "RGB", "test_subsets": "RGB"}  # task 2 is RGB throughout


def _over_lowres(r: dict) -> float:
    return r["ours"]["accuracy"] / max(r["resnet34_lowres"]["accuracy"], 1e-12)


PAIR, LOWRES = ("ours", "resnet34"), ("ours", "resnet34_lowres")
TARGETS = [
    Target("ours_accuracy>=resnet34", lambda r: r["ours"]["accuracy"] >= r["resnet34"]["accuracy"], PAIR),
    Target("ours_infer_speed>=2x_resnet34", lambda r: r["ours"]["speed_over_resnet34"] >= 2.0, PAIR),
    Target("ours_body_layers<=4", lambda r: r["ours"]["body_layers"] <= 4, PAIR),
    # the assignment's 90% bar against the fair baseline
    Target("ours_accuracy>=90%_resnet34_lowres", lambda r: _over_lowres(r) >= 0.9, LOWRES),
    Target("ours_accuracy>=resnet34_lowres (stretch)", lambda r: _over_lowres(r) >= 1.0, LOWRES),
]


@torch.no_grad()
def inference_img_s(
    model: torch.nn.Module, size: int, batch: int = 64, seconds: float = 3.0, steps: int | None = None
) -> float:
    """Throughput of the inference form (fused, eval) on random input: `prismlab bench infer`'s
    pytorch_fp32 timing, over `steps` batches when given, else over at least `seconds`."""
    from prismlab.deploy.runtimes import throughput
    from prismlab.models.fuse import inference_form

    return throughput(inference_form(model), torch.randn(batch, 3, size, size), batch, steps, seconds)


def summarize(path: Path, size: int) -> tuple[dict, torch.nn.Module]:
    """-> (the row without its speed, its best.pt's model, built once: the timing of every write uses it)."""
    from prismlab.analysis.flops import count_params
    from prismlab.analysis.layers import count_layers

    run, correct, model, facts = read_run(path, size)
    correct, test, lc = correct["RGB"], run.test(), count_layers(model, size)
    return {
        "accuracy": float(correct.mean()),
        "accuracy_ci": accuracy_interval(correct),
        "loss": test["results"]["RGB"]["loss"],
        "precision": test.get("precision", "fp32"),
        "val_acc_per_epoch": [r["val_acc"] for r in run.metrics() if "val_acc" in r],
        "body_layers": lc.body,
        "total_layers": lc.total,
        "params_training_form": count_params(model),
        "test_correct": to_bits(correct),
        **facts,
    }, model  # test_correct: for pairing across results files


def run_study(
    data: Path, base: dict, models: dict, runs_dir: Path, seed: int = 0, on_row=None, kept=None, **timing
) -> dict:
    """Train (or reuse) each model and summarise it, then time every row so far back to back in this
    process (a row trained sessions ago may have trained on another machine, and speeds compare only
    within one run); `on_row(rows)` sees the rows so far after each model, so a long study leaves
    partial results if it is stopped. `kept`: (rows already written, their models), from --add.
    timing: inference_img_s's seconds= or steps=."""
    out, built = (dict(kept[0]), dict(kept[1])) if kept else ({}, {})
    for key, name in models.items():
        run = train_or_reuse({**base, **RGB_ONLY, "data": str(data), "seed": seed, "model": name}, runs_dir / key)
        row, built[key] = summarize(run, base["image_size"])
        out[key] = {"model": name, **row, "epochs": base["epochs"]}
        for k, r in out.items():
            r["infer_img_s"] = inference_img_s(built[k], base["image_size"], **timing)
        for ref in (r for r in REFERENCES if r in out):
            for k, r in out.items():
                ratio = paired(r["test_correct"], out[ref]["test_correct"])
                r[f"accuracy_over_{ref}"] = ratio["ratio"]
                r[f"accuracy_over_{ref}_ci"] = {"low": ratio["low"], "high": ratio["high"]}
                r[f"speed_over_{ref}"] = r["infer_img_s"] / out[ref]["infer_img_s"]
        if on_row:
            on_row(out)
    return out


def _over(ref: str):
    return lambda k, m: ci(m.get(f"accuracy_over_{ref}"), m.get(f"accuracy_over_{ref}_ci"))


ACCURACY = [  # the first columns of the frontier's tables too
    Col("key", lambda k, m: k),
    Col("model", "model"),
    Col("test acc % (95% CI)", lambda k, m: ci(m["accuracy"], m.get("accuracy_ci"))),
    Col("acc / ResNet34 % (paired 95% CI)", _over("resnet34")),
    Col("acc / ResNet34 low-res stem % (paired 95% CI)", _over("resnet34_lowres")),
    Col("body layers", "body_layers"),
]
COLS = [
    *ACCURACY,
    Col("total layers", "total_layers"),
    Col("params", "params", "{:,}"),
    Col("FLOPs", lambda k, m: f"{m['flops'] / 1e6:.1f}M"),
    Col("CPU infer img/s (batch 64)", "infer_img_s", "{:.0f}"),
    Col("speed / ResNet34", "speed_over_resnet34", "{:.2f}x"),
    Col("precision", lambda k, m: m.get("precision", "fp32")),
    Col("train min", lambda k, m: f"{m['train_time_s'] / 60:.1f}"),
]


def _paired_line(a: dict, which: str) -> str:
    """This study's rows against another results file's (a parity or --against record)."""
    ratios = "; ".join(f"{k} {ci(v['ratio'], v)}%" for k, v in a["ratios"].items())
    within = "yes" if a["every_row_within_noise"] else "NO"
    return (
        f"Against `{a['reference']}` ({which}), accuracy ratio (paired 95% CI): {ratios}. "
        f"Every row within noise: {within}."
    )


def markdown(doc: dict) -> str:
    ms, n = doc["models"], doc["epochs"]
    lowres = any("accuracy_over_resnet34_lowres" in m for m in ms.values())
    lines = [
        table([c for c in COLS if lowres or "low-res" not in c.head], ms.items()),
        "",
        "Inference speeds: every row timed back to back when this file was written, on the machine named "
        "above (a row's training may have run in another session).",
        "",
    ]
    kept: dict[tuple, list] = {}
    for k, m in ms.items():
        if f := m.get("kept_from"):
            kept.setdefault((f["commit"][:12], trained_on(f["machine"])), []).append(k)
    for (commit, machine), keys in kept.items():
        lines += [
            f"Kept from this study's file at commit `{commit}` (`--add`{machine}), its training and test "
            f"results as written, ratios and speeds from this run: {', '.join(keys)}.",
            "",
        ]
    lines += notes(doc, ms)
    if p := doc.get("parity"):
        lines += [_paired_line(p, f"same rows; this study: {p['differs']}"), ""]
    if a := doc.get("against"):
        speedup = (
            "(its training time over this one's, same kind of machine): "
            + ", ".join(f"{k} {v:.2f}x" for k, v in a["train_speedup"].items())
            if a["same_machine_kind"]
            else "not compared: it ran on another kind of machine"
        )
        lines += [_paired_line(a, f"commit `{(a['commit'] or '?')[:12]}`") + f" Training speed-up {speedup}.", ""]
    if (ours := ms.get("ours", {})).get("accuracy_over_resnet34_ci"):
        lines += [
            f"Ours against ResNet34 on the same test images: "
            f"{beyond_noise(ours['accuracy_over_resnet34_ci'])} (paired bootstrap, 95%).",
            "",
        ]
    lines += cards_section([MODELS[k] for k in ms if k in MODELS], doc["image_size"])
    rec, more, amp = doc.get("recipe"), bool(doc.get("epochs_overridden")), doc.get("amp", "auto")
    # The title names what sets this study apart, so studies side by side in the README read apart.
    title = [f"{doc['tier']} tier"] + [f"{doc['image_size']} px"] * bool(doc.get("size_overridden"))
    title += [plural(n, "epoch")] * more + [f"amp {amp}"] * (amp != "auto")
    title += [f"recipe {rec['name']}"] if rec else []
    setup = trained(doc) + ", one recipe for all rows"
    setup += f" + recipe {rec['name']} ({', '.join(f'{k}={v}' for k, v in rec['keys'].items())})" if rec else ""
    steps = f"; inference timed over {doc['infer_steps']} batches (--steps)" if doc.get("infer_steps") else ""
    title = f"Task 2: shallow networks vs ResNet34 ({', '.join(title)})"
    return "\n".join(header(doc, title, setup, data_note=f" (test split){steps}") + lines)


def parity(rows: dict, reference: dict, ref_name: str, differs: str) -> dict:
    """Each row against the same row of the plain study, which this one `differs` from (precision,
    recipe): the paired accuracy ratio. Parity holds where every interval contains 1."""
    theirs = {k: r.get("test_correct") for k, r in reference["models"].items()}
    out = {k: paired(r["test_correct"], theirs[k]) for k, r in rows.items() if r.get("test_correct") and theirs.get(k)}
    within = [v["low"] <= 1 <= v["high"] for v in out.values() if v["low"] is not None]
    return {
        "reference": ref_name,
        "differs": differs,
        "ratios": out,
        "every_row_within_noise": bool(within) and all(within),
    }


def against(rows: dict, reference: dict, ref_name: str, machine: dict) -> dict:
    """This study beside an earlier results file of the same rows (another commit's, say): each row's
    paired accuracy ratio, and its training speed-up (the reference's training time over this one's),
    which compares only where both ran on the same kind of machine."""
    same = all(reference.get("machine", {}).get(k) == machine.get(k) for k in ("platform", "cpu", "cores", "torch"))
    acc = parity(rows, reference, ref_name, "")
    theirs = reference["models"]
    speedup = {
        k: theirs[k]["train_time_s"] / r["train_time_s"]
        for k, r in rows.items()
        if k in theirs and r.get("train_time_s") and "kept_from" not in r  # a kept row did not train here
    }
    return {
        "reference": ref_name,
        "commit": reference.get("commit"),
        "same_machine_kind": same,
        **{k: acc[k] for k in ("ratios", "every_row_within_noise")},
        "train_speedup": speedup,
    }


SAME_STUDY = ("tier", "data", "image_size", "epochs", "amp", "recipe", "seed")
OLDER_FILES = {"recipe": None}  # what a key an older results file lacks meant
KEPT_NEEDS = ("model", "accuracy", "test_correct", "params", "train_time_s")
THIS_RUNS = ("infer_img_s", "accuracy_over_", "speed_over_")  # a kept row's figures that each write computes


def kept_rows(results_dir: Path, name: str, study: dict, models: dict, base: dict) -> tuple[dict, dict, list]:
    """--add: the rows of the study's results file that this run does not train, as written, each
    stamped with the commit and machine of the file it was first kept from; their models (freshly
    built, to be timed); and the rows the file names, in its order (its pending ones last). All is checked before
    any row trains: the file must be of the same study and precision, and each row's model must
    still be what it measured (its deployed params), or the rows would not share one recipe."""
    from prismlab.analysis.flops import count_params
    from prismlab.models.fuse import inference_form

    path = Path(results_dir) / f"{name}.json"
    old = read_results(results_dir, name, needs=("models", "commit", "machine"))
    if old is None:
        raise ConfigError(f"{path}: no results file to add rows to (--add)")
    for k in SAME_STUDY:
        if (was := old.get(k, OLDER_FILES.get(k))) != study[k]:
            raise ConfigError(f"{path}: its study has {k}={was!r}, this one {study[k]!r} (--add keeps one study)")
    cfg = make_config(None, {**base, **RGB_ONLY, "data": study["data"]})  # what each row's run is given
    train, _, test = read_splits(cfg)
    precision = precision_name(use_bf16(cfg.amp, local_device()))
    if not isinstance(old["models"], dict):
        raise ConfigError(f"{path}: not a task2 results file (its models are not a table)")
    rows, built = {}, {}
    for k, r in old["models"].items():
        if k in models:
            continue
        if not isinstance(r, dict) or MODELS.get(k) != r.get("model") or any(n not in r for n in KEPT_NEEDS):
            raise ConfigError(f"{path}: row {k!r} is not a task2 row with {', '.join(KEPT_NEEDS)} (--add)")
        if len(r["test_correct"]) != len(test):
            raise ConfigError(f"{path}: row {k!r} was scored on {len(r['test_correct'])} test images, not {len(test)}")
        if (was := r.get("precision", "fp32")) != precision:
            raise ConfigError(f"{path}: row {k!r} trained in {was}, this run in {precision}")
        built[k] = create_model(r["model"], num_classes=train.num_classes)
        if (params := count_params(inference_form(built[k]))) != r["params"]:
            raise ConfigError(f"{path}: row {k!r}'s model has {params:,} params now, {r['params']:,} when it trained")
        mine = {n: v for n, v in r.items() if not n.startswith(THIS_RUNS)}  # ratios to a row not yet trained: none
        rows[k] = {**mine, "kept_from": r.get("kept_from") or {"commit": old["commit"], "machine": old["machine"]}}
    return rows, built, [*old["models"], *old.get("pending", [])]


def read_against(path: Path) -> dict:
    """--against: read before any row trains, so a bad file fails now."""
    try:
        doc = json.loads(Path(path).read_text())
        doc["models"].items()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise ConfigError(f"{path}: not a task2 results file (--against)") from None
    return doc


def run(args: StudyArgs) -> None:
    data, base = args.data_dir(), preset(f"task2-{args.tier}")
    models = {k: MODELS[k] for k in pick(args.methods, MODELS, DEFAULT, "task2")}
    parts = {"size": args.size, "preset_size": base["image_size"], "seed": args.seed}
    name = study_name("task2", args.tier, args.epochs, base["epochs"], args.amp, args.recipe, **parts)
    plain = study_name("task2", args.tier, args.epochs, base["epochs"], **parts)
    recipe_keys = recipe(args.recipe) if args.recipe else {}
    earlier = read_against(args.against) if args.against else None
    preset_epochs, preset_size = base["epochs"], base["image_size"]
    amp = {"amp": args.amp} if args.amp != "auto" else {}
    # every row alike
    base.update({"epochs": args.epochs or preset_epochs, "image_size": args.size or preset_size, **amp, **recipe_keys})
    differs = ", ".join([f"amp={args.amp}"] * (args.amp != "auto") + [f"recipe {args.recipe}"] * bool(args.recipe))

    study = {"tier": args.tier, "data": str(data), "image_size": base["image_size"], "epochs": base["epochs"]}
    study |= {
        "epochs_overridden": base["epochs"] != preset_epochs,
        "size_overridden": base["image_size"] != preset_size,
    }
    rec = {"name": args.recipe, "keys": recipe_keys} if args.recipe else None
    study |= {"amp": args.amp, "infer_steps": args.steps, "recipe": rec}
    kept, named = None, []
    if args.add:
        *kept, named = kept_rows(args.results_dir, name, {**study, "seed": args.seed}, models, base)
    order = list(dict.fromkeys([*named, *models]))  # a row trained again keeps its place

    def write(ms: dict) -> Path:
        ms = {k: ms[k] for k in order if k in ms}
        pending = [k for k in order if k not in ms]
        doc = provenance(args.argv, args.seed, **study, models=ms, pending=pending, targets=judge(TARGETS, ms))
        if differs and (reference := read_results(args.results_dir, plain)):
            doc["parity"] = parity(ms, reference, f"{plain}.json", differs)
        if earlier is not None:
            doc["against"] = against(ms, earlier, str(args.against), doc["machine"])
        return write_results(args.results_dir, name, doc, markdown(doc))

    timing = {"steps": args.steps} if args.steps else {}
    ms = run_study(data, base, models, Path(args.runs_dir) / name, args.seed, on_row=write, kept=kept, **timing)
    print(write(ms).with_suffix(".md").read_text())
    if name in budget.sources(args.tier) and (table := budget.write_budget(args.results_dir, args.tier, args.argv)):
        print(table.with_suffix(".md").read_text())

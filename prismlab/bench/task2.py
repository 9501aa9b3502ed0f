"""Task 2 study: shallow nets against torchvision's ResNet34, one recipe for every model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from prismlab.analysis.report import beyond_noise, ci, md_table
from prismlab.analysis.stats import accuracy_interval, from_bits, paired_ratio, to_bits
from prismlab.bench.budget import write_budget
from prismlab.bench.common import (StudyArgs, frame, pick, preset, recipe, study_name, study_provenance,
                                   test_scores, train_or_reuse, training_seconds, uncommitted_note, val_curve,
                                   write_results)
from prismlab.engine.checkpoint import model_from_checkpoint
from prismlab.errors import ConfigError
from prismlab.engine.rundir import BEST, RunDir
from prismlab.models.cards import cards_section

# key in the results -> registered model name
MODELS = {"resnet34": "resnet34", "ours": "shallow", "seed_cool_model": "seed_cool_model",
          "seed_parallel": "seed_parallel",
          # the fair deep references at low resolution, and ours as a family of widths (4 body layers each)
          "resnet34_lowres": "resnet34_lowres", "resnet18_lowres": "resnet18_lowres",
          "ours_xs": "shallow_xs", "ours_s": "shallow_s", "ours_l": "shallow_l"}
DEFAULT = ["resnet34", "ours", "seed_cool_model", "seed_parallel"]  # --methods default: the original study
REFERENCES = ("resnet34", "resnet34_lowres")  # each row's accuracy is divided by theirs, paired
OURS = ("ours", "ours_xs", "ours_s", "ours_l")


@torch.no_grad()
def inference_img_s(model: torch.nn.Module, size: int, batch: int = 64, seconds: float = 3.0,
                    steps: int | None = None) -> float:
    """Throughput of the inference form (fused, eval) on random input: `prismlab bench infer`'s
    pytorch_fp32 timing, over `steps` batches when given, else over at least `seconds`."""
    from prismlab.deploy.runtimes import throughput
    from prismlab.models.fuse import inference_form

    return throughput(inference_form(model), torch.randn(batch, 3, size, size), batch, steps, seconds)


def summarize(path: Path, size: int) -> tuple[dict, np.ndarray]:
    """-> (the row without its speed, one 0/1 per test image)."""
    from prismlab.analysis.flops import count_flops, count_params
    from prismlab.analysis.layers import count_layers
    from prismlab.models.fuse import inference_form

    run = RunDir(path)
    test = run.test()
    res = test["results"]["RGB"]
    correct = test_scores(run, ["RGB"])["RGB"]
    model = model_from_checkpoint(run.checkpoint(BEST), run / BEST)
    lc = count_layers(model, size)
    fused = inference_form(model)  # what is deployed: params and FLOPs after fusion
    return {"accuracy": float(correct.mean()), "accuracy_ci": accuracy_interval(correct), "loss": res["loss"],
            "precision": test.get("precision", "fp32"), "val_acc_per_epoch": val_curve(run),
            "body_layers": lc.body, "total_layers": lc.total,
            "params": count_params(fused), "params_training_form": count_params(model),
            "flops": count_flops(fused, size),
            "train_time_s": training_seconds(run),
            "test_correct": to_bits(correct),  # for pairing across results files
            "trained_at": run.commits(),  # the commit(s) the run trained at; a reused run predates the file's
            "checkpoint": str(run / BEST), "run": str(run.path)}, correct


def time_together(rows: dict, size: int, **timing) -> None:
    """Sets every row's infer_img_s, timed back to back in this process: a row trained sessions ago
    may have trained on another machine, and speeds compare only within one run.
    timing: inference_img_s's seconds= or steps=."""
    for r in rows.values():
        model = model_from_checkpoint(RunDir(r["run"]).checkpoint(BEST), r["checkpoint"])
        r["infer_img_s"] = inference_img_s(model, size, **timing)


def run_study(data: Path, base: dict, models: dict, runs_dir: Path, seed: int = 0, on_row=None, **timing) -> dict:
    """Train (or reuse) each model and summarise it, then time every row so far together;
    `on_row(rows)` sees the rows so far after each model, so a long study leaves partial results
    if it is stopped."""
    out, scores = {}, {}
    for key, name in models.items():
        run = train_or_reuse({**base, "data": str(data), "seed": seed, "model": name, "channel_sampling": "rgb",
                              "val_subsets": "RGB", "test_subsets": "RGB"}, runs_dir / key)
        row, scores[key] = summarize(run, base["image_size"])
        out[key] = {"model": name, **row, "epochs": base["epochs"]}
        time_together(out, base["image_size"], **timing)
        for name_ in REFERENCES:
            if name_ not in out:
                continue
            for k, r in out.items():
                # The ratio and its paired interval: both models scored on the same resampled images.
                ratio = paired_ratio(scores[k], scores[name_])
                r[f"accuracy_over_{name_}"] = ratio["ratio"]
                r[f"accuracy_over_{name_}_ci"] = {"low": ratio["low"], "high": ratio["high"]}
                r[f"speed_over_{name_}"] = r["infer_img_s"] / out[name_]["infer_img_s"]
        if on_row:
            on_row(out)
    return out


def markdown(doc: dict) -> str:
    lowres = any("accuracy_over_resnet34_lowres" in m for m in doc["models"].values())
    rows = [[k, m["model"], ci(m["accuracy"], m.get("accuracy_ci")),
             ci(m.get("accuracy_over_resnet34"), m.get("accuracy_over_resnet34_ci")),
             *([ci(m.get("accuracy_over_resnet34_lowres"), m.get("accuracy_over_resnet34_lowres_ci"))] if lowres else []),
             m["body_layers"], m["total_layers"], f"{m['params']:,}", f"{m['flops'] / 1e6:.1f}M",
             f"{m['infer_img_s']:.0f}", f"{m['speed_over_resnet34']:.2f}x" if "speed_over_resnet34" in m else "—",
             m.get("precision", "fp32"),
             f"{m['train_time_s'] / 60:.1f}"]
            for k, m in doc["models"].items()]
    lines = [md_table(["key", "model", "test acc % (95% CI)", "acc / ResNet34 % (paired 95% CI)",
                       *(["acc / ResNet34 low-res stem % (paired 95% CI)"] if lowres else []), "body layers",
                       "total layers", "params", "FLOPs", "CPU infer img/s (batch 64)", "speed / ResNet34",
                       "precision", "train min"], rows), ""]
    lines += ["Inference speeds: every row timed back to back when this file was written, on the machine named "
              "above (a row's training may have run in another session).", ""]
    lines += uncommitted_note(doc["models"])
    if doc.get("pending"):
        lines += [f"Partial results: still to run: {', '.join(doc['pending'])}.", ""]
    if doc.get("targets"):
        lines += ["Targets: " + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in doc["targets"].items()), ""]
    if doc.get("parity"):
        p = doc["parity"]
        lines += [f"Against `{p['reference']}` (same rows; this study: {p['differs']}), accuracy ratio (paired 95% CI): "
                  + "; ".join(f"{k} {ci(v['ratio'], v)}%" for k, v in p["ratios"].items())
                  + f". Every row within noise: {'yes' if p['every_row_within_noise'] else 'NO'}.", ""]
    if doc.get("against"):
        a = doc["against"]
        lines += [f"Against `{a['reference']}` (commit `{(a['commit'] or '?')[:12]}`), accuracy ratio (paired 95% CI): "
                  + "; ".join(f"{k} {ci(v['ratio'], v)}%" for k, v in a["ratios"].items())
                  + f". Every row within noise: {'yes' if a['every_row_within_noise'] else 'NO'}. Training speed-up "
                  + ("(its training time over this one's, same kind of machine): "
                     + ", ".join(f"{k} {v:.2f}x" for k, v in a["train_speedup"].items())
                     if a["same_machine_kind"] else "not compared: it ran on another kind of machine") + ".", ""]
    ours = doc["models"].get("ours", {})
    if ours.get("accuracy_over_resnet34_ci"):
        lines += [f"Ours against ResNet34 on the same test images: "
                  f"{beyond_noise(ours['accuracy_over_resnet34_ci'])} (paired bootstrap, 95%).", ""]
    lines += cards_section([MODELS[k] for k in doc["models"] if k in MODELS], doc["image_size"])
    overridden = " (--epochs: not the tier preset)" if doc.get("epochs_overridden") else ""
    rec = doc.get("recipe")
    rec = f" + recipe {rec['name']} ({', '.join(f'{k}={v}' for k, v in rec['keys'].items())})" if rec else ""
    steps = f"; inference timed over {doc['infer_steps']} batches (--steps)" if doc.get("infer_steps") else ""
    # The title names what sets this study apart, so studies side by side in the README read apart.
    n = doc["epochs"]
    title = [f"{doc['tier']} tier"]
    title += [f"{doc['image_size']} px"] if doc.get("size_overridden") else []
    title += [f"{n} epoch{'s' * (n != 1)}"] if doc.get("epochs_overridden") else []
    title += [f"amp {doc['amp']}"] if doc.get("amp", "auto") != "auto" else []
    title += [f"recipe {doc['recipe']['name']}"] if doc.get("recipe") else []
    return frame(doc, f"Task 2: shallow networks vs ResNet34 ({', '.join(title)})", lines,
                 recipe=f", {n} epochs{overridden} at {doc['image_size']}x{doc['image_size']}, "
                 f"one recipe for all rows{rec}", cores=f", {doc['machine']['torch_threads']} torch threads",
                 data=f" (test split){steps}")


def parity(rows: dict, reference: dict, ref_name: str, differs: str) -> dict:
    """Each row against the same row of the plain study (amp=auto, the preset's recipe), which this
    one `differs` from: accuracy ratio with a paired interval over the test images. Parity holds
    where every interval contains 1."""
    out = {}
    for k, r in rows.items():
        ref = reference["models"].get(k, {})
        if r.get("test_correct") and ref.get("test_correct"):
            out[k] = paired_ratio(from_bits(r["test_correct"]), from_bits(ref["test_correct"]))
    within = [v["low"] <= 1 <= v["high"] for v in out.values() if v["low"] is not None]
    return {"reference": ref_name, "differs": differs, "ratios": out,
            "every_row_within_noise": bool(within) and all(within)}


def against(rows: dict, reference: dict, ref_name: str, machine: dict) -> dict:
    """This study beside an earlier results file of the same rows (another commit's code, say): each
    row's accuracy ratio with its paired interval, and its training speed-up (the reference's
    training time over this one's), which compares only where both ran on the same kind of machine."""
    same = all(reference.get("machine", {}).get(k) == machine.get(k) for k in ("platform", "cpu", "cores", "torch"))
    acc = parity(rows, reference, ref_name, "")
    speedup = {k: reference["models"][k]["train_time_s"] / r["train_time_s"] for k, r in rows.items()
               if k in reference.get("models", {}) and r.get("train_time_s")}
    return {"reference": ref_name, "commit": reference.get("commit"), "same_machine_kind": same,
            "ratios": acc["ratios"], "every_row_within_noise": acc["every_row_within_noise"], "train_speedup": speedup}


def run(args: StudyArgs) -> None:
    data = args.data_dir()
    base = preset(f"task2-{args.tier}")
    models = {k: MODELS[k] for k in pick(args.methods, MODELS, DEFAULT, "task2")}
    amp = args.amp
    sizes = {"size": args.size, "preset_size": base["image_size"], "seed": args.seed}
    name = study_name("task2", args.tier, args.epochs, base["epochs"], amp, args.recipe, **sizes)
    reference = Path(args.results_dir) / f"{study_name('task2', args.tier, args.epochs, base['epochs'], **sizes)}.json"
    preset_epochs, preset_size = base["epochs"], base["image_size"]
    if args.epochs:
        base["epochs"] = args.epochs
    if args.size:
        base["image_size"] = args.size
    if amp != "auto":
        base["amp"] = amp
    recipe_keys = recipe(args.recipe) if args.recipe else {}
    base.update(recipe_keys)  # every row alike
    differs = ", ".join([f"amp={amp}"] * (amp != "auto") + [f"recipe {args.recipe}"] * bool(args.recipe))
    timing = {"steps": args.steps} if args.steps else {}
    earlier = None
    if args.against:  # read before any row trains: a bad file fails now
        try:
            earlier = json.loads(Path(args.against).read_text())
            earlier["models"].items()
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise ConfigError(f"{args.against}: not a task2 results file (--against)") from None

    def write(ms: dict) -> Path:
        doc = study_provenance(args, data=str(data), image_size=base["image_size"], epochs=base["epochs"],
                               epochs_overridden=base["epochs"] != preset_epochs,
                               size_overridden=base["image_size"] != preset_size, amp=amp, infer_steps=args.steps,
                               recipe={"name": args.recipe, "keys": recipe_keys} if args.recipe else None,
                               models=ms, pending=[k for k in models if k not in ms])
        if "ours" in ms and "resnet34" in ms:
            doc["targets"] = {"ours_accuracy>=resnet34": ms["ours"]["accuracy"] >= ms["resnet34"]["accuracy"],
                              "ours_infer_speed>=2x_resnet34": ms["ours"]["speed_over_resnet34"] >= 2.0,
                              "ours_body_layers<=4": ms["ours"]["body_layers"] <= 4}
        if "ours" in ms and "resnet34_lowres" in ms:  # the assignment's 90% bar against the fair baseline
            ratio = ms["ours"]["accuracy"] / max(ms["resnet34_lowres"]["accuracy"], 1e-12)
            doc.setdefault("targets", {}).update({"ours_accuracy>=90%_resnet34_lowres": ratio >= 0.9,
                                                  "ours_accuracy>=resnet34_lowres (stretch)": ratio >= 1.0})
        if differs and reference.exists():
            doc["parity"] = parity(ms, json.loads(reference.read_text()), reference.name, differs)
        if earlier is not None:
            doc["against"] = against(ms, earlier, str(args.against), doc["machine"])
        return write_results(args.results_dir, name, doc, markdown(doc))

    ms = run_study(data, base, models, Path(args.runs_dir) / name, args.seed, on_row=write, **timing)
    print(Path(write(ms)).with_suffix(".md").read_text())
    # A bf16 study may stand for its budget (budget_files says when); another recipe never does.
    budget = None if args.recipe else write_budget(args.results_dir, args.tier, args.seed, args.argv)
    if budget:
        print(budget.with_suffix(".md").read_text())

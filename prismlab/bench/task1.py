"""Task 1 study: one trunk and recipe, several channel methods, every model on all 8 subsets."""

from __future__ import annotations

import json
from pathlib import Path

from prismlab.analysis.report import md_table, pct
from prismlab.analysis.plots import plot_subset_bars
from prismlab.bench.common import (default_data, pick, preset, provenance, run_commits, study_name,
                                   train_or_reuse, write_results)
from prismlab.data.channels import ALL_SUBSETS
from prismlab.engine.checkpoint import load_checkpoint, model_from_checkpoint

# method -> (adapter, channel sampling). DIY: one zero-filled naive model per subset (its specialist).
METHODS = {
    "naive": ("naive", "rgb"),
    "pool_channel_attention": ("pool_channel_attention", "hcs"),
    "ours": ("channelset", "hcs"),
    "sigmoid": ("sigmoid", "hcs"),
    **{f"diy_{s}": ("naive", f"fixed:{s}") for s in ALL_SUBSETS if s != "RGB"},
}
DEFAULT = ["naive", "pool_channel_attention", "ours"]


def pick_methods(spec: str) -> list[str]:
    return pick(spec, METHODS, DEFAULT, "task1")


def summarize(name: str, run: Path, size: int) -> dict:
    from prismlab.analysis.flops import count_flops, count_params

    res = json.loads((run / "eval-test.json").read_text())["results"]
    model = model_from_checkpoint(load_checkpoint(run / "best.pt"))
    acc = {s: res[s]["accuracy"] for s in res}
    singles = [acc[s] for s in ("R", "G", "B") if s in acc]
    return {
        "results": {s: {"accuracy": r["accuracy"], "loss": r["loss"]} for s, r in res.items()},
        "mean": sum(acc.values()) / len(acc),
        "worst_single_over_rgb": (min(singles) / acc["RGB"]) if singles and acc.get("RGB") else None,
        "params": count_params(model),
        "flops": count_flops(model, size),
        "checkpoint": str(run / "best.pt"),
        "run": str(run),
        "trained_at": run_commits(run),  # the commit(s) the run trained at; a reused run predates the file's
    }


def run_study(data: Path, tier: str, methods: list[str], runs_dir: Path, seed: int = 0,
              epochs: int | None = None) -> dict:
    """Train (or reuse) each method's run and summarise; returns the 'methods' mapping."""
    base = preset(f"task1-{tier}" if tier != "demo" else "demo")
    if epochs:
        base["epochs"] = epochs
    out = {}
    for m in methods:
        adapter, sampling = METHODS[m]
        over = {**base, "data": str(data), "seed": seed, "model_kw": {"adapter": adapter},
                "channel_sampling": sampling, "val_subsets": "RGB" if sampling == "rgb" else "all"}
        if sampling.startswith("fixed:"):
            over["val_subsets"] = sampling[6:]
        run = train_or_reuse(over, runs_dir / m)
        out[m] = summarize(m, run, base["image_size"])
        out[m]["epochs"] = base["epochs"]
    naive = out.get("naive")
    if naive:
        for m in out.values():
            m["flops_overhead"] = m["flops"] / naive["flops"] - 1
            m["params_overhead"] = m["params"] / naive["params"] - 1
    return out


def targets(methods: dict) -> dict | None:
    if "ours" not in methods or "naive" not in methods:
        return None
    o, n = methods["ours"], methods["naive"]
    return {
        "worst_single_over_rgb>=0.95": o["worst_single_over_rgb"] >= 0.95,
        "ours_rgb>=naive_rgb": o["results"]["RGB"]["accuracy"] >= n["results"]["RGB"]["accuracy"],
        "flops_overhead<=0.10": o["flops_overhead"] <= 0.10,
        "params_overhead<=0.05": o["params_overhead"] <= 0.05,
    }


def specialists(methods: dict) -> dict | None:
    """DIY as the report meant it: one model per subset, each scored on its own subset (naive is the
    RGB one). Its cost is every specialist's parameters together."""
    own = {s: (f"diy_{s}" if f"diy_{s}" in methods else "naive") for s in ALL_SUBSETS
           if f"diy_{s}" in methods or (s == "RGB" and "naive" in methods)}
    if not any(name.startswith("diy_") for name in own.values()):
        return None
    acc = {s: methods[name]["results"][s]["accuracy"] for s, name in own.items()}
    return {"results": {s: {"accuracy": a} for s, a in acc.items()}, "models": own,
            "mean": sum(acc.values()) / len(acc) if len(acc) == len(ALL_SUBSETS) else None,
            "params_total": sum(methods[name]["params"] for name in own.values())}


def specialist_reference(methods: dict) -> dict | None:
    """The two accuracy targets side by side with the DIY specialists: min(diy_R, diy_G, diy_B on
    their own channel) / naive RGB is the worst-single ratio of a model exactly as good as naive on
    RGB and as the specialists on single channels. A reference, not a proof: a shared model can beat
    a specialist, but by as much as the gap to 95% is then what the targets ask."""
    experts = {c: methods[f"diy_{c}"]["results"][c]["accuracy"] for c in ("R", "G", "B") if f"diy_{c}" in methods}
    if not experts or "naive" not in methods:
        return None
    worst = min(experts, key=experts.get)
    return {"experts": sorted(experts), "worst": worst,
            "ratio": experts[worst] / methods["naive"]["results"]["RGB"]["accuracy"]}


def markdown(doc: dict, chart: str | None) -> str:
    ms = doc["methods"]
    subsets = list(ALL_SUBSETS)
    rows = []
    for name, m in ms.items():
        acc = {s: m["results"][s]["accuracy"] for s in subsets if s in m["results"]}
        rows.append([name, *(pct(acc.get(s)) for s in subsets), pct(m["mean"]),
                     "—" if m["worst_single_over_rgb"] is None else f"{100 * m['worst_single_over_rgb']:.1f}",
                     f"{m['params']:,}", f"{m['flops'] / 1e6:.2f}M",
                     f"{100 * m.get('flops_overhead', 0):+.1f}% / {100 * m.get('params_overhead', 0):+.1f}%"])
    sp = doc.get("specialists")
    if sp:
        acc = {s: r["accuracy"] for s, r in sp["results"].items()}
        rows.append([f"DIY: {len(acc)} specialists, each on its own subset", *(pct(acc.get(s)) for s in subsets),
                     pct(sp["mean"]), "—", f"{sp['params_total']:,} in all", "—", "—"])
    n = doc["epochs"]
    budget = f", {n} epoch{'s' * (n != 1)}" if doc.get("epochs_overridden") else ""
    lines = [f"# Task 1: any-channel convolution ({doc['tier']} tier{budget})", "",
             f"Command: `{doc['command']}`  ", f"Commit: `{doc['commit']}`, seed {doc['seed']}, "
             f"{doc['epochs']} epochs{' (--epochs: not the tier preset)' if doc.get('epochs_overridden') else ''} "
             f"at {doc['image_size']}x{doc['image_size']}  ",
             f"Machine: {doc['machine']['cpu']} ({doc['machine']['cores']} cores), torch {doc['machine']['torch']}  ",
             f"Data: `{doc['data']}` (test split, accuracy %)", "",
             md_table(["method", *subsets, "mean", "worst R/G/B ÷ RGB (%)", "params", "FLOPs", "FLOPs / params vs naive"], rows),
             ""]
    if doc.get("targets"):
        lines += ["Targets (ours, one set of weights): " + ", ".join(
            f"{k}: {'met' if v else 'NOT met'}" for k, v in doc["targets"].items()), ""]
    b = doc.get("specialist_reference")
    if b:
        lines += [f"Specialist reference: diy_{b['worst']} on {b['worst']} ÷ naive on RGB = {100 * b['ratio']:.1f}% "
                  f"(specialists run: {', '.join(b['experts'])}): the worst-single ratio of a model exactly as "
                  "good as naive on RGB and as the specialists on single channels.", ""]
    if chart:
        lines += [f"![per-subset accuracy]({chart})", ""]
    return "\n".join(lines)


def run(args) -> None:
    data = Path(args.data) if args.data else default_data()
    methods = pick_methods(args.methods)
    base = preset(f"task1-{args.tier}")
    name = study_name("task1", args.tier, args.epochs, base["epochs"])
    ms = run_study(data, args.tier, methods, Path(args.runs_dir) / name, args.seed, args.epochs)
    doc = {**provenance(args.seed, args.argv), "tier": args.tier, "data": str(data), "image_size": base["image_size"],
           "epochs": args.epochs or base["epochs"], "epochs_overridden": name != f"task1-{args.tier}", "methods": ms}
    doc["targets"] = targets(ms)
    doc["specialist_reference"] = specialist_reference(ms)
    doc["specialists"] = specialists(ms)
    chart = Path(args.results_dir) / f"{name}-subsets.png"
    chart.parent.mkdir(parents=True, exist_ok=True)
    # One bar per method and subset; the DIY models appear once, as the specialist on each subset.
    bars = {k: m["results"] for k, m in ms.items() if not k.startswith("diy_")}
    if doc["specialists"]:
        bars["DIY specialist (own subset)"] = doc["specialists"]["results"]
    plot_subset_bars({k: {s: r["accuracy"] for s, r in res.items()} for k, res in bars.items()}, chart,
                     "Task 1: test accuracy per channel subset")
    path = write_results(args.results_dir, name, doc, markdown(doc, chart.name))
    print(Path(path).with_suffix(".md").read_text())

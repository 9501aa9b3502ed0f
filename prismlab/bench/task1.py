"""Task 1 study: one trunk and recipe, several channel methods, every model on all 8 subsets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prismlab.analysis.report import ci, md_table, pct
from prismlab.analysis.plots import plot_subset_bars
from prismlab.analysis.stats import accuracy_interval, from_bits, paired_difference, to_bits
from prismlab.bench.common import (StudyArgs, frame, pick, preset, study_name, study_provenance,
                                   test_scores, train_or_reuse, training_seconds, uncommitted_note,
                                   write_results)
from prismlab.bench.specialists import add_specialist_ratios, specialist_reference, specialists
from prismlab.channels import ALL_SUBSETS
from prismlab.engine.checkpoint import model_from_checkpoint
from prismlab.engine.rundir import BEST, RunDir
from prismlab.models.cards import cards_section


@dataclass(frozen=True)
class Method:
    """One row of the study: a model with an adapter, how its channels are sampled in training,
    and any further config keys (the ablation's design changes)."""

    adapter: str  # "" for a model that takes no adapter (the ViTs tokenise channels themselves)
    sampling: str  # rgb | hcs | fixed:<SUBSET>
    model: str = "baseline_cnn"
    adapter_kw: tuple = ()  # (key, value) pairs: hashable, and the run's model_kw when non-empty
    train: tuple = ()  # (key, value) pairs of further config keys
    model_kw: tuple = ()  # (key, value) pairs of further model keys

    def overrides(self) -> dict:
        kw = {**({"adapter": self.adapter} if self.adapter else {}),
              **({"adapter_kw": dict(self.adapter_kw)} if self.adapter_kw else {}), **dict(self.model_kw)}
        return {"model": self.model, "model_kw": kw, "channel_sampling": self.sampling, **dict(self.train)}


# DIY: one zero-filled naive model per subset (its specialist). ours: the channel-set adapter trained
# on hcs subsets and on every image's RGB view, the subset views distilled from the RGB view, with
# per-subset BatchNorm statistics in the trunk. The other ours_* rows are the ablation (STEPS).
OURS = Method("channelset", "hcs", train=(("rgb_view", True), ("view_distill", 1.0)), model_kw=(("subset_bn", True),))
SHARED_BN = Method("channelset", "hcs", train=OURS.train)  # ours with one set of statistics for every subset
LINEAR = (("set_path", False),)
METHODS = {
    "naive": Method("naive", "rgb"),
    "pool_channel_attention": Method("pool_channel_attention", "hcs"),
    "ours": OURS,
    "sigmoid": Method("sigmoid", "hcs"),
    "dynamic_conv": Method("dynamic_conv", "hcs"),
    **{f"diy_{s}": Method("naive", f"fixed:{s}") for s in ALL_SUBSETS if s != "RGB"},
    "ours_v1": Method("channelset", "hcs"),  # round one's design: hcs subsets only
    "ours_rgb_view": Method("channelset", "hcs", train=(("rgb_view", True),)),
    "ours_shared_bn": SHARED_BN,
    "ours_wide16": Method("channelset", "hcs", adapter_kw=(("out_channels", 16), ("hidden", 16)), train=OURS.train),
    "ours_linear": Method("channelset", "hcs", adapter_kw=LINEAR, train=OURS.train),
    "ours_distill2": Method("channelset", "hcs", train=(("rgb_view", True), ("view_distill", 2.0)), model_kw=OURS.model_kw),
    # Both tasks in one net: the shallow net of task 2 behind ours' linear path (no added layer).
    "naive_shallow": Method("naive", "rgb", model="shallow"),
    "ours_shallow": Method("channelset", "hcs", model="shallow", adapter_kw=LINEAR, train=OURS.train,
                           model_kw=OURS.model_kw),
    "ours_shallow_shared_bn": Method("channelset", "hcs", model="shallow", adapter_kw=LINEAR, train=OURS.train),
    # The literature, each trained with hcs as in its paper: CHAMMI's first layers on the same trunk,
    # late fusion (the trunk once per channel), and a ViT that tokenises each channel beside its
    # zero-filled twin (no cost cap: the cost columns show theirs).
    **{k: Method(k, "hcs") for k in ("slice_param", "template_mixing", "hypernet", "target_param")},
    "bag_of_channels": Method("naive", "hcs", model="bag_of_channels"),
    "channelvit": Method("", "hcs", model="channelvit"),
    "vit_hcs": Method("", "hcs", model="vit_hcs"),
}
DEFAULT = ["naive", "pool_channel_attention", "ours"]
# The ablation as steps, each one design change from one row to another: what the change buys.
STEPS = [
    ("the RGB view", "ours_v1", "ours_rgb_view"),
    ("distillation from the RGB view", "ours_rgb_view", "ours_shared_bn"),
    ("per-subset BatchNorm statistics", "ours_shared_bn", "ours"),
    ("distillation weight 2", "ours", "ours_distill2"),
    ("adapter width 16 (shared statistics)", "ours_shared_bn", "ours_wide16"),
    ("the linear path alone (shared statistics)", "ours_shared_bn", "ours_linear"),
    ("per-subset BatchNorm statistics, shallow net", "ours_shallow_shared_bn", "ours_shallow"),
]
ABLATION = list(dict.fromkeys(name for _, a, b in STEPS for name in (a, b) if name not in ("ours", "ours_shallow")))


def pick_methods(spec: str) -> list[str]:
    return pick(spec, METHODS, DEFAULT, "task1")


def summarize(name: str, path: Path, size: int) -> dict:
    from prismlab.analysis.flops import count_flops, count_params
    from prismlab.models.fuse import inference_form

    run = RunDir(path)
    res = run.test()["results"]
    deployed = inference_form(model_from_checkpoint(run.checkpoint(BEST), run / BEST))  # what the cost is of
    correct = test_scores(run, list(res))
    acc = {s: float(correct[s].mean()) for s in res}
    singles = [acc[s] for s in ("R", "G", "B") if s in acc]
    return {
        "results": {s: {"accuracy": acc[s], "loss": r["loss"], "ci": accuracy_interval(correct[s])}
                    for s, r in res.items()},
        "mean": sum(acc.values()) / len(acc),
        "worst_single_over_rgb": (min(singles) / acc["RGB"]) if singles and acc.get("RGB") else None,
        "params": count_params(deployed),
        "flops": count_flops(deployed, size),
        "train_time_s": training_seconds(run),
        # One 0/1 per test image and subset, so any two rows can be paired later from this file alone.
        "test_correct": {s: to_bits(v) for s, v in correct.items()},
        "checkpoint": str(run / BEST),
        "run": str(run.path),
        "trained_at": run.commits(),  # the commit(s) the run trained at; a reused run predates the file's
    }


def run_study(data: Path, tier: str, methods: list[str], runs_dir: Path, seed: int = 0,
              epochs: int | None = None, on_row=None) -> dict:
    """Train (or reuse) each method's run and summarise; returns the 'methods' mapping. on_row(rows)
    sees the rows so far after each method, so a study stopped half-way leaves partial results."""
    base = preset(f"task1-{tier}" if tier != "demo" else "demo")
    if epochs:
        base["epochs"] = epochs
    out = {}
    for m in methods:
        sampling = METHODS[m].sampling
        over = {**base, "data": str(data), "seed": seed, **METHODS[m].overrides(),
                "val_subsets": "RGB" if sampling == "rgb" else "all"}
        if sampling.startswith("fixed:"):
            over["val_subsets"] = sampling[6:]
        run = train_or_reuse(over, runs_dir / m)
        out[m] = summarize(m, run, base["image_size"])
        out[m]["epochs"] = base["epochs"]
        compare(out)
        if on_row:
            on_row(out)
    return out


def compare(rows: dict) -> None:
    """Costs against the naive net of the same trunk, and the specialist ratios, among the rows so far."""
    for m, row in rows.items():
        ref = rows.get(naive_of(m))
        if ref:
            row["cost_reference"] = naive_of(m)
            row["flops_overhead"] = row["flops"] / ref["flops"] - 1
            row["params_overhead"] = row["params"] / ref["params"] - 1
    add_specialist_ratios(rows, naive_of)


def naive_of(method: str) -> str:
    """The naive RGB net with the same trunk: the cost reference and the RGB specialist."""
    return "naive_shallow" if METHODS[method].model == "shallow" else "naive"


def targets(methods: dict) -> dict | None:
    """Ours replaces the specialists without loss, at a small cost against naive. The min ratio
    is over the subsets whose specialist is in the study; with fewer than all eight (the 30-epoch
    study) its key names them. Worst single / RGB is information, not a target."""
    if "ours" not in methods or "naive" not in methods:
        return None
    o, n = methods["ours"], methods["naive"]
    out = {}
    ran = list(o.get("specialist_ratio", {}))
    if len(ran) > 1:  # RGB alone is the ours_rgb>=naive_rgb target below
        scope = "" if len(ran) == len(ALL_SUBSETS) else f" ({'/'.join(ran)})"
        out[f"min_specialist_ratio>=1.00{scope}"] = o["min_specialist_ratio"] >= 1.0
    out.update({
        "ours_rgb>=naive_rgb": o["results"]["RGB"]["accuracy"] >= n["results"]["RGB"]["accuracy"],
        "flops_overhead<=0.10": o["flops_overhead"] <= 0.10,
        "params_overhead<=0.05": o["params_overhead"] <= 0.05,
    })
    return out


def ablation(ms: dict) -> list[dict]:
    """Each step of STEPS whose two rows are in the study: {"change", "from", "to", "diff": {subset:
    {"diff", "low", "high"}}}, the accuracy of `to` minus that of `from` on the same test images,
    with a paired bootstrap interval."""
    out = []
    for change, a, b in STEPS:
        if "test_correct" in ms.get(a, {}) and "test_correct" in ms.get(b, {}):
            before, after = ms[a]["test_correct"], ms[b]["test_correct"]
            out.append({"change": change, "from": a, "to": b,
                        "diff": {s: paired_difference(from_bits(after[s]), from_bits(before[s]))
                                 for s in ALL_SUBSETS if s in before and s in after}})
    return out


def ablation_table(steps: list[dict]) -> list[str]:
    if not steps:
        return []

    def beyond(diff: dict, gain: bool) -> str:
        return ", ".join(s for s, d in diff.items() if (d["low"] > 0 if gain else d["high"] < 0)) or "none"

    rows = [[st["change"], f"{st['from']} → {st['to']}",
             *(f"{100 * d['diff']:+.1f} ({100 * d['low']:+.1f} to {100 * d['high']:+.1f})" if (d := st["diff"].get(s))
               else "—" for s in ALL_SUBSETS), beyond(st["diff"], True), beyond(st["diff"], False)]
            for st in steps]
    return ["Ablation: what each design change buys, in accuracy points on the same test images (the row with "
            "the change minus the row without), with a paired 95% bootstrap interval:", "",
            md_table(["change", "rows", *ALL_SUBSETS, "gain beyond noise", "loss beyond noise"], rows), ""]


def ratio_table(ms: dict) -> list[str]:
    """Each shared model's accuracy over the specialist's on the same subset, with paired intervals."""
    rows = [[name, *(ci(r["ratio"], r, scale=1, fmt="{:.2f}") if (r := m["specialist_ratio"].get(s)) else "—"
                     for s in ALL_SUBSETS),
             "—" if m["min_specialist_ratio"] is None else f"{m['min_specialist_ratio']:.2f}",
             ", ".join(m["below_specialist_beyond_noise"]) or "none", f"{m['train_time_s'] / 60:.0f}"]
            for name, m in ms.items() if m.get("specialist_ratio")]
    if not rows:
        return []
    return ["Specialist ratio: accuracy ÷ the specialist's on the same subset (naive, or naive_shallow for the "
            "shallow rows, on RGB; diy_<S> on S), with a paired 95% bootstrap interval over the test images:", "",
            md_table(["method", *ALL_SUBSETS, "min", "below 1 beyond noise", "train min"], rows), ""]


def markdown(doc: dict, chart: str | None) -> str:
    ms = doc["methods"]
    subsets = list(ALL_SUBSETS)
    rows = []
    for name, m in ms.items():
        acc = {s: m["results"][s]["accuracy"] for s in subsets if s in m["results"]}
        rows.append([name, *(pct(acc.get(s)) for s in subsets), pct(m["mean"]),
                     "—" if m["worst_single_over_rgb"] is None else f"{100 * m['worst_single_over_rgb']:.1f}",
                     f"{m['params']:,}", f"{m['flops'] / 1e6:.2f}M",
                     f"{100 * m.get('flops_overhead', 0):+.1f}% / {100 * m.get('params_overhead', 0):+.1f}%"
                     + (f" ({m['cost_reference']})" if m.get("cost_reference", "naive") != "naive" else "")])
    sp = doc.get("specialists")
    if sp:
        acc = {s: r["accuracy"] for s, r in sp["results"].items()}
        rows.append([f"DIY: {len(acc)} specialists, each on its own subset", *(pct(acc.get(s)) for s in subsets),
                     pct(sp["mean"]), "—", f"{sp['params_total']:,} in all", "—", "—"])
    n = doc["epochs"]
    budget = f", {n} epoch{'s' * (n != 1)}" if doc.get("epochs_overridden") else ""
    lines = [md_table(["method", *subsets, "mean", "worst R/G/B ÷ RGB (%)", "params", "FLOPs", "FLOPs / params vs naive"],
                      rows), "", *ratio_table(ms), *ablation_table(doc.get("ablation", [])), *uncommitted_note(ms)]
    if doc.get("pending"):
        lines += [f"Partial results: still to run: {', '.join(doc['pending'])}.", ""]
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
    shown = [METHODS[k] for k in doc["methods"] if k in METHODS]
    lines += cards_section([m.model for m in shown], doc["image_size"], [m.adapter for m in shown if m.adapter])
    overridden = " (--epochs: not the tier preset)" if doc.get("epochs_overridden") else ""
    return frame(doc, f"Task 1: any-channel convolution ({doc['tier']} tier{budget})", lines,
                 recipe=f", {n} epochs{overridden} at {doc['image_size']}x{doc['image_size']}",
                 data=" (test split, accuracy %)")


def run(args: StudyArgs) -> None:
    data = args.data_dir()
    methods = pick_methods(args.methods)
    base = preset(f"task1-{args.tier}")
    name = study_name("task1", args.tier, args.epochs, base["epochs"], seed=args.seed)

    def write(ms: dict) -> Path:
        doc = study_provenance(args, data=str(data), image_size=base["image_size"], epochs=args.epochs or base["epochs"],
                               epochs_overridden=name != f"task1-{args.tier}", methods=ms,
                               pending=[m for m in methods if m not in ms])
        return write_doc(args.results_dir, name, doc)

    path = write(run_study(data, args.tier, methods, Path(args.runs_dir) / name, args.seed, args.epochs, on_row=write))
    print(Path(path).with_suffix(".md").read_text())


def write_doc(results_dir: str | Path, name: str, doc: dict) -> Path:
    """The study's results file, its Markdown and its per-subset chart."""
    ms = doc["methods"]
    doc["targets"] = targets(ms)
    doc["specialist_reference"] = specialist_reference(ms)
    doc["specialists"] = specialists(ms)
    doc["ablation"] = ablation(ms)
    chart = Path(results_dir) / f"{name}-subsets.png"
    chart.parent.mkdir(parents=True, exist_ok=True)
    # One bar per method and subset; the DIY models appear once, as the specialist on each subset.
    bars = {k: m["results"] for k, m in ms.items() if not k.startswith("diy_") and k not in ABLATION}
    if doc["specialists"]:
        bars["DIY specialist (own subset)"] = doc["specialists"]["results"]
    if not bars:  # only ablation rows so far: nothing for the chart yet
        return write_results(results_dir, name, doc, markdown(doc, None))
    plot_subset_bars({k: {s: r["accuracy"] for s, r in res.items()} for k, res in bars.items()}, chart,
                     "Task 1: test accuracy per channel subset (95% bootstrap intervals)",
                     errors={k: {s: (r["ci"]["low"], r["ci"]["high"]) for s, r in res.items() if "ci" in r}
                             for k, res in bars.items()})
    return write_results(results_dir, name, doc, markdown(doc, chart.name))

"""Task 1 study: one trunk and recipe, several channel methods, every model on all 8 subsets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prismlab.analysis.plots import plot_subset_bars
from prismlab.analysis.report import pct
from prismlab.analysis.stats import accuracy_interval, from_bits, paired_difference, to_bits
from prismlab.bench.common import StudyArgs, pick, preset, read_run, study_name, train_or_reuse
from prismlab.bench.results import Col, Target, header, judge, notes, plural, provenance, table, trained, write_results
from prismlab.bench.specialists import (
    add_specialist_ratios,
    ratio_lines,
    reference_lines,
    specialist_reference,
    specialists,
)
from prismlab.channels import ALL_SUBSETS
from prismlab.models import create_model
from prismlab.models.cards import NUM_CLASSES, cards_section


@dataclass(frozen=True)
class Method:
    """One row of the study: a model with an adapter, how its channels are sampled in training, and
    any further config keys (the ablation's design changes). Pairs are tuples: a Method is hashable."""

    adapter: str  # "" for a model that takes no adapter (the ViTs tokenise channels themselves)
    sampling: str  # rgb | hcs | fixed:<SUBSET>
    model: str = "baseline_cnn"
    adapter_kw: tuple = ()
    train: tuple = ()  # further config keys
    model_kw: tuple = ()  # further model keys
    lr_per_256: float | None = None  # a learning rate per 256 images, scaled to the tier's batch (ViT practice)

    def card_adapter(self):
        """What the model cards show of the adapter: its name, and the module where the row builds it as
        its trunk's first conv (then not the registered form)."""
        kw = self.overrides()["model_kw"]
        if not kw.get("first_layer"):
            return self.adapter
        return self.adapter, create_model(self.model, num_classes=NUM_CLASSES, **kw).adapter

    def overrides(self, batch_size: int = 256) -> dict:
        kw = {
            **({"adapter": self.adapter} if self.adapter else {}),
            **({"adapter_kw": dict(self.adapter_kw)} if self.adapter_kw else {}),
            **dict(self.model_kw),
        }
        lr = {"lr": self.lr_per_256 * batch_size / 256} if self.lr_per_256 else {}
        return {"model": self.model, "model_kw": kw, "channel_sampling": self.sampling, **dict(self.train), **lr}


def channelset(**kw) -> Method:
    return Method("channelset", "hcs", **kw)


# DIY: one zero-filled naive model per subset (its specialist). ours: the channel-set adapter trained
# on hcs subsets and on every image's RGB view, the subset views distilled from the RGB view, with
# per-subset BatchNorm statistics in the trunk. The other ours_* rows are the ablation (STEPS).
OURS = channelset(train=(("rgb_view", True), ("view_distill", 1.0)), model_kw=(("subset_bn", True),))
LINEAR = (("set_path", False),)
# The ViTs' optimiser, as ChannelViT's supervised config: AdamW, lr 5e-4 per 256 images (lr_per_256 below),
# weight decay 0.04; the CNNs' SGD at lr 0.1 is no fair test of a ViT.
VIT = (("optimizer", "adamw"), ("weight_decay", 0.04))
# The field's channel-adaptive designs, as rows: CHAMMI's first layers, late fusion, two ViTs.
CHAMMI = ("slice_param", "template_mixing", "hypernet", "target_param")
LITERATURE = (*CHAMMI, "bag_of_channels", "channelvit", "vit_hcs")
METHODS = {
    "naive": Method("naive", "rgb"),
    "pool_channel_attention": Method("pool_channel_attention", "hcs"),
    "ours": OURS,
    "sigmoid": Method("sigmoid", "hcs"),
    "dynamic_conv": Method("dynamic_conv", "hcs"),
    **{f"diy_{s}": Method("naive", f"fixed:{s}") for s in ALL_SUBSETS if s != "RGB"},
    "ours_v1": channelset(),  # the ablation's start: hcs subsets only
    "ours_rgb_view": channelset(train=(("rgb_view", True),)),
    "ours_shared_bn": channelset(train=OURS.train),  # ours with one set of statistics for every subset
    "ours_wide16": channelset(adapter_kw=(("out_channels", 16), ("hidden", 16)), train=OURS.train),
    "ours_linear": channelset(adapter_kw=LINEAR, train=OURS.train),
    "ours_distill2": channelset(train=(("rgb_view", True), ("view_distill", 2.0)), model_kw=OURS.model_kw),
    # Both tasks in one net: the shallow net of task 2 behind ours' linear path (no added layer).
    "naive_shallow": Method("naive", "rgb", model="shallow"),
    "ours_shallow": channelset(model="shallow", adapter_kw=LINEAR, train=OURS.train, model_kw=OURS.model_kw),
    "ours_shallow_shared_bn": channelset(model="shallow", adapter_kw=LINEAR, train=OURS.train),
    # The literature, each trained with hcs as in its paper: CHAMMI's strategies as the same trunk's
    # first conv (as in CHAMMI: 32 kernels per channel, not 3 channels in front of that conv), late
    # fusion (the trunk once per channel), and a ViT that tokenises each channel beside its
    # zero-filled twin (no cost cap: the cost columns show theirs).
    **{k: Method(k, "hcs", model_kw=(("first_layer", True),)) for k in CHAMMI},
    "bag_of_channels": Method("naive", "hcs", model="bag_of_channels"),
    "channelvit": Method("", "hcs", model="channelvit", train=VIT, lr_per_256=5e-4),
    "vit_hcs": Method("", "hcs", model="vit_hcs", train=VIT, lr_per_256=5e-4),
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


def summarize(path: Path, size: int, epochs: int) -> dict:
    """One row from what its run wrote (common.read_run), scored per subset."""
    run, correct, _, facts = read_run(path, size)
    res = run.test()["results"]
    acc = {s: float(correct[s].mean()) for s in res}
    singles = [acc[s] for s in ("R", "G", "B") if s in acc]
    return {
        "results": {
            s: {"accuracy": acc[s], "loss": r["loss"], "ci": accuracy_interval(correct[s])} for s, r in res.items()
        },
        "mean": sum(acc.values()) / len(acc),
        "worst_single_over_rgb": (min(singles) / acc["RGB"]) if singles and acc.get("RGB") else None,
        # One 0/1 per test image and subset, so any two rows can be paired later from this file alone.
        "test_correct": {s: to_bits(v) for s, v in correct.items()},
        **facts,
        "epochs": epochs,
    }


def run_study(
    data: Path, tier: str, methods: list[str], runs_dir: Path, seed: int = 0, epochs: int | None = None, on_row=None
) -> dict:
    """Train (or reuse) each method's run -> the 'methods' mapping. on_row(rows) sees the rows so far
    after each method, so a study stopped half-way leaves partial results."""
    base = preset(f"task1-{tier}" if tier != "demo" else "demo")
    if epochs:
        base["epochs"] = epochs
    out = {}
    for m in methods:
        sampling = METHODS[m].sampling
        val = sampling[len("fixed:") :] if sampling.startswith("fixed:") else "RGB" if sampling == "rgb" else "all"
        over = {**base, "data": str(data), "seed": seed, **METHODS[m].overrides(base["batch_size"]), "val_subsets": val}
        out[m] = summarize(train_or_reuse(over, runs_dir / m), base["image_size"], base["epochs"])
        compare(out)
        if on_row:
            on_row(out)
    return out


def compare(rows: dict) -> None:
    """Costs against the naive net of the same trunk, and the specialist ratios, among the rows so far."""
    for m, row in rows.items():
        if ref := rows.get(naive_of(m)):
            row["cost_reference"] = naive_of(m)
            row["flops_overhead"] = row["flops"] / ref["flops"] - 1
            row["params_overhead"] = row["params"] / ref["params"] - 1
    add_specialist_ratios(rows, naive_of)


def naive_of(method: str) -> str:
    """The naive RGB net with the same trunk: the cost reference and the RGB specialist."""
    return "naive_shallow" if METHODS[method].model == "shallow" else "naive"


def _rgb(row: dict) -> float:
    return row["results"]["RGB"]["accuracy"]


# Ours replaces the specialists without loss, at a small cost against naive. Worst single / RGB is
# information, not a target.
TARGETS = [
    Target("ours_rgb>=naive_rgb", lambda r: _rgb(r["ours"]) >= _rgb(r["naive"])),
    Target("flops_overhead<=0.10", lambda r: r["ours"]["flops_overhead"] <= 0.10),
    Target("params_overhead<=0.05", lambda r: r["ours"]["params_overhead"] <= 0.05),
]


def targets(methods: dict) -> dict | None:
    """TARGETS, after the min specialist ratio: over the subsets whose specialist is in the study (with
    fewer than all eight, as in the 30-epoch study, its name says which). None without ours and naive."""
    if "ours" not in methods or "naive" not in methods:
        return None
    ran = list(methods["ours"].get("specialist_ratio", {}))
    scope = "" if len(ran) == len(ALL_SUBSETS) else f" ({'/'.join(ran)})"
    ratio = [Target(f"min_specialist_ratio>=1.00{scope}", lambda r: r["ours"]["min_specialist_ratio"] >= 1.0)]
    return judge(ratio * (len(ran) > 1) + TARGETS, methods)  # RGB alone is ours_rgb>=naive_rgb


def ablation(ms: dict) -> list[dict]:
    """Each step of STEPS whose two rows are in the study: per subset, the accuracy of `to` minus that
    of `from` on the same test images, with a paired bootstrap interval."""
    out = []
    for change, a, b in STEPS:
        if "test_correct" in ms.get(a, {}) and "test_correct" in ms.get(b, {}):
            before, after = ms[a]["test_correct"], ms[b]["test_correct"]
            both = [s for s in ALL_SUBSETS if s in before and s in after]
            diff = {s: paired_difference(from_bits(after[s]), from_bits(before[s])) for s in both}
            out.append({"change": change, "from": a, "to": b, "diff": diff})
    return out


def _beyond(diff: dict, gain: bool) -> str:
    return ", ".join(s for s, d in diff.items() if (d["low"] > 0 if gain else d["high"] < 0)) or "none"


def _points(d: dict | None) -> str:
    return f"{100 * d['diff']:+.1f} ({100 * d['low']:+.1f} to {100 * d['high']:+.1f})" if d else "—"


def _acc(s: str):
    return lambda k, m: pct(m["results"].get(s, {}).get("accuracy"))


def _overheads(k: str, m: dict) -> str:
    ref = m.get("cost_reference", "naive")
    note = f" ({ref})" if ref != "naive" else ""
    return f"{100 * m.get('flops_overhead', 0):+.1f}% / {100 * m.get('params_overhead', 0):+.1f}%{note}"


ROWS = [
    Col("method", lambda k, m: k),
    *(Col(s, _acc(s)) for s in ALL_SUBSETS),
    Col("mean", lambda k, m: pct(m["mean"])),
    Col("worst R/G/B ÷ RGB (%)", lambda k, m: pct(m["worst_single_over_rgb"])),
    Col("params", "params", "{:,}"),
    Col("FLOPs", lambda k, m: f"{m['flops'] / 1e6:.2f}M"),
    Col("FLOPs / params vs naive", _overheads),
]
ABLATION_COLS = [
    Col("change", lambda k, st: st["change"]),
    Col("rows", lambda k, st: f"{st['from']} → {st['to']}"),
    *(Col(s, lambda k, st, s=s: _points(st["diff"].get(s))) for s in ALL_SUBSETS),
    Col("gain beyond noise", lambda k, st: _beyond(st["diff"], True)),
    Col("loss beyond noise", lambda k, st: _beyond(st["diff"], False)),
]


def markdown(doc: dict, chart: str | None) -> str:
    ms, n = doc["methods"], doc["epochs"]
    diy = []
    if sp := doc.get("specialists"):  # DIY as one row: each specialist on its own subset
        accs = [pct(sp["results"].get(s, {}).get("accuracy")) for s in ALL_SUBSETS]
        head = f"DIY: {len(sp['results'])} specialists, each on its own subset"
        diy = [[head, *accs, pct(sp["mean"]), "—", f"{sp['params_total']:,} in all", "—", "—"]]
    lines = [table(ROWS, ms.items(), diy), ""]
    lines += ratio_lines(ms)
    if doc.get("ablation"):
        lines += [
            "Ablation: what each design change buys, in accuracy points on the same test images (the row "
            "with the change minus the row without), with a paired 95% bootstrap interval:",
            "",
            table(ABLATION_COLS, [("", st) for st in doc["ablation"]]),
            "",
        ]
    lines += notes(doc, ms, "Targets (ours, one set of weights)")
    lines += reference_lines(doc.get("specialist_reference"))
    lines += [f"![per-subset accuracy]({chart})", ""] if chart else []
    shown = [METHODS[k] for k in ms if k in METHODS]
    lines += cards_section([m.model for m in shown], doc["image_size"], [m.card_adapter() for m in shown if m.adapter])
    budget = f", {plural(n, 'epoch')}" if doc.get("epochs_overridden") else ""
    title = f"Task 1: any-channel convolution ({doc['tier']} tier{budget})"
    return "\n".join(header(doc, title, trained(doc), data_note=" (test split, accuracy %)") + lines)


def run(args: StudyArgs) -> None:
    data, base = args.data_dir(), preset(f"task1-{args.tier}")
    methods = pick(args.methods, METHODS, DEFAULT, "task1")
    name = study_name("task1", args.tier, args.epochs, base["epochs"], seed=args.seed)
    study = {"tier": args.tier, "data": str(data), "image_size": base["image_size"]}

    def write(ms: dict) -> Path:
        pending = [m for m in methods if m not in ms]
        n = args.epochs or base["epochs"]
        epochs = {"epochs": n, "epochs_overridden": n != base["epochs"]}  # a seed alone is not another budget
        doc = provenance(args.argv, args.seed, **study, **epochs, methods=ms, pending=pending)
        return write_doc(args.results_dir, name, doc)

    path = write(run_study(data, args.tier, methods, Path(args.runs_dir) / name, args.seed, args.epochs, on_row=write))
    print(path.with_suffix(".md").read_text())


def write_doc(results_dir: str | Path, name: str, doc: dict) -> Path:
    """The study's results file, its Markdown and its per-subset chart."""
    ms = doc["methods"]
    sp = specialists(ms)
    doc.update(
        targets=targets(ms), specialist_reference=specialist_reference(ms), specialists=sp, ablation=ablation(ms)
    )
    # One bar per method and subset; the DIY models appear once, as the specialist on each subset.
    bars = {k: m["results"] for k, m in ms.items() if not k.startswith("diy_") and k not in ABLATION}
    if sp:
        bars["DIY specialist (own subset)"] = sp["results"]
    chart = Path(results_dir) / f"{name}-subsets.png"
    if bars:  # none while only ablation rows are in
        chart.parent.mkdir(parents=True, exist_ok=True)
        accuracy = {k: {s: r["accuracy"] for s, r in res.items()} for k, res in bars.items()}
        errors = {
            k: {s: (r["ci"]["low"], r["ci"]["high"]) for s, r in res.items() if "ci" in r} for k, res in bars.items()
        }
        plot_subset_bars(
            accuracy, chart, "Task 1: test accuracy per channel subset (95% bootstrap intervals)", errors=errors
        )
    return write_results(results_dir, name, doc, markdown(doc, chart.name if bars else None))

"""PNG plots for runs and reports (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402


def plot_curves(history: list[dict], path: str | Path) -> None:
    """Loss and accuracy per epoch, train and val."""
    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    for key, ax in (("loss", a), ("acc", b)):
        for split in ("train", "val"):
            ys = [h.get(f"{split}_{key}") for h in history]
            if any(y is not None for y in ys):
                ax.plot(ep, ys, marker="o", label=split)
        _label(ax, "epoch", key)
    _save(fig, path)


def _label(ax, xlabel: str, ylabel: str, title: str = "", legend: bool = True) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend()


def _save(fig, path: str | Path, rect=(0, 0, 1, 1), **kw) -> None:
    """The figure as a PNG, written atomically (files.atomic_write); rect: the area tight_layout fills."""
    from prismlab.files import atomic_write

    fig.tight_layout(rect=rect)
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=90, **kw), "chart")
    finally:
        plt.close(fig)


def plot_subset_bars(
    rows: dict[str, dict[str, float]],
    path: str | Path,
    title: str = "",
    errors: dict[str, dict[str, tuple[float, float]]] | None = None,
) -> None:
    """rows: {name: {subset: accuracy}} -> grouped bars, one group per subset; errors: {name:
    {subset: (low, high)}} draws each bar's interval."""
    names = list(rows)
    subsets = list(dict.fromkeys(s for r in rows.values() for s in r))
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(subsets) + 2), 3.6))
    for i, name in enumerate(names):
        xs = [j + i * width for j in range(len(subsets))]
        ys = [rows[name].get(s, float("nan")) * 100 for s in subsets]  # a subset not measured: no bar, not 0
        iv = (errors or {}).get(name, {})
        err = (
            [
                [y - 100 * iv[s][0] if s in iv else 0 for y, s in zip(ys, subsets)],
                [100 * iv[s][1] - y if s in iv else 0 for y, s in zip(ys, subsets)],
            ]
            if iv
            else None
        )
        ax.bar(xs, ys, width, label=name, yerr=err, capsize=2 if iv else 0, error_kw={"elinewidth": 0.8})
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(subsets))], subsets)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    # The legend goes below the axes, where it cannot cover a bar.
    ax.legend(fontsize=8, ncol=min(len(names), 5), loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    _save(fig, path, bbox_inches="tight")


def plot_budget(
    series: dict[str, list[tuple[int, float, float, float]]],
    path: str | Path,
    title: str = "",
    colors: dict[str, str] | None = None,
) -> None:
    """series: {row: [(epochs, accuracy, low, high), ...]} -> accuracy against training budget,
    with each point's 95% interval as an error bar; colors: {row: matplotlib colour}."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, pts in series.items():
        pts = sorted(pts)
        xs = [p[0] for p in pts]
        ys = [100 * p[1] for p in pts]
        err = [[100 * (p[1] - p[2]) for p in pts], [100 * (p[3] - p[1]) for p in pts]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name, color=(colors or {}).get(name))
    ax.set_xscale("log")
    ticks = sorted({p[0] for pts in series.values() for p in pts})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    _label(ax, "epochs", "test accuracy (%)", title)
    _save(fig, path)


def plot_val_curves(
    curves: dict[str, list[float]], path: str | Path, title: str = "", colors: dict[str, str] | None = None
) -> None:
    """curves: {row: validation accuracy after each epoch} on one axis; colors: {row: matplotlib colour}."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, ys in curves.items():
        ax.plot(range(1, len(ys) + 1), [100 * y for y in ys], marker=".", label=name, color=(colors or {}).get(name))
    _label(ax, "epoch", "validation accuracy (%)", title)
    _save(fig, path)


def plot_frontier(panels: dict[str, dict[str, list[tuple]]], path: str | Path, title: str = "") -> None:
    """panels: {cell: {family: [(batch-1 ms, accuracy, low, high, label), ...]}} -> one panel per cell,
    test accuracy against batch-1 latency (log axis), each family a line through its members."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, (cell, families) in zip(axes[0], panels.items()):
        for i, (family, pts) in enumerate(families.items()):
            pts = sorted(pts)
            if not pts:
                continue
            xs, ys = [p[0] for p in pts], [100 * p[1] for p in pts]
            err = [[100 * (p[1] - p[2]) for p in pts], [100 * (p[3] - p[1]) for p in pts]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=family, color=f"C{i}")
            for x, y, p in zip(xs, ys, pts):
                ax.annotate(p[4], (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.margins(x=0.15)  # room for the labels of the outermost points
        # 1-2-5 ticks in plain numbers: a panel often spans less than a decade
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        _label(ax, "batch-1 latency (ms, best runtime)", "test accuracy (%)", cell, legend=False)
    # one legend for every panel, below them: inside a panel it covered points
    shown = {lb: h for ax in axes[0] for h, lb in zip(*ax.get_legend_handles_labels())}
    fig.legend(shown.values(), shown.keys(), loc="lower center", ncol=len(shown), fontsize=8, frameon=False)
    fig.suptitle(title)
    _save(fig, path, rect=(0, 0.07, 1, 1))

"""PNG plots for runs and reports (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(history: list[dict], path: str | Path) -> None:
    """Loss and accuracy per epoch, train and val."""
    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    for key, ax in (("loss", a), ("acc", b)):
        for split in ("train", "val"):
            ys = [h.get(f"{split}_{key}") for h in history]
            if any(y is not None for y in ys):
                ax.plot(ep, ys, marker="o", label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_subset_bars(rows: dict[str, dict[str, float]], path: str | Path, title: str = "") -> None:
    """rows: {name: {subset: accuracy}} -> grouped bars, one group per subset."""
    names = list(rows)
    subsets = list(dict.fromkeys(s for r in rows.values() for s in r))
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(subsets) + 2), 3.6))
    for i, name in enumerate(names):
        xs = [j + i * width for j in range(len(subsets))]
        ys = [rows[name].get(s, float("nan")) * 100 for s in subsets]  # a subset not measured: no bar, not 0
        ax.bar(xs, ys, width, label=name)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(subsets))], subsets)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    # The legend goes below the axes, where it cannot cover a bar.
    ax.legend(fontsize=8, ncol=min(len(names), 5), loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)

"""The DIY specialists as the yardstick of task 1: one model per subset, each scored on its own
subset. A shared model replaces them without loss where its accuracy on every subset is at least
its specialist's; the ratio is read with a paired bootstrap interval over the test images."""

from __future__ import annotations

from typing import Callable

from prismlab.analysis.report import ci
from prismlab.bench.results import Col, paired, table
from prismlab.channels import ALL_SUBSETS


def ratios(row: str, mine: dict, scores: dict, pair: Callable, rgb_specialist: str, with_itself: bool = True) -> dict:
    """A row against the specialist of each subset whose scores are in `scores` ({row: {subset: scores}}):
    rgb_specialist on RGB, diy_<S> on S. pair(mine, theirs): the ratio with its interval. Below beyond
    noise: the subsets where the interval's top is under 1."""
    out = {}
    for s in ALL_SUBSETS:
        spec = rgb_specialist if s == "RGB" else f"diy_{s}"
        if mine.get(s) and scores.get(spec, {}).get(s) and (with_itself or spec != row):
            out[s] = {**pair(mine[s], scores[spec][s]), "specialist": spec}
    known = [r["ratio"] for r in out.values() if r["ratio"] is not None]
    return {
        "specialist_ratio": out,
        "min_specialist_ratio": min(known) if known else None,
        "below_specialist_beyond_noise": [s for s, r in out.items() if r["high"] is not None and r["high"] < 1],
    }


def add_specialist_ratios(rows: dict, naive_of: Callable[[str], str]) -> None:
    """ratios() for every row with scores that is not itself a DIY specialist (naive_of(row): the RGB one)."""
    scores = {k: r.get("test_correct", {}) for k, r in rows.items()}
    for name, row in rows.items():
        if not name.startswith("diy_") and "test_correct" in row:
            row.update(ratios(name, row["test_correct"], scores, paired, naive_of(name)))


def specialists(methods: dict) -> dict | None:
    """DIY as the report meant it: one model per subset, each scored on its own subset (naive is the
    RGB one). Its cost is every specialist's parameters together."""
    own = {
        s: (f"diy_{s}" if f"diy_{s}" in methods else "naive")
        for s in ALL_SUBSETS
        if f"diy_{s}" in methods or (s == "RGB" and "naive" in methods)
    }
    if not any(name.startswith("diy_") for name in own.values()):
        return None
    results = {
        s: {k: v for k, v in methods[m]["results"][s].items() if k in ("accuracy", "ci")} for s, m in own.items()
    }
    return {
        "results": results,
        "models": own,
        "mean": sum(r["accuracy"] for r in results.values()) / len(own) if len(own) == len(ALL_SUBSETS) else None,
        "params_total": sum(methods[name]["params"] for name in own.values()),
    }


def specialist_reference(methods: dict) -> dict | None:
    """min(diy_R, diy_G, diy_B on their own channel) / naive on RGB: the worst-single ratio of a model
    exactly as good as naive on RGB and as the specialists on single channels. A reference, not a proof."""
    experts = {c: methods[f"diy_{c}"]["results"][c]["accuracy"] for c in ("R", "G", "B") if f"diy_{c}" in methods}
    if not experts or "naive" not in methods:
        return None
    worst = min(experts, key=experts.get)
    return {
        "experts": sorted(experts),
        "worst": worst,
        "ratio": experts[worst] / methods["naive"]["results"]["RGB"]["accuracy"],
    }


def _ratio(s: str):
    return lambda k, m: ci(r["ratio"], r, scale=1, fmt="{:.2f}") if (r := m["specialist_ratio"].get(s)) else "—"


RATIOS = [
    Col("method", lambda k, m: k),
    *(Col(s, _ratio(s)) for s in ALL_SUBSETS),
    Col("min", lambda k, m: "—" if m["min_specialist_ratio"] is None else f"{m['min_specialist_ratio']:.2f}"),
    Col("below 1 beyond noise", lambda k, m: ", ".join(m["below_specialist_beyond_noise"]) or "none"),
    Col("train min", lambda k, m: f"{m['train_time_s'] / 60:.0f}"),
]


def ratio_lines(rows: dict) -> list[str]:
    """task1's table of the specialist ratios, of the rows that have one."""
    with_ratio = [(k, m) for k, m in rows.items() if m.get("specialist_ratio")]
    if not with_ratio:
        return []
    return [
        "Specialist ratio: accuracy ÷ the specialist's on the same subset (naive, or naive_shallow for the "
        "shallow rows, on RGB; diy_<S> on S), with a paired 95% bootstrap interval over the test images:",
        "",
        table(RATIOS, with_ratio),
        "",
    ]


def reference_lines(b: dict | None) -> list[str]:
    if not b:
        return []
    return [
        f"Specialist reference: diy_{b['worst']} on {b['worst']} ÷ naive on RGB = {100 * b['ratio']:.1f}% "
        f"(specialists run: {', '.join(b['experts'])}): the worst-single ratio of a model exactly as "
        "good as naive on RGB and as the specialists on single channels.",
        "",
    ]

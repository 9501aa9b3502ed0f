"""The DIY specialists as the yardstick of task 1: one model per subset, each scored on its own
subset. A shared model replaces them without loss where its accuracy on every subset is at least
its specialist's; the ratio is read with a paired bootstrap interval over the test images."""

from __future__ import annotations

from typing import Callable

from prismlab.analysis.stats import from_bits, paired_ratio
from prismlab.channels import ALL_SUBSETS


def add_specialist_ratios(rows: dict, naive_of: Callable[[str], str]) -> None:
    """For every row that is not itself a DIY specialist: specialist_ratio = {subset: {"ratio",
    "low", "high", "specialist"}} against the specialist of each subset whose run is in the study
    (naive_of(row) is the RGB one; diy_<S> the others), min_specialist_ratio over those subsets, and
    the subsets below their specialist beyond noise (the interval's top under 1)."""
    for name, row in rows.items():
        if name.startswith("diy_") or "test_correct" not in row:
            continue
        ratios = {}
        for s in ALL_SUBSETS:
            spec = naive_of(name) if s == "RGB" else f"diy_{s}"
            mine, theirs = row["test_correct"].get(s), rows.get(spec, {}).get("test_correct", {}).get(s)
            if mine and theirs:
                ratios[s] = {**paired_ratio(from_bits(mine), from_bits(theirs)), "specialist": spec}
        known = [r["ratio"] for r in ratios.values() if r["ratio"] is not None]
        row["specialist_ratio"] = ratios
        row["min_specialist_ratio"] = min(known) if known else None
        row["below_specialist_beyond_noise"] = [s for s, r in ratios.items() if r["high"] is not None and r["high"] < 1]


def specialists(methods: dict) -> dict | None:
    """DIY as the report meant it: one model per subset, each scored on its own subset (naive is the
    RGB one). Its cost is every specialist's parameters together."""
    own = {s: (f"diy_{s}" if f"diy_{s}" in methods else "naive") for s in ALL_SUBSETS
           if f"diy_{s}" in methods or (s == "RGB" and "naive" in methods)}
    if not any(name.startswith("diy_") for name in own.values()):
        return None
    acc = {s: methods[name]["results"][s]["accuracy"] for s, name in own.items()}
    results = {s: {k: v for k, v in methods[name]["results"][s].items() if k in ("accuracy", "ci")}
               for s, name in own.items()}
    return {"results": results, "models": own,
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

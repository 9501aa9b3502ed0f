"""Copy the results files into the READMEs, so that no figure in them is typed by hand.

Every `<!-- results:NAME -->` ... `<!-- /results:NAME -->` block gets benchmarks/results/NAME.md, with
its links made relative to the README that holds it; a `<!-- headline -->` ... `<!-- /headline -->`
block gets the small headline tables, computed from the results JSON files (HEADLINE_FILES).

    python benchmarks/fill_readme.py          # rewrite README.md and benchmarks/README.md
    python benchmarks/fill_readme.py --check  # exit 1 if either differs from the results files
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
# Each README and the path from its folder to benchmarks/results/.
TARGETS = {ROOT / "README.md": "benchmarks/results/", ROOT / "benchmarks" / "README.md": "results/"}
BLOCK = re.compile(r"<!-- results:(?P<name>[\w.-]+) -->\n.*?<!-- /results:(?P=name) -->", re.S)
HEADLINE = re.compile(r"<!-- headline -->\n.*?<!-- /headline -->", re.S)
HEADLINE_FILES = ("task1-cpu-seeds.json", "task2-cpu-budget.json", "infer-cpu.json")


def block(name: str, results: Path, prefix: str = "benchmarks/results/") -> str:
    path = results / f"{name}.md"
    if not path.exists():
        raise SystemExit(f"a README names results:{name}, but {path} does not exist")
    body = path.read_text().strip()
    if "\n## Model cards" in body:  # the cards stay in the results file; the README explains its rows itself
        body = (
            body[: body.index("\n## Model cards")].strip()
            + f"\n\nModel cards of these rows: in [`{name}.md`]({prefix}{name}.md)."
        )
    body = re.sub(r"^(#{1,4}) ", r"##\1 ", body, flags=re.M)  # a README's results sit under a level-2 heading
    body = re.sub(r"\]\(([\w.-]+\.png)\)", lambda m: f"]({prefix}{m[1]})", body)  # images beside the .md
    return (
        f"<!-- results:{name} -->\n{body}\n\n(from [`{prefix}{name}.md`]({prefix}{name}.md))\n<!-- /results:{name} -->"
    )


def _load(results: Path, name: str) -> dict:
    path = results / name
    if not path.exists():
        raise SystemExit(f"the headline reads {path}, which does not exist")
    return json.loads(path.read_text())


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def headline(results: Path, prefix: str = "benchmarks/results/") -> str:
    """Two small tables: task 1's naive and ours over training seeds, task 2's ResNet34 and ours across
    budgets with their inference speed."""
    seeds, budget, infer = (_load(results, n) for n in HEADLINE_FILES)
    subsets = len(seeds["methods"]["ours"]["results"])
    out = [
        "<!-- headline -->",
        f"**Any-channel convolution** (cpu tier, {seeds['epochs']} epochs at {seeds['image_size']} px): `naive` "
        f"is trained on RGB and zero-fills missing channels; `ours` is one set of weights for all {subsets} subsets. "
        "Test accuracy %, mean over training seeds; the ratio is accuracy over that of a specialist, the same net "
        "trained on that subset alone (naive is itself the RGB one).",
        "",
        "| model | seeds | RGB | worst other subset | lowest ratio to a specialist % "
        "| below a specialist beyond noise |",
        "|---|---|---|---|---|---|",
    ]
    for key in ("naive", "ours"):
        m = seeds["methods"][key]
        res, ratios = m["results"], m["specialist_ratio"]
        worst = min((s for s in res if s != "RGB"), key=lambda s: res[s]["value"])
        low = min(ratios, key=lambda s: ratios[s]["ratio"])
        out.append(
            f"| {key} | {len(m['seeds'])} | {_pct(res['RGB']['value'])} | {_pct(res[worst]['value'])} ({worst}) "
            f"| {_pct(ratios[low]['ratio'])} ({low}) "
            f"| {len(m['below_specialist_beyond_noise'])} of {len(ratios)} subsets |"
        )
    budgets = sorted(budget["sources"], key=int)
    out += [
        "",
        f"**Shallow networks** (cpu tier, {infer['image_size']} px, one recipe for both). Test accuracy % "
        "after each training budget (one study per budget); inference img/s at batch "
        f"{infer['batch']}, each model in its fastest runtime.",
        "",
        f"| model | body layers | params | FLOPs | test acc % at {' / '.join(budgets)} epochs | img/s (runtime) |",
        "|---|---|---|---|---|---|",
    ]
    for key in ("resnet34", "ours"):
        row, inf = budget["rows"][key], infer["models"][key]
        best = inf["best_b64"]
        accs = " / ".join(_pct(row[b]["accuracy"]) for b in budgets)
        name = key if inf["model"] == key else f"{key} (`{inf['model']}`)"
        out.append(
            f"| {name} | {row[budgets[0]]['body_layers']} | {inf['params'] / 1e6:.1f}M "
            f"| {inf['flops'] / 1e6:.1f}M | {accs} | {inf['runtimes'][best]['img_s_b64']:.0f} ({best}) |"
        )
    precision = ", ".join(f"{b} epochs {budget['sources'][b]['precision']}" for b in budgets)
    machine = infer["machine"]
    out += [
        "",
        f"Training precision: {precision}. Inference on {machine['cpu']} ({machine['cores']} cores).",
        "",
        "(from " + ", ".join(f"[`{n}`]({prefix}{n})" for n in HEADLINE_FILES) + ")",
        "<!-- /headline -->",
    ]
    return "\n".join(out)


def fill(readme: str, results: Path, prefix: str = "benchmarks/results/") -> str:
    """readme with every results block and the headline block filled; prefix: the path from the README's
    folder to the results folder, for its links."""
    text = BLOCK.sub(lambda m: block(m["name"], results, prefix), readme)
    if HEADLINE.search(text):
        table = headline(results, prefix)
        text = HEADLINE.sub(lambda m: table, text)
    return text


def main(argv: list[str]) -> int:
    stale = []
    for path, prefix in TARGETS.items():
        old = path.read_text()
        new = fill(old, RESULTS, prefix)
        if new != old:
            stale.append(path)
            if "--check" not in argv:
                path.write_text(new)
    if "--check" in argv and stale:
        names = ", ".join(str(p.relative_to(ROOT)) for p in stale)
        print(f"{names}: results differ from benchmarks/results; run python benchmarks/fill_readme.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

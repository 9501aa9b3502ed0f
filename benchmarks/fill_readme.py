"""Copy each results file into the README: every `<!-- results:NAME -->` ... `<!-- /results:NAME -->`
block gets benchmarks/results/NAME.md, so the README's figures are never typed by hand.

    python benchmarks/fill_readme.py          # rewrite README.md
    python benchmarks/fill_readme.py --check  # exit 1 if README.md differs from the results files
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"<!-- results:(?P<name>[\w.-]+) -->\n.*?<!-- /results:(?P=name) -->", re.S)


def block(name: str, results: Path) -> str:
    path = results / f"{name}.md"
    if not path.exists():
        raise SystemExit(f"README.md names results:{name}, but {path} does not exist")
    body = path.read_text().strip()
    if "\n## Model cards" in body:  # the cards stay in the results file; the README explains its rows itself
        body = body[:body.index("\n## Model cards")].strip() + f"\n\nModel cards of these rows: in [`{name}.md`](benchmarks/results/{name}.md)."
    body = re.sub(r"^# ", "### ", body, flags=re.M)  # the README's results sit under a level-2 heading
    body = re.sub(r"\]\(([\w.-]+\.png)\)", r"](benchmarks/results/\1)", body)  # images beside the .md
    return (f"<!-- results:{name} -->\n{body}\n\n(from [`benchmarks/results/{name}.md`]"
            f"(benchmarks/results/{name}.md))\n<!-- /results:{name} -->")


def fill(readme: str, results: Path) -> str:
    return BLOCK.sub(lambda m: block(m["name"], results), readme)


def main(argv: list[str]) -> int:
    path = ROOT / "README.md"
    old = path.read_text()
    new = fill(old, ROOT / "benchmarks" / "results")
    if "--check" in argv:
        if new != old:
            print("README.md results differ from benchmarks/results; run python benchmarks/fill_readme.py")
            return 1
        return 0
    path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

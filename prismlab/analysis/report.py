"""Markdown reports from run folders: config, per-subset test table, curves and a bar chart."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

from prismlab.analysis.plots import plot_subset_bars
from prismlab.engine.rundir import CURVES, RunDir
from prismlab.files import FolderLock, atomic_write, write_text


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def ci(value: float | None, interval: dict | None, scale: float = 100, fmt: str = "{:.1f}") -> str:
    """'39.2 (36.2-42.3)': a value with its 95% bootstrap interval."""
    if value is None:
        return "—"
    text = fmt.format(scale * value)
    if interval and interval.get("low") is not None:
        text += f" ({fmt.format(scale * interval['low'])}–{fmt.format(scale * interval['high'])})"
    return text


def beyond_noise(interval: dict | None, level: float = 1.0) -> str:
    """Where a ratio's interval lies against `level`: above, below, or level within noise."""
    if not interval or interval.get("low") is None:
        return "—"
    return "above" if interval["low"] > level else "below" if interval["high"] < level else "level within noise"


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def read_tables(md: str) -> list[list[dict[str, str]]]:
    """Each Markdown table of `md` as its rows, each {header: cell}: what md_table wrote, read back."""
    tables, lines = [], md.split("\n")
    for i, line in enumerate(lines[:-1]):
        if line.startswith("| ") and lines[i + 1].startswith("|---"):
            head, rows = _cells(line), []
            for row in lines[i + 2 :]:
                if not row.startswith("| "):
                    break
                rows.append(dict(zip(head, _cells(row))))
            tables.append(rows)
    return tables


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split(" | ")]


def load_run(path: Path) -> dict:
    run = RunDir(path).check()
    info = {"name": path.name, "path": path, "config": run.config().to_dict()}
    test = run.test()
    if test is not None:
        info["test"] = test
    return info


def write_report(runs: list[str | Path], out: str | Path, title: str = "prismlab report") -> Path:
    """Every run is read and the report composed before the first byte is written, each file atomically.
    The folder written into is locked (files.FolderLock), as train locks its run folder: a report never
    writes into a folder another command owns."""
    out = Path(out)
    with FolderLock(out.parent, "write the report elsewhere with --out") if out.parent.is_dir() else nullcontext():
        text, bars, copies = compose([load_run(Path(r)) for r in runs], out, title)
        out.parent.mkdir(parents=True, exist_ok=True)
        if bars:
            plot_subset_bars(bars, out.with_name(out.stem + "-subsets.png"), "test accuracy per channel subset")
        for curves, dest in copies:
            png = curves.read_bytes()
            atomic_write(dest, lambda f, png=png: f.write(png), "chart")
        write_text(out, text, "report")
    return out


def compose(infos: list[dict], out: Path, title: str) -> tuple[str, dict, list[tuple[Path, Path]]]:
    """The report's Markdown, the values of its bar chart, and (curves, copy beside `out`) for each run."""
    parts = [f"# {title}", ""]
    bars = {i["name"]: {s: r["accuracy"] for s, r in i["test"]["results"].items()} for i in infos if "test" in i}
    if bars:
        subsets = list(dict.fromkeys(s for r in bars.values() for s in r))
        parts += [
            "## Test accuracy (%) per channel subset",
            "",
            md_table(
                ["run", *subsets, "mean"],
                [[n, *(pct(r.get(s)) for s in subsets), pct(sum(r.values()) / len(r))] for n, r in bars.items()],
            ),
            "",
        ]
        parts += [f"![per-subset accuracy]({out.stem}-subsets.png)", ""]
    copies = []
    for i in infos:
        cfg = i["config"]
        parts += [f"## Run `{i['name']}`", "", f"Folder: `{i['path']}`", ""]
        keys = [
            "model",
            "model_kw",
            "image_size",
            "epochs",
            "batch_size",
            "optimizer",
            "lr",
            "schedule",
            "channel_sampling",
            "label_smoothing",
            "mixup_alpha",
            "cutmix_alpha",
            "ema_decay",
            "seed",
        ]
        parts += [md_table(["key", "value"], [[k, f"`{cfg.get(k)}`"] for k in keys]), ""]
        if "test" in i:
            t = i["test"]
            parts += [
                f"Test split `{t['split']}` ({t['n']} images):",
                "",
                md_table(
                    ["subset", "n", "accuracy (%)", "loss"],
                    [[s, r["n"], pct(r["accuracy"]), f"{r['loss']:.3f}"] for s, r in t["results"].items()],
                ),
                "",
            ]
        curves = i["path"] / CURVES
        if curves.exists():
            dest = out.with_name(f"{out.stem}-{i['name']}-curves.png")
            if curves.resolve() != dest.resolve():
                copies.append((curves, dest))
            parts += [f"![curves of {i['name']}]({dest.name})", ""]
    parts += model_cards(infos)
    return "\n".join(parts), bars, copies


def model_cards(infos: list[dict]) -> list[str]:
    """The cards of the models and adapters the runs used, costed at the first run's image size."""
    from prismlab.models.cards import cards_section

    cfgs = [i["config"] for i in infos]
    return cards_section(
        [c["model"] for c in cfgs],
        int(cfgs[0].get("image_size") or 64),
        [(c.get("model_kw") or {}).get("adapter", "naive") for c in cfgs],
    )

"""What each `prismlab` command does, given its parsed arguments (prismlab/cli.py parses them and
calls these): a library call, and what it prints."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import yaml


def _table(header: list[str], rows: list[list]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    return "\n".join(lines + [fmt.format(*map(str, r)) for r in rows])


def cmd_data_synth(a) -> int:
    from prismlab.data.synth import make_synthetic

    out = make_synthetic(a.out, seed=a.seed)
    print(f"wrote synthetic data set to {out}")
    return 0


def cmd_models(a) -> int:
    from prismlab.models import list_models
    from prismlab.models.registry import ADAPTERS, MODELS

    if a.cards:
        from prismlab.models.cards import cards_markdown

        print(cards_markdown(MODELS.names(), a.size, ADAPTERS.names()), end="")
        return 0
    print(_table(["model", "description"], [[k, v] for k, v in list_models().items()]))
    print(f"\nEvery model takes adapter={'|'.join(ADAPTERS.names())} (model_kw.adapter=...).")
    return 0


def cmd_train(a) -> int:
    from prismlab.engine.resume import train_config
    from prismlab.engine.train import train

    given = [f"{key}={val}" for key, val in (("data", a.data), ("out", a.out)) if val]
    cfg, resume = train_config(a.config, [*a.overrides, *given, *["skip_bad=true"] * a.skip_bad], a.resume)
    out = train(cfg, resume=resume)
    if os.environ.get("RANK", "0") == "0":
        _print_test(out)
        print(f"run folder: {out}")
    return 0


def _print_test(out: Path) -> None:
    """The final test, per subset, as `prismlab eval` prints it."""
    from prismlab.engine.rundir import RunDir

    test = RunDir(out).test()
    if test:
        rows = [[s, r["n"], f"{100 * r['accuracy']:.2f}", f"{r['loss']:.4f}"] for s, r in test["results"].items()]
        print(f"test ({test['split']}, best.pt):")
        print(_table(["subset", "n", "accuracy %", "loss"], rows))


def cmd_eval(a) -> int:
    from prismlab.engine.evaluate import evaluate_checkpoint

    res = evaluate_checkpoint(a.checkpoint, a.split, a.channels, a.size, skip_bad=a.skip_bad, bands=a.bands)
    for msg in res["skipped"]:
        print(f"skipped {msg}", file=sys.stderr)
    rows = [[s, r["n"], f"{100 * r['accuracy']:.2f}", f"{r['loss']:.4f}"] for s, r in res["results"].items()]
    print(_table(["subset", "n", "accuracy %", "loss"], rows))
    if a.json:
        from prismlab.files import write_text

        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        write_text(a.json, json.dumps(res, indent=2), "evaluation results")  # atomic: a full disk keeps the old file
        print(f"wrote {a.json}")
    return 0


def cmd_predict(a) -> int:
    from prismlab.engine.predict import predict

    for r in predict(a.checkpoint, a.images, a.channels, a.topk, a.size, a.json):
        how = {"gray": ", gray file", "bands": ", its bands as these channels", "rgb": ""}[r["read_as"]]
        print(f"{r['image']} (channels {r['channels']}{how})")
        for t in r["top"]:
            print(f"  {t['prob']:.3f}  {t['class']}")
    return 0


def cmd_export(a) -> int:
    from prismlab.deploy.onnx_export import DEPLOY_HINT, TOLERANCE, export_checkpoint

    for r in export_checkpoint(a.checkpoint, a.out, a.channels, a.size):
        dims = "batch, height, width" if r["dynamic_hw"] else f"batch (height and width fixed at {r['size']})"
        shapes = " and ".join("x".join(map(str, s)) for s in r["checked_shapes"])
        check = (
            f"onnxruntime matches PyTorch: max |logit diff| {r['max_abs_diff']:.1e} <= {TOLERANCE:g} on {shapes}"
            if r["max_abs_diff"] is not None
            else f"parity not checked: no onnxruntime ({DEPLOY_HINT})"
        )
        what = (
            f"one file for every subset: {', '.join(r['subsets'])}; inputs image and present"
            if "subsets" in r
            else f"channels {r['channels']}, ids {r['channel_ids']}"
        )
        print(f"wrote {r['path']} ({what}; dynamic {dims}); {check}")
    return 0


def cmd_report(a) -> int:
    from prismlab.analysis.report import write_report

    out = write_report(a.runs, a.out or Path(a.runs[0]) / "report.md")
    print(f"wrote {out}")
    return 0


def cmd_layers(a) -> int:
    from prismlab.analysis.flops import count_flops, count_params
    from prismlab.analysis.layers import count_layers
    from prismlab.engine.config import split_kv
    from prismlab.models import create_model
    from prismlab.models.fuse import inference_form

    kw = {}
    for s in a.model_kw:
        k, v = split_kv(s)
        kw[k] = yaml.safe_load(v)
    model = create_model(a.model, num_classes=a.num_classes, **kw)
    lc = count_layers(model, a.size)
    print(f"{a.model}: body layers {lc.body}, total with stem and head {lc.total}")
    fused = inference_form(model)
    print(
        f"inference form: params {count_params(fused):,}  FLOPs at {a.size}x{a.size}: "
        f"{count_flops(fused, a.size):,}  (training form: params {count_params(model):,})"
    )
    if a.verbose:
        print("longest path: " + " -> ".join(lc.path))
    return 0


def cmd_demo(a) -> int:
    from prismlab.bench.demo import run_demo

    out = run_demo(a.data, a.out, a.epochs, argv=a.argv)
    print(f"report: {out}")
    return 0

"""The `prismlab` command. User errors print one line and exit 2 (file-system errors 1); Ctrl-C exits 130."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

import yaml

from prismlab.errors import PrismError, first_line


def _table(header: list[str], rows: list[list]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*map(str, r)) for r in rows])


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
    from prismlab.engine.config import make_config
    from prismlab.engine.train import train

    overrides = list(a.overrides)
    for key, val in (("data", a.data), ("out", a.out)):
        if val:
            overrides.append(f"{key}={val}")
    if a.skip_bad:
        overrides.append("skip_bad=true")
    resume = None
    if a.resume:
        resume, run_config = resume_target(Path(a.resume), a.config, overrides)
        if not any(o.startswith("out=") for o in overrides):
            overrides.append(f"out={resume.parent}")  # a resume continues in the run's own folder
        cfg = (make_config(None, {**run_config.to_dict(), **dict(_split_overrides(overrides))})
               if run_config is not None else make_config(a.config, overrides))
    else:
        cfg = make_config(a.config, overrides)
    if not cfg.data:
        raise PrismError("no data: pass --data DIR (or set data: in the config)")
    out = train(cfg, resume=resume)
    if os.environ.get("RANK", "0") == "0":
        _print_test(out)
        print(f"run folder: {out}")
    return 0


def resume_target(resume: Path, config: str | None, overrides: list[str]):
    """--resume RUN_DIR or CKPT -> (the checkpoint, the run's own config or None when --config is given).
    Without --config the run's config.yaml is the config, and only the keys a resume may change
    (config.RESUME_OVERRIDES) can be given on top of it."""
    from prismlab.engine.config import RESUME_OVERRIDES
    from prismlab.engine.rundir import LAST, RunDir

    ckpt = resume / LAST if resume.is_dir() else resume
    if not ckpt.is_file():
        raise PrismError(f"{ckpt}: checkpoint not found")
    if config:
        return ckpt, None
    run = RunDir(ckpt.parent)
    if not run.exists():
        raise PrismError(f"{ckpt.parent}: not a run folder (no config.yaml) to resume; pass --config too")
    from prismlab.engine.config import make_config

    own = run.config().to_dict()
    given = make_config(None, {**own, **dict(_split_overrides(overrides))}).to_dict()
    # A key given again with the run's own value changes nothing: the command that started the run works.
    fixed = [k for k, _ in _split_overrides(overrides) if k.split(".")[0] not in (*RESUME_OVERRIDES, "out")
             and given.get(k.split(".")[0]) != own.get(k.split(".")[0])]
    if "model" in fixed:
        raise PrismError(f"{ckpt}: holds a {own['model']} model, not {given['model']}; a resume continues its run's "
                         f"own config (start a new run with another --out for another model)")
    if fixed:
        raise PrismError(f"{', '.join(fixed)}: a resume continues {ckpt.parent}'s own config; it may change only "
                         f"{', '.join(RESUME_OVERRIDES)} (start a new run with another --out for the rest)")
    return ckpt, run.config()


def _split_overrides(overrides: list[str]) -> list[tuple[str, str]]:
    from prismlab.engine.config import _split_kv

    return [_split_kv(o) for o in overrides]


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
        check = (f"onnxruntime matches PyTorch: max |logit diff| {r['max_abs_diff']:.1e} <= {TOLERANCE:g} on {shapes}"
                 if r["max_abs_diff"] is not None else f"parity not checked: no onnxruntime ({DEPLOY_HINT})")
        what = (f"one file for every subset: {', '.join(r['subsets'])}; inputs image and present"
                if "subsets" in r else f"channels {r['channels']}, ids {r['channel_ids']}")
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
    from prismlab.engine.config import _split_kv
    from prismlab.models import create_model
    from prismlab.models.fuse import inference_form

    kw = {}
    for s in a.model_kw:
        k, v = _split_kv(s)
        kw[k] = yaml.safe_load(v)
    model = create_model(a.model, num_classes=a.num_classes, **kw)
    lc = count_layers(model, a.input_size)
    print(f"{a.model}: body layers {lc.body}, total with stem and head {lc.total}")
    fused = inference_form(model)
    print(f"inference form: params {count_params(fused):,}  FLOPs at {a.input_size}x{a.input_size}: "
          f"{count_flops(fused, a.input_size):,}  (training form: params {count_params(model):,})")
    if a.verbose:
        print("longest path: " + " -> ".join(lc.path))
    return 0


def cmd_upgrade(a) -> int:
    from prismlab.engine.upgrade import upgrade

    for line in upgrade(a.runs):
        print(line)
    return 0


def cmd_bench(a) -> int:
    from prismlab.bench import run_bench
    from prismlab.bench.common import StudyArgs

    run_bench(a.study, StudyArgs(
        tier=a.tier, data=Path(a.data) if a.data else None, methods=a.methods, epochs=a.epochs, steps=a.steps,
        amp=a.amp, recipe=a.recipe, size=a.size, against=Path(a.against) if a.against else None,
        results_dir=Path(a.results_dir), seed=a.seed, argv=a.argv,
        **({"runs_dir": Path(a.runs_dir)} if a.runs_dir else {})))
    return 0


def cmd_demo(a) -> int:
    from prismlab.bench.demo import run_demo

    out = run_demo(a.data, a.out, a.epochs, argv=a.argv)
    print(f"report: {out}")
    return 0


def positive_int(text: str) -> int:
    """argparse type: a whole number > 0 (argparse turns the ValueError into a usage error)."""
    value = int(text)
    if value <= 0:
        raise ValueError(text)
    return value


def build_parser() -> argparse.ArgumentParser:
    from prismlab.engine.config import keys_help

    from prismlab import __version__

    p = argparse.ArgumentParser(prog="prismlab", description=__doc__)
    p.add_argument("--version", action="version", version=f"prismlab {__version__}")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (repeatable): the models and adapters it registers with "
                   "prismlab.register_model become names for model=, eval and predict")
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("data", help="data set tools").add_subparsers(dest="data_cmd", required=True)
    s = d.add_parser("synth", help="write the synthetic data set in the course layout")
    s.add_argument("out")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=cmd_data_synth)

    mo = sub.add_parser("models", help="list registered models")
    mo.add_argument("--cards", action="store_true", help="every model's and adapter's card: principle, reference, "
                    "params and FLOPs counted at --size")
    mo.add_argument("--size", type=positive_int, default=64, help="image size of the cards' cost (default 64)")
    mo.set_defaults(fn=cmd_models)

    t = sub.add_parser("train", help="train a model from a YAML config", epilog=keys_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--config", help="a YAML file of config keys, or a preset's name: ours (the headline any-channel "
                   "model), task1-cpu, task2-cpu, ... (prismlab/configs/)")
    t.add_argument("--data", help="sets data=")
    t.add_argument("--out", help="sets out=")
    t.add_argument("--resume", metavar="RUN_DIR|CKPT", help="continue a run: its folder (or its last.pt); without "
                   "--config it takes the run's own config, and key=value may change only epochs, threads, lr and "
                   "the like")
    t.add_argument("--skip-bad", action="store_true", help="skip bad lines/images and list them in the run log")
    t.add_argument("overrides", nargs="*", metavar="key=value")
    t.set_defaults(fn=cmd_train, kv_dest="overrides")

    e = sub.add_parser("eval", help="evaluate a checkpoint on a split, per channel subset")
    e.add_argument("--checkpoint", required=True, help="a best.pt or last.pt")
    e.add_argument("--split", required=True, help="a split file (course layout) or an image folder <root>/<class>/")
    e.add_argument("--channels", default="all", help="subsets to score: all, or e.g. RGB,R,RB (default all); with "
                   "--bands one subset, e.g. RB or R+NIR")
    e.add_argument("--size", type=positive_int, help="image size (default: the training size)")
    e.add_argument("--json", metavar="OUT", help="also write the report as JSON")
    e.add_argument("--skip-bad", action="store_true", help="skip bad lines and images, each listed on stderr")
    e.add_argument("--bands", action="store_true", help="each file's bands are the one subset of --channels, band "
                   "by band (.npy [C,H,W] or [H,W,C], PNG, TIFF of any band count; R+NIR for a model that declares NIR)")
    e.set_defaults(fn=cmd_eval)

    pr = sub.add_parser("predict", help="top-k classes for image files")
    pr.add_argument("images", nargs="+", help="image files (or folders, read recursively)")
    pr.add_argument("--checkpoint", required=True, help="a best.pt or last.pt")
    pr.add_argument("--channels", default="RGB", help="the subset to feed (default RGB); a file with as many bands "
                    "as the subset has channels is read as those channels (a 1-channel file with --channels R is R)")
    pr.add_argument("--topk", type=positive_int, default=5, help="classes per image (default 5)")
    pr.add_argument("--size", type=positive_int, help="image size (default: the training size)")
    pr.add_argument("--json", metavar="OUT", help="also write the predictions as JSON")
    pr.set_defaults(fn=cmd_predict)

    ex = sub.add_parser("export", help="the inference form as ONNX (one file per channel subset), checked with onnxruntime")
    ex.add_argument("--checkpoint", required=True, help="a best.pt or last.pt")
    ex.add_argument("--out", required=True, metavar="FILE.onnx", help="the ONNX file to write (FILE-<SUBSET>.onnx "
                    "each where several are written)")
    ex.add_argument("--size", type=positive_int, help="example and check size (default: the training size); "
                    "height and width stay dynamic where the model allows it")
    ex.add_argument("--channels", help="subset(s), e.g. RGB or RGB,R,RB or all (default: the trained subset, RGB "
                    "for any-channel models); an any-channel model, or several subsets, give FILE-<SUBSET>.onnx each; "
                    "any: one FILE.onnx for every subset (channelset models; inputs image and present)")
    ex.set_defaults(fn=cmd_export)

    u = sub.add_parser("upgrade", help="check run folders written before format stamps and stamp them")
    u.add_argument("runs", nargs="+", metavar="RUN_DIR")
    u.set_defaults(fn=cmd_upgrade)

    r = sub.add_parser("report", help="Markdown report from run folders")
    r.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders to report on")
    r.add_argument("--out", help="the report's Markdown file (default: RUN_DIR/report.md of the first)")
    r.set_defaults(fn=cmd_report)

    ly = sub.add_parser("layers", help="count a model's layers (torch.fx), params and FLOPs")
    ly.add_argument("model", help="a registered model (prismlab models), or tv:<name> / timm:<name>")
    ly.add_argument("--input-size", type=positive_int, default=64, help="image size the layers and FLOPs are "
                    "counted at (default 64)")
    ly.add_argument("--num-classes", type=positive_int, default=50, help="classes of the model's head (default 50)")
    ly.add_argument("-v", "--verbose", action="store_true", help="also print the longest path of layers")
    ly.add_argument("model_kw", nargs="*", metavar="key=value", help="the model's keywords, as train's "
                    "model_kw.key=value (e.g. adapter=channelset)")
    ly.set_defaults(fn=cmd_layers, kv_dest="model_kw")

    b = sub.add_parser("bench", help="run a study and write benchmarks/results/")
    b.add_argument("study", choices=["task1", "task2", "speed", "infer", "frontier", "seeds"],
                   help="seeds: the task1 files of every --seed N read together (means over seeds)")
    b.add_argument("--data", help="course-layout data folder (default: $PRISMLAB_DATA, else "
                   "../shared/data/mini-imagenet-50 from the working directory)")
    b.add_argument("--tier", choices=["cpu", "gpu"], default="cpu")
    b.add_argument("--methods", default="default", help="task1/task2/infer: default, all, or a comma list of rows (task2, infer default: all)")
    b.add_argument("--epochs", type=positive_int, help="override the tier's epochs (results say so)")
    b.add_argument("--steps", type=positive_int, help="timed batches per throughput measurement (speed: training "
                   "steps, default 12 cpu / 50 gpu; task2: inference batches, default about 3 s; infer: batches of 64, "
                   "default 30); results say so")
    b.add_argument("--amp", choices=["auto", "bf16", "off"], default="auto",
                   help="task2: training precision (engine/precision.py); not auto is its own study, task2-<tier>-bf16")
    b.add_argument("--recipe", default="", help="task2: apply prismlab/configs/recipe-NAME.yaml (e.g. strong: mixup, "
                   "cutmix, weight average) to every row; its own study, task2-<tier>-strong, paired against the plain one")
    b.add_argument("--size", type=positive_int, help="task2: another image size than the tier's (results say so); "
                   "its own study, task2-<tier>-<N>px")
    b.add_argument("--against", metavar="FILE", help="task2: an earlier results file of the same rows (another "
                   "commit's, say): each row's paired accuracy ratio and training speed-up against it")
    b.add_argument("--results-dir", default="benchmarks/results")
    # Under the cache, not the checkout: hours-long runs survive a fresh clone and are resumed there.
    b.add_argument("--runs-dir", help="where the runs live (default: $PRISMLAB_CACHE/bench-runs, "
                   "i.e. ~/.cache/prismlab/bench-runs)")
    b.add_argument("--seed", type=int, default=0, help="training seed; not 0 is its own study, <study>-seedN")
    b.set_defaults(fn=cmd_bench)

    dm = sub.add_parser("demo", help="the main job: both studies, quick, with a report")
    dm.add_argument("--data", help="a course-layout folder (default: the built-in synthetic set)")
    dm.add_argument("--out", default="runs/demo")
    dm.add_argument("--epochs", type=positive_int, help="override the demo's epochs (default 8, task 2: 4)")
    dm.set_defaults(fn=cmd_demo)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops collecting key=value words at the first option after them
    # (`train epochs=3 --resume x lr=0.1`); the later ones belong to the same list.
    dest = getattr(args, "kv_dest", None)
    if extra and dest and all("=" in x and not x.startswith("-") for x in extra):
        getattr(args, dest).extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: cleanup runs, train() keeps its last finished epoch."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.argv = [str(x) for x in (sys.argv[1:] if argv is None else argv)]  # what the results files record
    # A file name that is not UTF-8 is printed escaped, not a traceback.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        for module in args.imports:
            _import(module)
        return args.fn(args)
    except Terminated as e:
        print(f"prismlab: terminated{': ' + str(e) if str(e) else ''}", file=sys.stderr)
        return 143
    except PrismError as e:
        return _fail(str(e), getattr(e, "exit_code", 2))
    except yaml.YAMLError as e:  # a key=value override or model_kw value: all YAML here is the user's
        return _fail(f"invalid YAML value ({first_line(e)})")
    except OSError as e:  # unwritable --out, disk full...: the file and the reason, not a traceback
        return _fail(f"{e.filename}: {e.strerror}" if e.filename and e.strerror else first_line(e), code=1)
    except KeyboardInterrupt as e:
        # train() says what it kept (see engine/train.py); anywhere else there is nothing to keep.
        print(f"prismlab: interrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _import(module: str) -> None:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as e:
        raise PrismError(f"--import {module}: {first_line(e)}") from None


def _fail(message: str, code: int = 2) -> int:
    print(f"prismlab: error: {message}", file=sys.stderr)
    return code



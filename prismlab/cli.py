"""The `prismlab` command. User errors print one line and exit 2 (file-system errors 1); Ctrl-C exits 130."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

import yaml

from prismlab import commands
from prismlab.errors import PrismError, first_line


def positive_int(text: str) -> int:
    """argparse type: a whole number > 0 (argparse turns the ValueError into a usage error)."""
    value = int(text)
    if value <= 0:
        raise ValueError(text)
    return value


def build_parser() -> argparse.ArgumentParser:
    from prismlab import __version__
    from prismlab.engine.config import keys_help

    p = argparse.ArgumentParser(prog="prismlab", description=__doc__)
    p.add_argument("--version", action="version", version=f"prismlab {__version__}")
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (repeatable): the models and adapters it registers with "
        "prismlab.register_model become names for model=, eval and predict",
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("data", help="data set tools").add_subparsers(dest="data_cmd", required=True)
    s = d.add_parser("synth", help="write the synthetic data set in the course layout")
    s.add_argument("out")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=commands.cmd_data_synth)

    mo = sub.add_parser("models", help="list registered models")
    mo.add_argument(
        "--cards",
        action="store_true",
        help="every model's and adapter's card: principle, reference, params and FLOPs counted at --size",
    )
    mo.add_argument("--size", type=positive_int, default=64, help="image size of the cards' cost (default 64)")
    mo.set_defaults(fn=commands.cmd_models)

    t = sub.add_parser(
        "train",
        help="train a model from a YAML config",
        epilog=keys_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument(
        "--config",
        help="a YAML file of config keys, or a preset's name: ours (the headline any-channel "
        "model), task1-cpu, task2-cpu, ... (prismlab/configs/)",
    )
    t.add_argument("--data", help="sets data=")
    t.add_argument("--out", help="sets out=")
    t.add_argument(
        "--resume",
        metavar="RUN_DIR|CKPT",
        help="continue a run: its folder (or its last.pt); without "
        "--config it takes the run's own config, and key=value may change only epochs, threads, lr and "
        "the like",
    )
    t.add_argument("--skip-bad", action="store_true", help="skip bad lines/images and list them in the run log")
    t.add_argument("overrides", nargs="*", metavar="key=value")
    t.set_defaults(fn=commands.cmd_train, kv_dest="overrides")

    e = sub.add_parser("eval", help="evaluate a checkpoint on a split, per channel subset")
    e.add_argument("--checkpoint", required=True, help="a best.pt or last.pt")
    e.add_argument("--split", required=True, help="a split file (course layout) or an image folder <root>/<class>/")
    e.add_argument(
        "--channels",
        default="all",
        help="subsets to score: all, or e.g. RGB,R,RB (default all); with --bands one subset, e.g. RB or R+NIR",
    )
    e.add_argument("--size", type=positive_int, help="image size (default: the training size)")
    e.add_argument("--json", metavar="OUT", help="also write the report as JSON")
    e.add_argument("--skip-bad", action="store_true", help="skip bad lines and images, each listed on stderr")
    e.add_argument(
        "--bands",
        action="store_true",
        help="each file's bands are the one subset of --channels, band "
        "by band (.npy [C,H,W] or [H,W,C], PNG, TIFF of any band count; R+NIR for a model that "
        "declares NIR)",
    )
    e.set_defaults(fn=commands.cmd_eval)

    pr = sub.add_parser("predict", help="top-k classes for image files")
    pr.add_argument("images", nargs="+", help="image files (or folders, read recursively)")
    pr.add_argument("--checkpoint", required=True, help="a best.pt or last.pt")
    pr.add_argument(
        "--channels",
        default="RGB",
        help="the subset to feed (default RGB); a file with as many bands "
        "as the subset has channels is read as those channels (a 1-channel file with --channels R is R)",
    )
    pr.add_argument("--topk", type=positive_int, default=5, help="classes per image (default 5)")
    pr.add_argument("--size", type=positive_int, help="image size (default: the training size)")
    pr.add_argument("--json", metavar="OUT", help="also write the predictions as JSON")
    pr.set_defaults(fn=commands.cmd_predict)

    ex = sub.add_parser(
        "export", help="the inference form as ONNX (one file per channel subset), checked with onnxruntime"
    )
    ex.add_argument("--checkpoint", required=True, help="a best.pt or last.pt")
    ex.add_argument(
        "--out",
        required=True,
        metavar="FILE.onnx",
        help="the ONNX file to write (FILE-<SUBSET>.onnx each where several are written)",
    )
    ex.add_argument(
        "--size",
        type=positive_int,
        help="example and check size (default: the training size); "
        "height and width stay dynamic where the model allows it",
    )
    ex.add_argument(
        "--channels",
        help="subset(s), e.g. RGB or RGB,R,RB or all (default: the trained subset, RGB "
        "for any-channel models); an any-channel model, or several subsets, give FILE-<SUBSET>.onnx each; "
        "any: one FILE.onnx for every subset (channelset models; inputs image and present)",
    )
    ex.set_defaults(fn=commands.cmd_export)

    r = sub.add_parser("report", help="Markdown report from run folders")
    r.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders to report on")
    r.add_argument("--out", help="the report's Markdown file (default: RUN_DIR/report.md of the first)")
    r.set_defaults(fn=commands.cmd_report)

    ly = sub.add_parser("layers", help="count a model's layers (torch.fx), params and FLOPs")
    ly.add_argument("model", help="a registered model (prismlab models), or tv:<name> / timm:<name>")
    ly.add_argument(
        "--size", type=positive_int, default=64, help="image size the layers and FLOPs are counted at (default 64)"
    )
    ly.add_argument("--num-classes", type=positive_int, default=50, help="classes of the model's head (default 50)")
    ly.add_argument("-v", "--verbose", action="store_true", help="also print the longest path of layers")
    ly.add_argument(
        "model_kw",
        nargs="*",
        metavar="key=value",
        help="the model's keywords, as train's model_kw.key=value (e.g. adapter=channelset)",
    )
    ly.set_defaults(fn=commands.cmd_layers, kv_dest="model_kw")

    from prismlab.bench.cli import add_parsers as add_bench_parsers

    add_bench_parsers(sub)

    dm = sub.add_parser("demo", help="the main job: both studies, quick, with a report")
    dm.add_argument("--data", help="a course-layout folder (default: the built-in synthetic set)")
    dm.add_argument("--out", default="runs/demo")
    dm.add_argument("--epochs", type=positive_int, help="override the demo's epochs (default 8, task 2: 4)")
    dm.set_defaults(fn=commands.cmd_demo)
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

"""Checkpoint files: written atomically (temp file, fsync, rename), read with weights_only=True.

A checkpoint holds only tensors and plain Python values, so loading never runs pickled code: a file
that would import anything else (os.system in a crafted pickle) is refused before it can run.
Every problem with a checkpoint file is a one-line DataError naming the file. Which format a
checkpoint must have is engine/rundir.py's business: read and write them through it.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import torch

from prismlab.errors import DataError, PrismError, first_line
from prismlab.files import atomic_write
from prismlab.models import create_model

# What every prismlab checkpoint holds; a training checkpoint (last.pt, best.pt) holds all of these.
REQUIRED = ("model_spec", "model", "config")
TRAINING = ("optimizer", "epoch", "best_acc", "history")


def write_atomic(state: dict, path: str | Path) -> None:
    """torch.save through files.atomic_write: the previous file stays whole if anything fails."""
    atomic_write(path, lambda f: torch.save(state, f), "checkpoint")


def read_weights_only(path: str | Path) -> object:
    """What a checkpoint file holds; a missing, corrupt or code-carrying file is a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {'not a regular file' if path.exists() else 'checkpoint not found'}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: cannot read checkpoint (empty file)")
    with open(path, "rb") as f:
        head = f.read(2)
    # torch writes a zip (PK..) or, before 1.6, a pickle of protocol 2 (0x80 0x02); anything else is
    # no checkpoint and is never handed to an unpickler.
    if not (head == b"PK" or head[:1] == b"\x80"):
        raise DataError(f"{path}: cannot read checkpoint (not a PyTorch file: no zip or pickle header)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about odd pickle protocols on the way to refusing them
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):  # torch's refusal, as opposed to bytes that are no pickle at all
            raise DataError(f"{path}: refused to load: {_refusal(str(e))}") from None
        raise DataError(
            f"{path}: cannot read checkpoint (corrupt or not a PyTorch file; {first_line(e, sentence=True)})"
        ) from None
    except Exception as e:  # noqa: BLE001 - corrupt files raise RuntimeError, KeyError, EOFError, ValueError...
        reason = f"{type(e).__name__}: {first_line(e, sentence=True)}"
        raise DataError(f"{path}: cannot read checkpoint (corrupt or not a PyTorch file; {reason})") from None
    return ckpt


def is_prismlab(ckpt: object) -> bool:
    """Whether a loaded file has the keys every prismlab checkpoint of any format has."""
    return isinstance(ckpt, dict) and all(k in ckpt for k in REQUIRED)


def check_layout(ckpt: object, path: str | Path) -> dict:
    """A loaded file as a prismlab checkpoint, or a DataError saying why it is none."""
    missing = [k for k in REQUIRED if k not in ckpt] if isinstance(ckpt, dict) else list(REQUIRED)
    if missing:
        raise DataError(f"{path}: not a prismlab checkpoint (lacks {', '.join(missing)})")
    spec = ckpt["model_spec"]
    if not (
        isinstance(spec, dict)
        and isinstance(spec.get("name"), str)
        and isinstance(spec.get("num_classes"), int)
        and not isinstance(spec.get("num_classes"), bool)
    ):
        raise DataError(f"{path}: not a prismlab checkpoint (model_spec needs a name and num_classes)")
    if not (
        isinstance(ckpt["model"], dict)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in ckpt["model"].items())
    ):
        raise DataError(f"{path}: not a prismlab checkpoint (its model is not a mapping of names to tensors)")
    if ckpt["config"] is not None and not isinstance(ckpt["config"], dict):
        raise DataError(
            f"{path}: not a prismlab checkpoint (its config is a {type(ckpt['config']).__name__}, not a mapping)"
        )
    classes = ckpt.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise DataError(f"{path}: not a prismlab checkpoint (its classes are not a list of names)")
    return ckpt


def model_from_checkpoint(ckpt: dict, path: str | Path = "checkpoint") -> torch.nn.Module:
    """Rebuild the model a checkpoint describes and load its weights (eval mode). The spec is built
    on the meta device and checked against the tensors the file carries before any memory is
    allocated: a spec that asks for a million classes is refused, not built."""
    spec = dict(ckpt["model_spec"])
    name = spec.pop("name")
    try:
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in create_model(name, **spec).state_dict().items()}
    except PrismError as e:
        raise DataError(f"{path}: its model_spec does not build ({e})") from None
    except Exception as e:  # noqa: BLE001 - a hostile spec can make a builder raise anything
        raise DataError(f"{path}: its model_spec does not build ({type(e).__name__}: {first_line(e)})") from None
    carried = {k: tuple(v.shape) for k, v in ckpt["model"].items()}
    if shapes != carried:
        k = next(k for k in [*shapes, *carried] if shapes.get(k) != carried.get(k))
        raise DataError(
            f"{path}: weights do not fit this model ({k}: its model_spec gives "
            f"{shapes.get(k, 'no such tensor')}, the file holds {carried.get(k, 'none')})"
        )
    model = create_model(name, **spec)
    load_weights(model, ckpt["model"], path)
    return model.eval()


def load_model(checkpoint: str | Path, form: str = "train", channels=None) -> torch.nn.Module:
    """A trained model from a checkpoint file (weights_only=True, format checked), in eval mode:
    form="train" is the model as trained, form="inference" its deployed form (fused, BatchNorm
    folded) for `channels` (a subset name such as "RB", or ids; RGB by default)."""
    from prismlab.channels import subset_ids
    from prismlab.engine.rundir import load_checkpoint
    from prismlab.errors import ConfigError
    from prismlab.models.fuse import inference_form

    if form not in ("train", "inference"):
        raise ConfigError(f"form must be train or inference, got {form!r}")
    model = model_from_checkpoint(load_checkpoint(checkpoint), checkpoint)
    if form == "train":
        return model
    ids = subset_ids(channels) if isinstance(channels, str) else channels
    return inference_form(model, ids)


def load_weights(module: torch.nn.Module | torch.optim.Optimizer, state: dict, path: str | Path) -> None:
    """module.load_state_dict(state), with a one-line DataError when the checkpoint does not fit."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        what = "optimizer state" if isinstance(module, torch.optim.Optimizer) else "weights"
        reason = first_line(e, skip_header=True, sentence=True)
        raise DataError(f"{path}: {what} do not fit this model ({reason})") from None


def check_resumable(ckpt: dict, path: str | Path, model: str) -> None:
    """Whether training can continue from `ckpt` with the config's `model`; a one-line DataError if not."""
    if ckpt.get("weights") == "average":  # best.pt with ema_decay: the average, not the trained weights
        from prismlab.engine.rundir import LAST

        raise DataError(
            f"{path}: holds the weight average (ema_decay), not the weights training continues "
            f"from; resume from {Path(path).with_name(LAST)}"
        )
    missing = [k for k in TRAINING if k not in ckpt]
    if missing:
        raise DataError(f"{path}: cannot resume from it (lacks {', '.join(missing)})")
    if ckpt["model_spec"]["name"] != model:
        raise DataError(f"{path}: holds a {ckpt['model_spec']['name']} model, but the config asks for {model}")
    if not (
        isinstance(ckpt["epoch"], int)
        and isinstance(ckpt["history"], list)
        and isinstance(ckpt["best_acc"], (int, float))
        and isinstance(ckpt["optimizer"], dict)
    ):
        raise DataError(f"{path}: cannot resume from it (its epoch, best_acc, history or optimizer has the wrong type)")


def restore_training(
    ckpt: dict, path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[int, float, list]:
    """Load a training checkpoint (check_resumable) into model and optimizer -> (finished epochs, best
    accuracy, history)."""
    check_resumable(ckpt, path, getattr(model, "spec", {}).get("name"))
    load_weights(model, ckpt["model"], path)
    load_weights(optimizer, ckpt["optimizer"], path)
    return int(ckpt["epoch"]), float(ckpt["best_acc"]), list(ckpt["history"])


def restore_average(ckpt: dict, path: str | Path, average) -> bool:
    """A training checkpoint's weight average (ema_decay) into `average` (engine/ema.py's
    WeightAverage, built from the restored weights; None without ema_decay) -> whether it had one
    to restore: without, the average starts from the weights."""
    if average is None or "ema" not in ckpt:
        return False
    state = ckpt["ema"]
    if not (isinstance(state, dict) and isinstance(state.get("updates"), int) and isinstance(state.get("model"), dict)):
        raise DataError(f"{path}: its weight average (ema) lacks model or updates")
    load_weights(average.model, state["model"], path)
    average.updates = state["updates"]
    return True


def _refusal(message: str) -> str:
    # torch's message is a paragraph that suggests weights_only=False; name the culprit instead.
    found = re.search(r"GLOBAL (\S+)", message)
    culprit = f"it would import {found.group(1)}" if found else "it holds pickle content other than plain weights"
    return f"{culprit}; prismlab loads plain-weights checkpoints only (weights_only=True)"

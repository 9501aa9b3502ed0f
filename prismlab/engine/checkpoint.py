"""Checkpoint files: written atomically (temp file, fsync, rename), read with weights_only=True.

A checkpoint holds only tensors and plain Python values, so loading never runs pickled code: a file
that would import anything else (os.system in a crafted pickle) is refused before it can run.
Every problem with a checkpoint file is a one-line DataError naming the file. Which format a
checkpoint must have is engine/rundir.py's business: read and write them through it.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path

import torch

from prismlab.errors import DataError, first_line
from prismlab.models import create_model

# What every prismlab checkpoint holds; a training checkpoint (last.pt, best.pt) holds all of these.
REQUIRED = ("model_spec", "model", "config")
TRAINING = ("optimizer", "epoch", "best_acc", "history")


def write_atomic(state: dict, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # a crash before this line leaves the previous file intact
    except BaseException:
        tmp.unlink(missing_ok=True)  # e.g. disk full or Ctrl-C mid-write: no stray half file
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # makes the rename itself survive a power cut
    finally:
        os.close(dir_fd)


def read_weights_only(path: str | Path) -> object:
    """What a checkpoint file holds; a missing, corrupt or code-carrying file is a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
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
        raise DataError(f"{path}: cannot read checkpoint (corrupt or not a PyTorch file; "
                        f"{first_line(e, sentence=True)})") from None
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
    if not (isinstance(spec, dict) and isinstance(spec.get("name"), str) and isinstance(spec.get("num_classes"), int)):
        raise DataError(f"{path}: not a prismlab checkpoint (model_spec needs a name and num_classes)")
    return ckpt


def model_from_checkpoint(ckpt: dict, path: str | Path = "checkpoint") -> torch.nn.Module:
    """Rebuild the model a checkpoint describes and load its weights (eval mode)."""
    spec = dict(ckpt["model_spec"])
    model = create_model(spec.pop("name"), **spec)
    load_weights(model, ckpt["model"], path)
    return model.eval()


def load_weights(module: torch.nn.Module | torch.optim.Optimizer, state: dict, path: str | Path) -> None:
    """module.load_state_dict(state), with a one-line DataError when the checkpoint does not fit."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        what = "optimizer state" if isinstance(module, torch.optim.Optimizer) else "weights"
        raise DataError(f"{path}: {what} do not fit this model ({first_line(e, skip_header=True, sentence=True)})") from None


def restore_training(ckpt: dict, path: str | Path, model: torch.nn.Module,
                     optimizer: torch.optim.Optimizer) -> tuple[int, float, list]:
    """Load a training checkpoint into model and optimizer -> (finished epochs, best accuracy, history)."""
    missing = [k for k in TRAINING if k not in ckpt]
    if missing:
        raise DataError(f"{path}: cannot resume from it (lacks {', '.join(missing)})")
    want, have = getattr(model, "spec", {}).get("name"), ckpt["model_spec"]["name"]
    if want != have:
        raise DataError(f"{path}: holds a {have} model, but the config asks for {want}")
    load_weights(model, ckpt["model"], path)
    load_weights(optimizer, ckpt["optimizer"], path)
    return int(ckpt["epoch"]), float(ckpt["best_acc"]), list(ckpt["history"])


def _refusal(message: str) -> str:
    # torch's message is a paragraph that suggests weights_only=False; name the culprit instead.
    found = re.search(r"GLOBAL (\S+)", message)
    culprit = f"it would import {found.group(1)}" if found else "it holds pickle content other than plain weights"
    return f"{culprit}; prismlab loads plain-weights checkpoints only (weights_only=True)"


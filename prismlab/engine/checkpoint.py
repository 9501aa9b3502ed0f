"""Checkpoints: written atomically (temp file, fsync, rename), read with weights_only=True.

A checkpoint holds only tensors and plain Python values, so loading never runs pickled code.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from prismlab.errors import DataError
from prismlab.models import create_model


def save_checkpoint(state: dict, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # a crash before this line leaves the previous file intact
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise DataError(f"{path}: refused to load (not a plain-weights checkpoint: {str(e).splitlines()[0]})") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise DataError(f"{path}: cannot read checkpoint ({str(e).splitlines()[0]})") from None


def model_from_checkpoint(ckpt: dict) -> torch.nn.Module:
    """Rebuild the model a checkpoint describes and load its weights (eval mode)."""
    if "model_spec" not in ckpt or "model" not in ckpt:
        raise DataError("checkpoint lacks model_spec/model: not written by prismlab")
    spec = dict(ckpt["model_spec"])
    model = create_model(spec.pop("name"), **spec)
    model.load_state_dict(ckpt["model"])
    return model.eval()

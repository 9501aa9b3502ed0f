"""The checks a run passes before it writes anything (engine/setup.py runs them first): the config
against the machine and the run folder, the splits, the model against the images, and the
checkpoint a resume continues from. A refused run leaves its folder as it was."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import torch

from prismlab.data.splits import Split, check_classes, load_split
from prismlab.engine import distributed
from prismlab.engine.checkpoint import check_resumable
from prismlab.engine.config import TrainConfig
from prismlab.engine.precision import use_channels_last
from prismlab.engine.rundir import LAST, TEST, RunDir, load_checkpoint
from prismlab.errors import ConfigError, DataError, PrismError, first_line
from prismlab.models import create_model


def resolve_layout(cfg: TrainConfig) -> TrainConfig:
    """data= at an image-folder tree rather than a course-layout folder, with the split keys at their
    defaults: <root>/train (with val and test where present), or <root>/<class>/ as the training split."""
    root = Path(cfg.data)
    defaults = (cfg.train_split, cfg.val_split, cfg.test_split) == ("train.txt", "val.txt", "test.txt")
    if not defaults or not root.is_dir() or (root / "train.txt").exists():
        return cfg
    if (root / "train").is_dir():
        return replace(
            cfg,
            train_split="train",
            val_split="val" if (root / "val").is_dir() else "",
            test_split="test" if (root / "test").is_dir() else "",
        )
    if any(d.is_dir() and not d.name.startswith(".") for d in root.iterdir()):
        return replace(cfg, train_split=".", val_split="", test_split="")
    return cfg


def refuse_before_start(cfg: TrainConfig, device: torch.device, resume: str | Path | None) -> None:
    """A run that would crash, or overwrite another run, is refused before anything is written."""
    use_channels_last(cfg.channels_last, device)  # refuses channels_last=true where oneDNN's kernels crash
    folder = RunDir(cfg.out)
    # Rank 0's folder decides: on several machines only rank 0 writes checkpoints.
    # A best.pt without last.pt is a run killed while writing its first last.pt: nothing to resume, so
    # it may start afresh.
    if resume is None and distributed.rank0_flag(any((folder / n).exists() for n in (LAST, TEST)), device):
        how = f"--resume {folder / LAST} continues it" if (folder / LAST).exists() else "delete it"
        raise PrismError(f"{folder.path}: holds a run already; {how}, or choose another --out")


def read_splits(cfg: TrainConfig) -> tuple[Split, Split | None, Split | None]:
    """The train, val and test entries (nothing decoded yet): a missing split, a bad line or a class
    list other than the training split's stops the run now, not after the training it would follow."""
    train = load_split(Path(cfg.data) / cfg.train_split, skip_bad=cfg.skip_bad)
    others = []
    for key in ("val_split", "test_split"):
        name = getattr(cfg, key)
        if not name:
            others.append(None)
            continue
        path = Path(cfg.data) / name
        if not path.exists():
            raise DataError(f"{path}: {key} not found (set {key}= to run without one)")
        split = load_split(path, num_classes=train.num_classes, skip_bad=cfg.skip_bad)
        check_classes(split, train.classes, f"the training split ({train.source})")
        others.append(split)
    return train, others[0], others[1]


def refuse_oversized(cfg: TrainConfig, num_classes: int, device: torch.device) -> None:
    """The model is built and run on the meta device first (no memory, no compute): one whose keywords
    make it fail on the run's images, or whose training state (weights, gradients, momentum: 3 x
    float32 per parameter) would not fit in this machine's free memory, is refused before it is built."""
    with torch.device("meta"):
        probe = create_model(cfg.model, num_classes=num_classes, **cfg.model_kw)
        try:
            probe.train()(torch.empty(2, 3, cfg.image_size, cfg.image_size))
        except (RuntimeError, ValueError, IndexError) as e:
            raise ConfigError(
                f"model {cfg.model!r} with {cfg.model_kw} cannot run on {cfg.image_size}px images ({first_line(e)})"
            ) from None
    n = sum(p.numel() for p in probe.parameters())
    try:
        free = (
            torch.cuda.mem_get_info(device)[0]
            if device.type == "cuda"
            else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        )
    except (ValueError, OSError, AttributeError):
        return
    if 12 * n > free:
        raise ConfigError(
            f"model {cfg.model} {cfg.model_kw or ''} has {n:,} parameters: about {12 * n / 1e9:.1f} GB "
            f"to train, more than the {free / 1e9:.1f} GB free on {device}"
        )


def resume_checkpoint(resume: str | Path, cfg: TrainConfig) -> dict:
    """The checkpoint a resume continues from, once it fits the config's model and lies in the run
    folder it continues (cfg.out)."""
    ckpt = load_checkpoint(resume)
    check_resumable(ckpt, resume, cfg.model)
    if Path(resume).resolve().parent != Path(cfg.out).resolve():
        home = Path(resume).parent
        raise PrismError(
            f"{resume}: a resume continues the run in its own folder ({home}), not in {cfg.out}; pass --out {home}"
        )
    return ckpt

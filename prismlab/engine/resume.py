"""The config a `prismlab train` command runs with, and what a resume may change: `--resume` continues
a run with its own config.yaml, on top of which only RESUME_OVERRIDES may be given."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from prismlab.engine.config import ADDED_KEYS, TrainConfig, make_config, split_kv
from prismlab.engine.rundir import LAST, RunDir
from prismlab.errors import PrismError

# Extending a budget, another machine's cores or memory layout: expected, not warned of.
RESUME_FREE = ("epochs", "threads", "channels_last")
# What `train --resume RUN_DIR` takes on top of the run's own config: the above, a moved data folder,
# a lower lr after a NaN (warned of), and keys that change how, not what, it computes.
RESUME_OVERRIDES = (*RESUME_FREE, "data", "lr", "skip_bad", "compile", "deterministic", "cache_dir", "log_indices")


def train_config(
    config: str | None, overrides: list[str], resume: str | Path | None
) -> tuple[TrainConfig, Path | None]:
    """--config, key=value overrides and --resume -> (the config to train, the checkpoint to resume or None)."""
    overrides = list(overrides)
    ckpt = None
    if resume:
        ckpt, run_config = resume_target(Path(resume), config, overrides)
        if not any(o.startswith("out=") for o in overrides):
            overrides.append(f"out={ckpt.parent}")  # a resume continues in the run's own folder
        cfg = (
            make_config(None, {**run_config.to_dict(), **dict(map(split_kv, overrides))})
            if run_config is not None
            else make_config(config, overrides)
        )
    else:
        cfg = make_config(config, overrides)
    if not cfg.data:
        raise PrismError("no data: pass --data DIR (or set data: in the config)")
    return cfg, ckpt


def resume_target(resume: Path, config: str | None, overrides: list[str]) -> tuple[Path, TrainConfig | None]:
    """--resume RUN_DIR or CKPT -> (the checkpoint, the run's own config or None when --config is given).
    Without --config the run's config.yaml is the config, and only the keys a resume may change
    (RESUME_OVERRIDES) can be given on top of it."""
    ckpt = resume / LAST if resume.is_dir() else resume
    if not ckpt.is_file():
        raise PrismError(f"{ckpt}: checkpoint not found")
    if config:
        return ckpt, None
    run = RunDir(ckpt.parent)
    if not run.exists():
        raise PrismError(f"{ckpt.parent}: not a run folder (no config.yaml) to resume; pass --config too")
    own = run.config().to_dict()
    pairs = [split_kv(o) for o in overrides]
    given = make_config(None, {**own, **dict(pairs)}).to_dict()
    # A key given again with the run's own value changes nothing: the command that started the run works.
    fixed = [
        k
        for k, _ in pairs
        if k.split(".")[0] not in (*RESUME_OVERRIDES, "out") and given.get(k.split(".")[0]) != own.get(k.split(".")[0])
    ]
    if "model" in fixed:
        raise PrismError(
            f"{ckpt}: holds a {own['model']} model, not {given['model']}; a resume continues its run's "
            f"own config (start a new run with another --out for another model)"
        )
    if fixed:
        raise PrismError(
            f"{', '.join(fixed)}: a resume continues {ckpt.parent}'s own config; it may change only "
            f"{', '.join(RESUME_OVERRIDES)} (start a new run with another --out for the rest)"
        )
    return ckpt, run.config()


def changed_on_resume(saved: dict, cfg: TrainConfig) -> list[str]:
    """What `cfg` changes against the config a checkpoint was trained with ("key: before -> now"),
    among the keys that change what a run computes, except RESUME_FREE."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    before = TrainConfig(**{k: v for k, v in {**ADDED_KEYS, **saved}.items() if k in known}).effective()
    now = cfg.effective()
    before["data"], now["data"] = (str(Path(d["data"]).resolve()) for d in (before, now))  # one folder, two spellings
    return [
        f"{k}: {before.get(k)!r} -> {now.get(k)!r}"
        for k in dict.fromkeys([*before, *now])
        if k not in RESUME_FREE and before.get(k) != now.get(k)
    ]

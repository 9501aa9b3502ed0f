"""`prismlab upgrade RUN_DIR...`: stamps run folders written before format stamps (format 0).

A format-0 folder is stamped only once this code has checked that it reads the folder as what was
trained: every config key known, each missing one a key of LEGACY, each checkpoint loading
(weights_only=True) into the model its config names, the metrics and test report readable.
Anything else is refused in one line, and nothing is written until every folder has passed. Every
folder is locked (files.FolderLock, as train locks its run folder) from the first check to the last write.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from prismlab.engine.checkpoint import check_layout, model_from_checkpoint, read_weights_only
from prismlab.engine.config import ADDED_KEYS, TrainConfig, make_config, read_mapping
from prismlab.engine.rundir import (BEST, CONFIG, FORMAT, LAST, METRICS, TEST, FormatError, RunDir, format_problem,
                                    read_metrics, read_test)
from prismlab.errors import ConfigError, DataError
from prismlab.files import FolderLock

# Keys added to the config after format-0 runs were made, with the value that reproduces what the
# code did before each existed: a format-0 config without one was trained that way. Those added
# since format 1 (config.ADDED_KEYS) a format-1 folder may lack too (engine/rundir.py).
LEGACY = {"subsets_per_batch": 1, "bn_recalibrate": 0, "rgb_view": False, "view_distill": 0.0, **ADDED_KEYS}


@dataclass
class Plan:
    """What stamping one checked folder writes."""

    run: RunDir
    config: TrainConfig
    filled: list[str]  # config keys taken from LEGACY
    checkpoints: dict[str, dict]  # file name -> checkpoint, its config filled likewise


def upgrade(paths: list[str | Path]) -> list[str]:
    """Check every folder, then stamp those not yet stamped -> one line per folder of what was done."""
    with ExitStack() as locks:
        for p in paths:
            if Path(p).is_dir():  # anything else is refused by check() in one line
                locks.enter_context(FolderLock(p))
        plans = [(Path(p), check(p)) for p in paths]
        return [apply(plan) if plan else f"{path}: already format {FORMAT}" for path, plan in plans]


def check(path: str | Path) -> Plan | None:
    """What stamping the folder would write, or None when it already has this format."""
    run = RunDir(path)
    if not run.exists():
        raise DataError(f"{run.path}: not a run folder (no {CONFIG})")
    found = run.format()
    if found == FORMAT:
        return None
    if found != 0:
        raise FormatError(format_problem(run.path, found, run.path))
    config, filled = _filled(read_mapping(run / CONFIG, DataError), run / CONFIG)
    checkpoints = {name: _checked(run / name, config) for name in (BEST, LAST) if (run / name).exists()}
    if (run / METRICS).exists():
        read_metrics(run / METRICS)
    if run.finished():
        read_test(run / TEST)
        if BEST not in checkpoints:
            raise DataError(f"{run.path}: has a test report but no {BEST} it was made with")
    return Plan(run, config, filled, checkpoints)


def apply(plan: Plan) -> str:
    for name, ckpt in plan.checkpoints.items():
        plan.run.save(name, ckpt)
    plan.run.write_config(plan.config)
    plan.run.stamp()  # last: a stamped folder holds nothing of format 0
    filled = ", ".join(f"{k}={LEGACY[k]}" for k in plan.filled)
    return (f"{plan.run.path}: stamped format {FORMAT}" + (f"; config filled with {filled}" if filled else "")
            + (f"; rewrote {', '.join(plan.checkpoints)}" if plan.checkpoints else ""))


def _filled(values: object, path: Path) -> tuple[TrainConfig, list[str]]:
    """A format-0 config with its missing keys at their LEGACY values -> (config, keys filled)."""
    if not isinstance(values, dict):
        raise DataError(f"{path}: its config is not a mapping of config keys")
    known = list(TrainConfig().to_dict())
    unknown = [k for k in values if k not in known]
    if unknown:
        raise DataError(f"{path}: unknown config keys {', '.join(unknown)}; cannot vouch for how it was trained")
    lacking = [k for k in known if k not in values]
    unvouched = [k for k in lacking if k not in LEGACY]
    if unvouched:
        raise DataError(f"{path}: lacks config keys {', '.join(unvouched)}, whose values before they existed are unknown")
    try:
        return make_config(None, {**{k: LEGACY[k] for k in lacking}, **values}), lacking
    except ConfigError as e:
        raise DataError(f"{path}: {e}") from None


def _checked(path: Path, config: TrainConfig) -> dict:
    """A format-0 checkpoint of this run, its config filled, once its weights load into its model."""
    ckpt = check_layout(read_weights_only(path), path)
    if "format" in ckpt:
        raise DataError(f"{path}: stamped format {ckpt['format']!r} in a folder of format 0; cannot vouch for the mix")
    own, _ = _filled(ckpt["config"], path)
    for key in ("model", "model_kw"):
        if getattr(own, key) != getattr(config, key):
            raise DataError(f"{path}: {key} {getattr(own, key)!r} differs from {CONFIG}'s {getattr(config, key)!r}")
    if ckpt["model_spec"]["name"] != config.model:
        raise DataError(f"{path}: holds a {ckpt['model_spec']['name']} model, but {CONFIG} names {config.model}")
    model_from_checkpoint(ckpt, path)  # weights that do not fit the model this code builds are refused here
    return {**ckpt, "config": own.to_dict()}

"""Setting a run up: its folder, locked for the run (own_folder), and everything its epochs use
(setup -> Run): the checks of engine/preflight.py first, then data, model, optimiser and the
checkpoint a resume continues from, and only then the run folder and its log."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from prismlab.data.cache import CachedSplit, build_cache
from prismlab.data.channels import ChannelSampler
from prismlab.data.loader import BatchLoader
from prismlab.data.splits import Split
from prismlab.engine import distributed
from prismlab.engine.checkpoint import restore_average, restore_training
from prismlab.engine.config import TrainConfig
from prismlab.engine.ema import WeightAverage
from prismlab.engine.precision import compile_model, cpu_has_native_bf16, precision_name, use_bf16, use_channels_last
from prismlab.engine.preflight import (
    read_splits,
    refuse_before_start,
    refuse_oversized,
    resolve_layout,
    resume_checkpoint,
)
from prismlab.engine.resume import changed_on_resume
from prismlab.engine.rundir import LOG, RunDir
from prismlab.engine.step import make_optimizer
from prismlab.errors import PrismError
from prismlab.files import FolderBusy, FolderLock, remove_stale_temp
from prismlab.models import create_model

log = logging.getLogger("prismlab.train")


@dataclass(kw_only=True)
class Run:
    """What every epoch of a run uses, built once by setup()."""

    cfg: TrainConfig
    folder: RunDir
    rank: int
    world: int
    device: torch.device
    model: torch.nn.Module  # as trained: wrapped in DDP and torch.compile where asked for
    core: torch.nn.Module  # the un-wrapped model: checkpoints, hooks and evaluation use it
    optimizer: torch.optim.Optimizer
    train_loader: BatchLoader
    val_loader: BatchLoader | None
    bf16: bool  # autocast to bf16 (cfg.amp resolved for this device)
    channels_last: bool  # the model and its training input in channels-last memory
    sampler: ChannelSampler
    classes: list[str] | None  # names by label (classes.txt or the class folders), kept in checkpoints
    test_split: Split | None  # read at the start, decoded for the final test
    ema: WeightAverage | None = None  # with ema_decay: the average is what is validated and deployed
    start_epoch: int = 0
    best_acc: float = -1.0
    history: list[dict] = field(default_factory=list)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def evaluated(self) -> torch.nn.Module:
        """What validation scores and best.pt keeps: the weights' average with ema_decay, else core."""
        return self.ema.model if self.ema is not None else self.core

    @property
    def subsets_per_batch(self) -> int:
        """Channel subsets drawn per training batch: cfg.subsets_per_batch under hcs sampling, else one."""
        return self.cfg.subsets_per_batch if self.cfg.channel_sampling == "hcs" else 1


@contextmanager
def own_folder(cfg: TrainConfig, rank: int, device: torch.device):
    """The run folder, locked by this process for the whole run (rank 0's; only it writes). A folder
    that this call made and that is still empty when the run fails before writing is removed again."""
    folder = Path(cfg.out)
    made = lock = None
    busy = ""
    if rank == 0:
        made = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        try:
            lock = FolderLock(folder, "choose another --out").acquire()
        except FolderBusy as e:
            busy = str(e)
        else:
            remove_stale_temp(folder)
    if distributed.rank0_flag(bool(busy), device):
        if made and not any(folder.iterdir()):
            folder.rmdir()
        raise FolderBusy(busy or f"{folder}: in use by another prismlab command (rank 0 says)")
    try:
        yield
    except BaseException:
        if made and rank == 0 and not any(folder.iterdir()):
            folder.rmdir()  # a fresh run refused before it wrote: as if never started
        raise
    finally:
        if lock is not None:
            lock.release()


def setup(cfg: TrainConfig, resume: str | Path | None, rank: int, world: int, device: torch.device) -> Run:
    """Data, model and optimiser, restored from `resume` where given, then the run folder. Every check
    runs before the first byte is written, so a refused run leaves the folder as it was."""
    cfg = resolve_layout(cfg)
    refuse_before_start(cfg, device, resume)
    train_split, val_split, test_split = read_splits(cfg)
    refuse_oversized(cfg, train_split.num_classes, device)  # a mistyped model_kw fails here, before any decoding
    ckpt = resume_checkpoint(resume, cfg) if resume else None
    _set_torch_globals(cfg)

    # Data: decoded once into the cache, then batches straight from memory.
    train_data, val_data = decode(cfg, train_split, rank), decode(cfg, val_split, rank)
    train_loader, val_loader = _loaders(cfg, train_data, val_data, rank, world, device)

    model = create_model(cfg.model, num_classes=train_data.num_classes, **cfg.model_kw).to(device)
    channels_last = use_channels_last(cfg.channels_last, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    start_epoch, best_acc, history = 0, -1.0, []
    if ckpt is not None:
        start_epoch, best_acc, history = restore_training(ckpt, resume, model, optimizer)
    ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay else None  # from the restored weights
    average_restored = ckpt is not None and restore_average(ckpt, resume, ema)

    # Every check passed: the run folder and its log.
    folder = RunDir(cfg.out)
    if rank == 0:
        folder.start(cfg)
    setup_logging(folder, rank == 0)
    for data in (train_data, val_data):
        log_skipped(cfg, data, rank)
    if ckpt is not None and rank == 0:
        _warn_changed(cfg, ckpt, resume)
    _log_data(cfg, train_data, val_data, train_loader, world)
    if ckpt is not None:
        log.info("resumed from %s at epoch %d", resume, start_epoch)
    if ema is not None and ckpt is not None and not average_restored and rank == 0:
        log.warning("%s holds no weight average: ema_decay starts one from its weights", resume)

    core = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if cfg.compile:
        model = compile_model(model, device)
    bf16 = use_bf16(cfg.amp, device)
    log.info("precision %s, %s, on %s", precision_name(bf16), "channels-last" if channels_last else "NCHW", device)
    if bf16 and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning(
            "amp=bf16 on a CPU without native bf16 (avx512_bf16/amx_bf16): emulated, expect it to be slower than fp32"
        )
    return Run(
        cfg=cfg,
        folder=folder,
        rank=rank,
        world=world,
        device=device,
        model=model,
        core=core,
        optimizer=optimizer,
        train_loader=train_loader,
        val_loader=val_loader,
        bf16=bf16,
        channels_last=channels_last,
        sampler=ChannelSampler(cfg.channel_sampling, cfg.gray_prob),
        classes=train_data.classes,
        test_split=test_split,
        ema=ema,
        start_epoch=start_epoch,
        best_acc=best_acc,
        history=history,
    )


def _set_torch_globals(cfg: TrainConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(cfg.seed)  # the model's initial weights


def _loaders(
    cfg: TrainConfig, train_data: CachedSplit, val_data: CachedSplit | None, rank: int, world: int, device: torch.device
) -> tuple[BatchLoader, BatchLoader | None]:
    train = BatchLoader(
        train_data,
        cfg.batch_size,
        train=True,
        seed=cfg.seed,
        rank=rank,
        world_size=world,
        augment=cfg.augment,
        scale_min=cfg.scale_min,
        device=device,
    )
    if len(train) == 0:
        raise PrismError(
            f"batch_size {cfg.batch_size} is larger than this rank's {len(train.indices())} training images"
        )
    return train, BatchLoader(val_data, cfg.batch_size, train=False, rank=rank, world_size=world) if val_data else None


def _warn_changed(cfg: TrainConfig, ckpt: dict, resume: str | Path) -> None:
    """Allowed (a lower lr after a NaN, say), but said: the run will differ from an uninterrupted one."""
    changed = changed_on_resume(ckpt["config"], cfg) if ckpt.get("config") else []
    if changed:
        msg = f"resuming {resume} with another config than it trained with: {'; '.join(changed)}"
        log.warning(msg)
        print(f"warning: {msg}", flush=True)


def _log_data(
    cfg: TrainConfig, train_data: CachedSplit, val_data: CachedSplit | None, train_loader: BatchLoader, world: int
) -> None:
    log.info(
        "train %d images, val %d, %d classes, world size %d",
        len(train_data),
        len(val_data) if val_data else 0,
        train_data.num_classes,
        world,
    )
    # Kept, since BatchNorm dislikes tiny batches; said, since each epoch's shuffle skips other images.
    skipped = len(train_data) - len(train_loader) * cfg.batch_size * world
    if skipped:
        log.info(
            "each epoch skips %d of the %d training images: the last partial batch (batch_size %d%s) of "
            "its own shuffle",
            skipped,
            len(train_data),
            cfg.batch_size,
            f", world size {world}" if world > 1 else "",
        )


def setup_logging(folder: RunDir, main: bool) -> None:
    log.setLevel(logging.INFO)
    for h in list(log.handlers):
        log.removeHandler(h)
    if main:
        fh = logging.FileHandler(folder / LOG)
        fh.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(fh)
    else:  # without a handler, logging's last resort would print rank 1's warnings to stderr too
        log.addHandler(logging.NullHandler())
    log.propagate = False


def decode(cfg: TrainConfig, split: Split | None, rank: int) -> CachedSplit | None:
    """A split decoded into the cache (None for none). Rank 0 builds the cache; the others wait, then
    read the same files."""
    if split is None:
        return None
    if rank == 0:
        data = build_cache(split, cfg.image_size, cfg.cache_dir or None, cfg.skip_bad, progress=None)
    distributed.barrier()
    if rank != 0:
        data = build_cache(split, cfg.image_size, cfg.cache_dir or None, cfg.skip_bad)
    return data


def log_skipped(cfg: TrainConfig, data: CachedSplit | None, rank: int) -> None:
    """--skip-bad: each skipped entry in train.log, and the count on the console."""
    if data is None:
        return
    for msg in data.skipped:
        log.warning("skipped %s", msg)
    if data.skipped and rank == 0:
        log.warning("%s: %d bad entries skipped", data.source, len(data.skipped))
        print(f"{data.source}: skipped {len(data.skipped)} bad entries (each is listed in {RunDir(cfg.out) / LOG})")

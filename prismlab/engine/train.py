"""The training loop, readable top to bottom (after torchvision's reference train.py): train()
sets a run up, then each epoch is trained (train_one_epoch) and closed (close_epoch: BatchNorm
re-estimation, validation, best.pt and last.pt), and best.pt is tested at the end.

Reproducibility: every random choice of epoch E is seeded from (seed, E) (prismlab/seeds.py), and
last.pt is written at each epoch's end, so a run killed at any point and resumed with --resume
ends with the same weights as one never interrupted.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from prismlab.channels import parse_subsets
from prismlab.data.cache import CachedSplit, build_cache
from prismlab.data.channels import ChannelSampler
from prismlab.data.loader import BatchLoader
from prismlab.data.splits import Split, check_classes, load_split
from prismlab.engine import distributed
from prismlab.engine.checkpoint import check_resumable, restore_average, restore_training
from prismlab.engine.config import TrainConfig, changed_on_resume
from prismlab.engine.ema import WeightAverage
from prismlab.engine.evaluate import eval_report, evaluate
from prismlab.engine.precision import cpu_has_native_bf16, precision_name, use_bf16, use_channels_last
from prismlab.engine.rundir import BEST, LAST, LOG, TEST, RunDir, load_checkpoint, mark_interrupted
from prismlab.engine.step import hits, lr_at, make_optimizer, mix_batch, recalibrate_bn, train_step
from prismlab.errors import ConfigError, DataError, PrismError, first_line
from prismlab.files import FolderBusy, FolderLock, remove_stale_temp
from prismlab.models import create_model
from prismlab.seeds import epoch_seed

log = logging.getLogger("prismlab.train")


class TrainingDiverged(PrismError):
    pass


@dataclass
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
    amp: bool
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
    def mix(self) -> int:
        """Subsets drawn per batch."""
        return self.cfg.subsets_per_batch if self.cfg.channel_sampling == "hcs" else 1


def train(cfg: TrainConfig, resume: str | Path | None = None) -> Path:
    rank, world, device = distributed.init()
    with own_folder(cfg, rank, device):
        return _train(setup(cfg, resume, rank, world, device), resume)


def _train(run: Run, resume: str | Path | None) -> Path:
    cfg = run.cfg
    epoch = run.start_epoch
    saved = resume  # the newest checkpoint of a finished epoch: what Ctrl-C keeps and a NaN names
    try:
        for epoch in range(run.start_epoch, cfg.epochs):
            row = train_one_epoch(run, epoch, saved)
            saved = close_epoch(run, epoch, row) or saved
    except TrainingDiverged as e:
        log.error("%s", e)
        raise
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (cli.Terminated)
        # The unfinished epoch is dropped: last.pt keeps the last finished one, so --resume stays exact.
        if not run.main:
            raise
        last = run.folder / LAST
        if not last.exists():  # the folder's own last.pt: saved may lag it when the stop came mid-save
            msg = f"stopped during epoch {epoch + 1}, before any epoch finished; nothing saved"
        else:
            done = mark_interrupted(last, last)
            msg = f"stopped during epoch {epoch + 1}; {last} is from the end of epoch {done} (--resume {last} continues from there)"
        log.info("interrupted: %s", msg)
        raise type(stop)(msg) from None
    distributed.barrier()
    final_test(run)
    distributed.barrier()
    distributed.cleanup()
    return run.folder.path


@contextmanager
def own_folder(cfg: TrainConfig, rank: int, device: torch.device):
    """The run folder, locked by this process for the whole run (rank 0's; only it writes). A folder
    that this call made and that is still empty when the run fails before writing is removed again."""
    folder = Path(cfg.out)
    made = lock = None
    if rank == 0:
        made = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        try:
            lock = FolderLock(folder, "choose another --out").acquire()
        except FolderBusy as e:
            busy = str(e)
        else:
            busy = ""
            remove_stale_temp(folder)
    else:
        busy = ""
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
    (the config against the machine, the splits, the checkpoint against the model) runs before the
    first byte is written, so a refused run leaves the folder as it was."""
    cfg = resolve_layout(cfg)
    refuse_before_start(cfg, device, resume)
    train_split, val_split, test_split = read_splits(cfg)
    refuse_oversized(cfg, train_split.num_classes, device)  # a mistyped model_kw fails here, before any decoding
    ckpt = load_checkpoint(resume) if resume else None
    if ckpt is not None and ckpt.get("weights") == "average":
        raise DataError(f"{resume}: holds the weight average (ema_decay), not the weights training continues "
                        f"from; resume from {Path(resume).with_name(LAST)}")
    if ckpt is not None:
        check_resumable(ckpt, resume, cfg.model)
    if resume is not None and Path(resume).resolve().parent != Path(cfg.out).resolve():
        home = Path(resume).parent
        raise PrismError(f"{resume}: a resume continues the run in its own folder ({home}), not in {cfg.out}; "
                         f"pass --out {home}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(cfg.seed)

    # Data: decoded once into the cache, then batches straight from memory.
    train_data = _decode(cfg, train_split, rank)
    val_data = _decode(cfg, val_split, rank)
    train_loader = BatchLoader(train_data, cfg.batch_size, train=True, seed=cfg.seed, rank=rank,
                               world_size=world, augment=cfg.augment, scale_min=cfg.scale_min, device=device)
    if len(train_loader) == 0:
        raise PrismError(f"batch_size {cfg.batch_size} is larger than this rank's {len(train_loader.indices())} training images")
    val_loader = BatchLoader(val_data, cfg.batch_size, train=False, rank=rank, world_size=world) if val_data else None

    model = create_model(cfg.model, num_classes=train_data.num_classes, **cfg.model_kw).to(device)
    channels_last = use_channels_last(cfg.channels_last, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    start_epoch, best_acc, history = 0, -1.0, []
    if ckpt is not None:
        start_epoch, best_acc, history = restore_training(ckpt, resume, model, optimizer)
    ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay else None
    if ema is not None and ckpt is not None and "ema" in ckpt:
        restore_average(ckpt["ema"], ema, resume)

    folder = RunDir(cfg.out)
    if rank == 0:
        folder.start(cfg)
    _setup_logging(folder, rank == 0)
    _log_skipped(cfg, train_data, rank)
    _log_skipped(cfg, val_data, rank)
    changed = changed_on_resume(ckpt["config"], cfg) if ckpt is not None and ckpt.get("config") else []
    if changed and rank == 0:  # allowed (a lower lr after a NaN, say), but the run no longer matches an uninterrupted one
        msg = f"resuming {resume} with another config than it trained with: {'; '.join(changed)}"
        log.warning(msg)
        print(f"warning: {msg}", flush=True)
    log.info("train %d images, val %d, %d classes, world size %d", len(train_data),
             len(val_data) if val_data else 0, train_data.num_classes, world)
    # Kept, since BatchNorm dislikes tiny batches; said, since each epoch's shuffle skips other images.
    skipped = len(train_data) - len(train_loader) * cfg.batch_size * world
    if skipped:
        log.info("each epoch skips %d of the %d training images: the last partial batch (batch_size %d%s) of "
                 "its own shuffle", skipped, len(train_data), cfg.batch_size,
                 f", world size {world}" if world > 1 else "")
    if ckpt is not None:
        log.info("resumed from %s at epoch %d", resume, start_epoch)
    if ema is not None and ckpt is not None and "ema" not in ckpt and rank == 0:
        log.warning("%s holds no weight average: ema_decay starts one from its weights", resume)
    core = model
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)
    amp = use_bf16(cfg.amp, device)
    log.info("precision %s, %s, on %s", precision_name(amp), "channels-last" if channels_last else "NCHW", device)
    if amp and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning("amp=bf16 on a CPU without native bf16 (avx512_bf16/amx_bf16): emulated, expect it to be slower than fp32")
    return Run(cfg=cfg, folder=folder, rank=rank, world=world, device=device, model=model, core=core,
               optimizer=optimizer, train_loader=train_loader, val_loader=val_loader, amp=amp,
               channels_last=channels_last, sampler=ChannelSampler(cfg.channel_sampling, cfg.gray_prob),
               classes=train_data.classes, test_split=test_split, ema=ema, start_epoch=start_epoch,
               best_acc=best_acc, history=history)


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


def refuse_oversized(cfg: TrainConfig, num_classes: int, device: torch.device) -> None:
    """The model is built and run on the meta device first (no memory, no compute): one whose keywords
    make it fail on the run's images, or whose training state (weights, gradients, momentum: 3 x
    float32 per parameter) would not fit in this machine's free memory, is refused before it is built."""
    with torch.device("meta"):
        probe = create_model(cfg.model, num_classes=num_classes, **cfg.model_kw)
        try:
            probe.train()(torch.empty(2, 3, cfg.image_size, cfg.image_size))
        except (RuntimeError, ValueError, IndexError) as e:
            raise ConfigError(f"model {cfg.model!r} with {cfg.model_kw} cannot run on {cfg.image_size}px images "
                              f"({first_line(e)})") from None
    n = sum(p.numel() for p in probe.parameters())
    try:
        free = (torch.cuda.mem_get_info(device)[0] if device.type == "cuda"
                else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return
    if 12 * n > free:
        raise ConfigError(f"model {cfg.model} {cfg.model_kw or ''} has {n:,} parameters: about {12 * n / 1e9:.1f} GB "
                          f"to train, more than the {free / 1e9:.1f} GB free on {device}")


def resolve_layout(cfg: TrainConfig) -> TrainConfig:
    """data= at an image-folder tree rather than a course-layout folder, with the split keys at their
    defaults: <root>/train (with val and test where present), or <root>/<class>/ as the training split."""
    root = Path(cfg.data)
    defaults = (cfg.train_split, cfg.val_split, cfg.test_split) == ("train.txt", "val.txt", "test.txt")
    if not defaults or not root.is_dir() or (root / "train.txt").exists():
        return cfg
    if (root / "train").is_dir():
        return replace(cfg, train_split="train", val_split="val" if (root / "val").is_dir() else "",
                       test_split="test" if (root / "test").is_dir() else "")
    if any(d.is_dir() and not d.name.startswith(".") for d in root.iterdir()):
        return replace(cfg, train_split=".", val_split="", test_split="")
    return cfg


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


def train_one_epoch(run: Run, epoch: int, saved: str | Path | None) -> dict:
    """One pass over the training split -> the epoch's metrics row (train_* so far)."""
    cfg = run.cfg
    seed = epoch_seed(cfg.seed, epoch, "global")
    torch.manual_seed(seed)
    run.sampler.seed(seed)
    run.train_loader.set_epoch(epoch)
    mix_rng = np.random.default_rng(epoch_seed(cfg.seed, epoch, "mix", run.rank))  # draws only when mixing
    for m in run.core.modules():
        if hasattr(m, "on_epoch"):
            m.on_epoch(epoch, cfg.epochs)
    run.model.train()
    steps_per_epoch = len(run.train_loader)
    t0 = time.perf_counter()
    loss_sum = correct = seen = 0.0
    seen_indices = []
    bar = tqdm(run.train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=None if run.main else True,
               leave=False, mininterval=1.0, dynamic_ncols=True)
    for step, (x, y, idx) in enumerate(bar):
        lr = lr_at(epoch * steps_per_epoch + step, steps_per_epoch * cfg.epochs, cfg, steps_per_epoch)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
        subsets = [run.sampler.sample() for _ in range(run.mix)]
        x, targets = mix_batch(x, y, cfg, mix_rng)
        logits, loss, finite = train_step(run.model, run.optimizer, x, targets, subsets, cfg, run.amp,
                                          run.channels_last)
        if not finite:
            raise TrainingDiverged(
                f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; stopped "
                f"({f'the last good checkpoint is {saved}' if saved else 'no checkpoint was saved'}; try a lower lr)")
        if run.ema is not None:
            run.ema.update(run.core)
        loss_sum += loss.item() * len(y)
        correct += hits(logits, targets)
        seen += len(y)
        if cfg.log_indices:
            seen_indices.append(idx)
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", subset=",".join(subsets))
    loss_sum, correct, seen = distributed.all_sum([loss_sum, correct, seen], run.device)
    elapsed = time.perf_counter() - t0
    if cfg.log_indices:
        torch.save(torch.cat(seen_indices), run.folder.indices_file(run.rank, epoch + 1))
    return {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / seen, "train_acc": correct / seen,
            "time_s": elapsed, "img_s": seen / elapsed}


def close_epoch(run: Run, epoch: int, row: dict) -> Path | None:
    """BatchNorm re-estimation, validation, then (rank 0) best.pt, last.pt and metrics.csv ->
    the last.pt written, None on other ranks."""
    cfg = run.cfg
    model = run.evaluated
    if cfg.bn_recalibrate:
        # The training images, un-augmented as evaluation sees them, in an order of their own: the
        # loader's order for the run seed + 1, fixed by (seed, epoch) like training's.
        calib = run.train_loader.view(seed=cfg.seed + 1, augment=False)
        recalibrate_bn(model, calib, run.sampler, cfg.bn_recalibrate, run.mix, cfg.rgb_view)
    if run.val_loader is not None:
        # Each DDP rank updated its BatchNorm statistics on its own batches; evaluate (on every
        # rank) with rank 0's, the ones its checkpoint holds.
        distributed.broadcast_buffers(model)
        res = evaluate(model, run.val_loader, parse_subsets(cfg.val_subsets), run.device, run.amp)
        row["val_loss"] = sum(r["loss"] for r in res.values()) / len(res)
        row["val_acc"] = sum(r["accuracy"] for r in res.values()) / len(res)
    run.history.append(row)
    acc = row.get("val_acc", row["train_acc"])
    improved = deployable(model) and acc > run.best_acc
    run.best_acc = acc if improved else run.best_acc
    if not run.main:
        return None
    state = _state(run, epoch + 1)
    if improved:
        # best.pt is the deployed form: the evaluated weights, without the training-only average
        run.folder.save(BEST, {**{k: v for k, v in state.items() if k != "ema"}, "model": model.state_dict(),
                               **({"weights": "average"} if run.ema is not None else {})})
    run.folder.save(LAST, state)
    run.folder.write_metrics(run.history)
    log.info("epoch %d: %s", epoch + 1, json.dumps({k: round(v, 4) for k, v in row.items()}))
    print(f"epoch {epoch + 1}/{cfg.epochs} " + " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"),
          flush=True)
    return run.folder / LAST


def final_test(run: Run) -> None:
    """best.pt on every test subset -> eval-test.json."""
    cfg = run.cfg
    test_data = _decode(cfg, run.test_split, run.rank)
    _log_skipped(cfg, test_data, run.rank)
    # Only rank 0 wrote best.pt; on several machines the others may not see it: it sends them the weights.
    if test_data is None or not distributed.rank0_flag(run.main and (run.folder / BEST).exists(), run.device):
        return
    if run.main:
        run.core.load_state_dict(load_checkpoint(run.folder / BEST)["model"])
    distributed.broadcast_buffers(run.core, params=True)
    report = eval_report(run.core, test_data, Path(cfg.data) / cfg.test_split, run.folder / BEST,
                         parse_subsets(cfg.test_subsets), run.device, run.amp, cfg.batch_size, run.rank, run.world)
    if run.main:
        run.folder.write_test({**report, "trained_channels_last": run.channels_last})
        log.info("test: %s", json.dumps({k: round(v["accuracy"], 4) for k, v in report["results"].items()}))


def deployable(model: torch.nn.Module) -> bool:
    """Whether these weights are the model's final form: a net still annealing its deep-training
    activations (a module with `deployable` False) must not become best.pt, since it would not
    fuse to its advertised depth."""
    return all(getattr(m, "deployable", True) for m in model.modules())



def _state(run: Run, epoch: int) -> dict:
    return {"model_spec": dict(run.core.spec), "model": run.core.state_dict(), "optimizer": run.optimizer.state_dict(),
            "epoch": epoch, "best_acc": run.best_acc, "history": run.history, "config": run.cfg.to_dict(),
            "classes": run.classes, "interrupted": False,
            **({"ema": run.ema.state_dict()} if run.ema is not None else {})}


def _setup_logging(folder: RunDir, main: bool) -> None:
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


def _decode(cfg: TrainConfig, split: Split | None, rank: int) -> CachedSplit | None:
    if split is None:
        return None
    # Rank 0 builds the cache; the others wait, then read the same files.
    if rank == 0:
        data = build_cache(split, cfg.image_size, cfg.cache_dir or None, cfg.skip_bad, progress=None)
    distributed.barrier()
    if rank != 0:
        data = build_cache(split, cfg.image_size, cfg.cache_dir or None, cfg.skip_bad)
    return data


def _log_skipped(cfg: TrainConfig, data: CachedSplit | None, rank: int) -> None:
    """--skip-bad: each skipped entry in train.log, and the count on the console."""
    if data is None:
        return
    for msg in data.skipped:
        log.warning("skipped %s", msg)
    if data.skipped and rank == 0:
        log.warning("%s: %d bad entries skipped", data.source, len(data.skipped))
        print(f"{data.source}: skipped {len(data.skipped)} bad entries (each is listed in {RunDir(cfg.out) / LOG})")

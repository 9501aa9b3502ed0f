"""The training loop, readable top to bottom (after torchvision's reference train.py).

Reproducibility: every random choice of epoch E (batch order, augmentation, channel subsets,
dropout) is seeded from (seed, E), and last.pt is written at each epoch's end, so a run killed
at any point and resumed with --resume ends with the same weights as one never interrupted.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from prismlab.analysis.plots import plot_curves
from prismlab.data.cache import build_cache
from prismlab.data.channels import ChannelSampler, parse_subsets, to_subset
from prismlab.data.loader import BatchLoader
from prismlab.data.splits import load_split
from prismlab.engine import distributed
from prismlab.engine.checkpoint import load_checkpoint, mark_interrupted, restore_training, save_checkpoint
from prismlab.engine.config import TrainConfig
from prismlab.engine.evaluate import evaluate
from prismlab.engine.precision import cpu_has_native_bf16, precision_name, use_bf16
from prismlab.errors import PrismError
from prismlab.models import create_model
from prismlab.seeds import epoch_seed

log = logging.getLogger("prismlab.train")


class TrainingDiverged(PrismError):
    pass


def lr_at(step: int, total: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """Linear warm-up, then cosine to zero. 'onecycle' warms up over the first 30% of steps."""
    warm = int(0.3 * total) if cfg.schedule == "onecycle" else int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * t))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on norms, biases and embeddings (1-d parameters), as is standard.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def forward_subsets(model, x: torch.Tensor, subsets: list[str], channels_last: bool = False,
                    rgb_view: bool = False) -> torch.Tensor:
    """Logits for a batch seen through one subset, or through several: equal chunks, one subset each.
    rgb_view: the whole batch is also seen in RGB, first: logits [2N] = RGB view, then the subsets'."""
    parts = [to_subset(c, s) for c, s in zip(x.chunk(len(subsets)), subsets)]
    if rgb_view:
        parts.insert(0, to_subset(x, "RGB"))
    if channels_last:
        parts = [(xs.contiguous(memory_format=torch.channels_last), ids) for xs, ids in parts]
    if len(parts) == 1:
        return model(*parts[0])
    return model([xs for xs, _ in parts], [ids for _, ids in parts])


def view_loss(logits: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (loss, the subset views' logits). With rgb_view, logits hold the RGB view then the subset
    views of the same images: both are trained on the labels, and with view_distill > 0 each subset
    view also matches the RGB view's predictions (detached: the RGB view teaches, it is not pulled
    towards the weaker views)."""
    ce = lambda z: F.cross_entropy(z.float(), y, label_smoothing=cfg.label_smoothing)  # noqa: E731
    if not cfg.rgb_view:
        return ce(logits), logits
    rgb, views = logits.chunk(2)
    loss = ce(rgb) + ce(views)
    if cfg.view_distill > 0:
        loss = loss + cfg.view_distill * F.kl_div(views.float().log_softmax(1), rgb.detach().float().log_softmax(1),
                                                  log_target=True, reduction="batchmean")
    return loss, views


def train_step(model, optimizer, x, y, subsets: list[str], cfg: TrainConfig, amp: bool):
    """One optimisation step on a uint8 or [0,1] batch -> (logits, loss). A non-finite loss
    skips the update, so the caller can stop with the weights still good."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = forward_subsets(model, x, subsets, cfg.channels_last, cfg.rgb_view)
        loss, logits = view_loss(logits, y, cfg)
    # Under DDP every rank must agree, or the ranks that skip would leave the others in all-reduce.
    finite = distributed.all_true(bool(torch.isfinite(loss)), x.device)
    if finite:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return logits, loss, finite


@torch.no_grad()
def recalibrate_bn(model: torch.nn.Module, loader: BatchLoader, sampler: ChannelSampler, batches: int,
                   mix: int = 1, rgb_view: bool = False) -> None:
    """Re-estimate BatchNorm running statistics as a plain average over `batches` batches whose
    subsets follow the training mix. With one subset per batch, the usual moving average is
    dominated by the last few batches' subsets; evaluation on any subset then suffers."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or batches <= 0:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = model.training
    model.train()
    for i, (x, _, _) in enumerate(loader):
        if i >= batches:
            break
        forward_subsets(model, x, [sampler.sample() for _ in range(mix)], rgb_view=rgb_view)  # the views training saw
    for m, mom in zip(norms, momenta):
        m.momentum = mom
    model.train(was_training)


def deployable(model: torch.nn.Module) -> bool:
    """Whether these weights are the model's final form: a net still annealing its deep-training
    activations (a module with `deployable` False) must not become best.pt, since it would not
    fuse to its advertised depth."""
    return all(getattr(m, "deployable", True) for m in model.modules())


def _setup_logging(out: Path, main: bool) -> None:
    log.setLevel(logging.INFO)
    for h in list(log.handlers):
        log.removeHandler(h)
    if main:
        fh = logging.FileHandler(out / "train.log")
        fh.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(fh)
    else:  # without a handler, logging's last resort would print rank 1's warnings to stderr too
        log.addHandler(logging.NullHandler())
    log.propagate = False


def _load_data(cfg: TrainConfig, name: str, rank: int, num_classes: int | None = None):
    path = Path(cfg.data) / name
    if not name or not path.exists():
        return None
    split = load_split(path, num_classes=num_classes, skip_bad=cfg.skip_bad)
    # Rank 0 builds the cache; the others wait, then read the same files.
    if rank == 0:
        data = build_cache(split, cfg.image_size, cfg.cache_dir or None, cfg.skip_bad, progress=None)
    distributed.barrier()
    if rank != 0:
        data = build_cache(split, cfg.image_size, cfg.cache_dir or None, cfg.skip_bad)
    for msg in data.skipped:
        log.warning("skipped %s", msg)
    if data.skipped and rank == 0:  # --skip-bad: say so on the console too, with the count
        log.warning("%s: %d bad entries skipped", path, len(data.skipped))
        print(f"{path}: skipped {len(data.skipped)} bad entries (each is listed in {Path(cfg.out) / 'train.log'})")
    return data


def train(cfg: TrainConfig, resume: str | Path | None = None) -> Path:
    rank, world, device = distributed.init()
    main = rank == 0
    out = Path(cfg.out)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    _setup_logging(out, main)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(cfg.seed)

    # Data: decoded once into the cache, then batches straight from memory.
    train_data = _load_data(cfg, cfg.train_split, rank)
    if train_data is None:
        raise PrismError(f"{Path(cfg.data) / cfg.train_split}: training split not found")
    val_data = _load_data(cfg, cfg.val_split, rank, train_data.num_classes)
    log.info("train %d images, val %d, %d classes, world size %d", len(train_data),
             len(val_data) if val_data else 0, train_data.num_classes, world)
    train_loader = BatchLoader(train_data, cfg.batch_size, train=True, seed=cfg.seed, rank=rank,
                               world_size=world, augment=cfg.augment, scale_min=cfg.scale_min, device=device)
    if len(train_loader) == 0:
        raise PrismError(f"batch_size {cfg.batch_size} is larger than this rank's {len(train_loader.indices())} training images")
    val_loader = BatchLoader(val_data, cfg.batch_size, train=False, rank=rank, world_size=world) if val_data else None

    # Model and optimiser.
    model = create_model(cfg.model, num_classes=train_data.num_classes, **cfg.model_kw).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    start_epoch, best_acc, history = 0, -1.0, []
    if resume:
        start_epoch, best_acc, history = restore_training(load_checkpoint(resume), resume, model, optimizer)
        log.info("resumed from %s at epoch %d", resume, start_epoch)
    core = model  # the un-wrapped model: checkpoints, hooks and evaluation use it
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)
    amp = use_bf16(cfg.amp, device)
    log.info("precision %s on %s", precision_name(amp), device)
    if amp and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning("amp=bf16 on a CPU without native bf16 (avx512_bf16/amx_bf16): emulated, expect it to be slower than fp32")
    sampler = ChannelSampler(cfg.channel_sampling, cfg.gray_prob)
    val_subsets = parse_subsets(cfg.val_subsets)
    mix = cfg.subsets_per_batch if cfg.channel_sampling == "hcs" else 1  # subsets drawn per batch
    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * cfg.epochs

    epoch = start_epoch
    saved = resume  # the newest checkpoint of a finished epoch: what Ctrl-C keeps and a NaN names
    try:
        for epoch in range(start_epoch, cfg.epochs):
            # Everything random in this epoch follows from (seed, epoch): resume-exact.
            torch.manual_seed(epoch_seed(cfg.seed, epoch, "global"))
            sampler.seed(epoch_seed(cfg.seed, epoch, "global"))
            train_loader.set_epoch(epoch)
            for m in core.modules():
                if hasattr(m, "on_epoch"):
                    m.on_epoch(epoch, cfg.epochs)
            model.train()
            t0 = time.perf_counter()
            loss_sum = correct = seen = 0.0
            seen_indices = []
            bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=None if main else True, leave=False,
                       mininterval=1.0, dynamic_ncols=True)
            for step, (x, y, idx) in enumerate(bar):
                lr = lr_at(epoch * steps_per_epoch + step, total_steps, cfg, steps_per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                subsets = [sampler.sample() for _ in range(mix)]
                logits, loss, finite = train_step(model, optimizer, x, y, subsets, cfg, amp)
                if not finite:
                    raise TrainingDiverged(
                        f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; stopped "
                        f"({f'the last good checkpoint is {saved}' if saved else 'no checkpoint was saved'}; try a lower lr)")
                loss_sum += loss.item() * len(y)
                correct += (logits.argmax(1) == y).sum().item()
                seen += len(y)
                if cfg.log_indices:
                    seen_indices.append(idx)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", subset=",".join(subsets))
            loss_sum, correct, seen = distributed.all_sum([loss_sum, correct, seen], device)
            elapsed = time.perf_counter() - t0
            row = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                   "time_s": elapsed, "img_s": seen / elapsed}
            if cfg.log_indices:
                torch.save(torch.cat(seen_indices), out / f"indices-rank{rank}-epoch{epoch + 1}.pt")
            if cfg.bn_recalibrate:
                # The training images, un-augmented as evaluation sees them, in an order of their own: the
                # loader's order for the run seed + 1, fixed by (seed, epoch) like training's.
                calib = train_loader.view(seed=cfg.seed + 1, augment=False)
                recalibrate_bn(core, calib, sampler, cfg.bn_recalibrate, mix, cfg.rgb_view)
            if val_loader is not None:
                # Each DDP rank updated its BatchNorm statistics on its own batches; evaluate (on
                # every rank) with rank 0's, the ones its checkpoint holds.
                distributed.broadcast_buffers(core)
                res = evaluate(core, val_loader, val_subsets, device, amp)
                row["val_loss"] = sum(r["loss"] for r in res.values()) / len(res)
                row["val_acc"] = sum(r["accuracy"] for r in res.values()) / len(res)
            history.append(row)
            acc = row.get("val_acc", row["train_acc"])
            improved = deployable(core) and acc > best_acc
            best_acc = acc if improved else best_acc
            if main:
                state = _state(core, optimizer, cfg, epoch + 1, best_acc, history)
                if improved:
                    save_checkpoint(state, out / "best.pt")
                save_checkpoint(state, out / "last.pt")
                saved = out / "last.pt"
                _write_metrics(history, out)
                log.info("epoch %d: %s", epoch + 1, json.dumps({k: round(v, 4) for k, v in row.items()}))
                print(f"epoch {epoch + 1}/{cfg.epochs} " + " ".join(
                    f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"), flush=True)
    except TrainingDiverged as e:
        log.error("%s", e)
        raise
    except KeyboardInterrupt:
        # The unfinished epoch is dropped: last.pt keeps the last finished one, so --resume stays exact.
        if not main:
            raise
        if saved is None:
            msg = f"stopped during epoch {epoch + 1}, before any epoch finished; nothing saved"
        else:
            done = mark_interrupted(saved, out / "last.pt")
            msg = (f"stopped during epoch {epoch + 1}; {out / 'last.pt'} is from the end of epoch {done} "
                   f"(--resume {out / 'last.pt'} continues from there)")
        log.info("interrupted: %s", msg)
        raise KeyboardInterrupt(msg) from None
    distributed.barrier()

    # Final test on every subset with the best weights.
    test_data = _load_data(cfg, cfg.test_split, rank, train_data.num_classes) if cfg.test_split else None
    # Only rank 0 wrote best.pt; on several machines the others may not see it: it sends them the weights.
    if test_data is not None and distributed.rank0_flag(main and (out / "best.pt").exists(), device):
        if main:
            core.load_state_dict(load_checkpoint(out / "best.pt")["model"])
        distributed.broadcast_buffers(core, params=True)
        res = evaluate(core, BatchLoader(test_data, cfg.batch_size, train=False, rank=rank, world_size=world),
                       parse_subsets(cfg.test_subsets), device, amp)
        if main:
            report = {"checkpoint": str(out / "best.pt"), "split": str(Path(cfg.data) / cfg.test_split),
                      "n": len(test_data), "size": cfg.image_size,
                      "precision": precision_name(amp), "skipped": test_data.skipped, "results": res}
            (out / "eval-test.json").write_text(json.dumps(report, indent=2))
            log.info("test: %s", json.dumps({k: round(v["accuracy"], 4) for k, v in res.items()}))
    distributed.barrier()
    distributed.cleanup()
    return out


def _state(model, optimizer, cfg, epoch, best_acc, history, interrupted=False) -> dict:
    return {"model_spec": dict(model.spec), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "epoch": epoch, "best_acc": best_acc, "history": history, "config": cfg.to_dict(),
            "classes": class_names(cfg), "interrupted": interrupted}


def class_names(cfg: TrainConfig) -> list[str] | None:
    """classes.txt beside the training split names the labels, when it exists."""
    p = (Path(cfg.data) / cfg.train_split).parent / "classes.txt"
    return [ln.strip() for ln in p.read_text().splitlines() if ln.strip()] if p.is_file() else None


def _write_metrics(history: list[dict], out: Path) -> None:
    keys = list(dict.fromkeys(k for h in history for k in h))
    with open(out / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
    plot_curves(history, out / "curves.png")

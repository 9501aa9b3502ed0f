"""The training loop, readable top to bottom (after torchvision's reference train.py): train()
sets a run up (engine/setup.py), then each epoch is trained (train_one_epoch) and closed
(close_epoch: BatchNorm re-estimation, validation, best.pt and last.pt), and best.pt is tested at
the end (final_test).

Reproducibility: every random choice of epoch E is seeded from (seed, E) (prismlab/seeds.py), and
last.pt is written at each epoch's end, so a run killed at any point and resumed with --resume
ends with the same weights as one never interrupted.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from prismlab.channels import parse_subsets
from prismlab.engine import distributed
from prismlab.engine.config import TrainConfig
from prismlab.engine.evaluate import eval_report, evaluate
from prismlab.engine.rundir import BEST, LAST, load_checkpoint, mark_interrupted
from prismlab.engine.setup import Run, decode, log_skipped, own_folder, setup
from prismlab.engine.step import hits, lr_at, mix_batch, recalibrate_bn, train_step
from prismlab.errors import PrismError
from prismlab.seeds import epoch_seed

log = logging.getLogger("prismlab.train")


class TrainingDiverged(PrismError):
    """The loss became non-finite: the step was skipped and training stopped."""


def train(cfg: TrainConfig, resume: str | Path | None = None) -> Path:
    """Train `cfg` into its run folder (cfg.out), continuing checkpoint `resume` where given -> the folder."""
    rank, world, device = distributed.init()
    with own_folder(cfg, rank, device):
        run = setup(cfg, resume, rank, world, device)
        epoch = run.start_epoch
        saved = resume  # the newest checkpoint of a finished epoch: what Ctrl-C keeps and a NaN names
        try:
            for epoch in range(run.start_epoch, run.cfg.epochs):
                row = train_one_epoch(run, epoch, saved)
                saved = close_epoch(run, epoch, row) or saved
        except TrainingDiverged as e:
            log.error("%s", e)
            raise
        except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (cli.Terminated)
            if not run.main:
                raise
            raise type(stop)(keep_finished_epochs(run, epoch)) from None
        distributed.barrier()
        final_test(run)
        distributed.barrier()
        distributed.cleanup()
    return run.folder.path


def keep_finished_epochs(run: Run, epoch: int) -> str:
    """Ctrl-C during `epoch`: the unfinished epoch is dropped and last.pt, the last finished one, is
    marked interrupted, so --resume stays exact -> what was kept, in a sentence (also in train.log)."""
    last = run.folder / LAST
    if not last.exists():  # the folder's own last.pt: `saved` may lag it when the stop came mid-save
        msg = f"stopped during epoch {epoch + 1}, before any epoch finished; nothing saved"
    else:
        done = mark_interrupted(last, last)
        msg = (
            f"stopped during epoch {epoch + 1}; {last} is from the end of epoch {done} "
            f"(--resume {last} continues from there)"
        )
    log.info("interrupted: %s", msg)
    return msg


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
    bar = tqdm(
        run.train_loader,
        desc=f"epoch {epoch + 1}/{cfg.epochs}",
        disable=None if run.main else True,
        leave=False,
        mininterval=1.0,
        dynamic_ncols=True,
    )
    for step, (x, y, idx) in enumerate(bar):
        lr = lr_at(epoch * steps_per_epoch + step, steps_per_epoch * cfg.epochs, cfg, steps_per_epoch)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
        subsets = [run.sampler.sample() for _ in range(run.subsets_per_batch)]
        x, targets = mix_batch(x, y, cfg, mix_rng)
        logits, loss, finite = train_step(
            run.model, run.optimizer, x, targets, subsets, cfg, run.bf16, run.channels_last
        )
        if not finite:
            raise TrainingDiverged(
                f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; stopped "
                f"({f'the last good checkpoint is {saved}' if saved else 'no checkpoint was saved'}; try a lower lr)"
            )
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
    return {
        "epoch": epoch + 1,
        "lr": lr,
        "train_loss": loss_sum / seen,
        "train_acc": correct / seen,
        "time_s": elapsed,
        "img_s": seen / elapsed,
    }


def close_epoch(run: Run, epoch: int, row: dict) -> Path | None:
    """BatchNorm re-estimation, validation, then (rank 0) best.pt, last.pt and metrics.csv ->
    the last.pt written, None on other ranks."""
    cfg = run.cfg
    model = run.evaluated
    if cfg.bn_recalibrate:
        # The training images, un-augmented as evaluation sees them, in an order of their own: the
        # loader's order for the run seed + 1, fixed by (seed, epoch) like training's.
        calib = run.train_loader.view(seed=cfg.seed + 1, augment=False)
        recalibrate_bn(model, calib, run.sampler, cfg.bn_recalibrate, run.subsets_per_batch, cfg.rgb_view)
    if run.val_loader is not None:
        # Each DDP rank updated its BatchNorm statistics on its own batches; evaluate (on every
        # rank) with rank 0's, the ones its checkpoint holds.
        distributed.broadcast_buffers(model)
        res = evaluate(model, run.val_loader, parse_subsets(cfg.val_subsets), run.device, run.bf16)
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
        run.folder.save(
            BEST,
            {
                **{k: v for k, v in state.items() if k != "ema"},
                "model": model.state_dict(),
                **({"weights": "average"} if run.ema is not None else {}),
            },
        )
    run.folder.save(LAST, state)
    run.folder.write_metrics(run.history)
    log.info("epoch %d: %s", epoch + 1, json.dumps({k: round(v, 4) for k, v in row.items()}))
    print(
        f"epoch {epoch + 1}/{cfg.epochs} " + " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"),
        flush=True,
    )
    return run.folder / LAST


def final_test(run: Run) -> None:
    """best.pt on every test subset -> eval-test.json, with each image's score (test_correct)."""
    cfg = run.cfg
    test_data = decode(cfg, run.test_split, run.rank)
    log_skipped(cfg, test_data, run.rank)
    # Only rank 0 wrote best.pt; on several machines the others may not see it: it sends them the weights.
    if test_data is None or not distributed.rank0_flag(run.main and (run.folder / BEST).exists(), run.device):
        return
    if run.main:
        run.core.load_state_dict(load_checkpoint(run.folder / BEST)["model"])
    distributed.broadcast_buffers(run.core, params=True)
    report = eval_report(
        run.core,
        test_data,
        Path(cfg.data) / cfg.test_split,
        run.folder / BEST,
        parse_subsets(cfg.test_subsets),
        run.device,
        run.bf16,
        cfg.batch_size,
        run.rank,
        run.world,
        per_image=True,
    )
    if run.main:
        run.folder.write_test({**report, "trained_channels_last": run.channels_last})
        log.info("test: %s", json.dumps({k: round(v["accuracy"], 4) for k, v in report["results"].items()}))


def deployable(model: torch.nn.Module) -> bool:
    """Whether these weights are the model's final form: a net still annealing its deep-training
    activations (a module with `deployable` False) must not become best.pt, since it would not
    fuse to its advertised depth."""
    return all(getattr(m, "deployable", True) for m in model.modules())


def _state(run: Run, epoch: int) -> dict:
    return {
        "model_spec": dict(run.core.spec),
        "model": run.core.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "epoch": epoch,
        "best_acc": run.best_acc,
        "history": run.history,
        "config": run.cfg.to_dict(),
        "classes": run.classes,
        "interrupted": False,
        **({"ema": run.ema.state_dict()} if run.ema is not None else {}),
    }

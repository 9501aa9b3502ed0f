"""ONNX export of a checkpoint's inference form (fused, every BatchNorm folded), with a parity check.

A file per subset takes one normalised image batch `image` [N, m, H, W] (the channels of one subset,
ids fixed at export) and returns `logits` [N, classes]. One file for every subset (channels "any", an
any-channel model with the channelset adapter) takes `image` [N, K, H, W] with a plane for each of
the K declared channel ids (zeros where absent) and `present` [K] (1.0 where the channel is there),
see prismlab.models.any_subset. N is always dynamic; H and W are too when the model runs at another
size in PyTorch (every registered model does: they end in global pooling).

Exporter: torch.onnx's torch.export-based one (dynamo=True). The TorchScript exporter is deprecated
since torch 2.9 and warns that it will be removed. Dynamic dims given by name ("batch", "height",
"width") become Dim.DYNAMIC, which accepts the range refinements pooling needs (three 2x2 pools
want H >= 8) and names the ONNX dims. Whether H and W may be dynamic is decided here, by running the
model at a second size: the exporter also writes a model that is fixed to the example's size while
its dims claim otherwise.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from prismlab.channels import parse_subsets, subset_ids
from prismlab.data.channels import band_stats
from prismlab.engine.checkpoint import model_from_checkpoint
from prismlab.engine.rundir import load_checkpoint
from prismlab.errors import ConfigError, PrismError, first_line
from prismlab.models.any_subset import AnySubset, full_input
from prismlab.models.base import declared_of
from prismlab.models.fuse import inference_form

ANY = "any"  # channels="any": one file for every subset
TOLERANCE = 1e-4  # max abs difference on logits between onnxruntime and PyTorch
DEPLOY_HINT = "pip install -e '.[deploy]'"


def need(package: str, what: str = "ONNX export"):
    """Import an optional deploy package, or a one-line error that says how to install it."""
    try:
        return importlib.import_module(package)
    except ImportError:
        raise ConfigError(f"{what} needs the {package} package ({DEPLOY_HINT})") from None


class FixedChannels(nn.Module):
    """A prismlab model with its channel ids fixed: model(x, channels) as model(x)."""

    def __init__(self, model: nn.Module, channels: Sequence[int]):
        super().__init__()
        self.model = model
        self.channels = tuple(int(c) for c in channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.channels)


def example(batch: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def other_size(size: int) -> int:
    """The second size that decides (and checks) dynamic height and width."""
    return size + 8


def inputs_of(wrapped: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The file's inputs for a batch of the wrapped model's channels: (image,), or (image, present)."""
    if isinstance(wrapped, AnySubset):
        return full_input(x, wrapped.subsets[0], len(wrapped.channel_names))
    return (x,)


def fails_at(model: nn.Module, channels: int, size: int) -> str | None:
    """Why the model cannot take a [2, channels, size, size] input, or None when it can."""
    try:
        with torch.no_grad():
            model(*inputs_of(model, example(2, channels, size)))
    except (RuntimeError, ValueError) as e:
        return first_line(e)
    return None


def export_model(
    model: nn.Module,
    channels: Sequence[int],
    size: int,
    path: str | Path,
    metadata: dict | None = None,
    label: str = "the model",
) -> tuple[FixedChannels, bool]:
    """Write `model`'s inference form for these channel ids as ONNX -> (what was exported, dynamic H/W).
    label: how a size error names the model (the checkpoint file, for `prismlab export`)."""
    wrapped = FixedChannels(inference_form(model, channels), channels).eval()
    return wrapped, write_onnx(wrapped, len(wrapped.channels), size, path, metadata, label)


def write_onnx(wrapped: nn.Module, m: int, size: int, path: str | Path, metadata: dict | None, label: str) -> bool:
    """Write a FixedChannels or AnySubset module (m: the channels of its example) -> dynamic H/W."""
    why = fails_at(wrapped, m, size)
    if why:
        raise ConfigError(f"{label} cannot take {size}x{size} input (--size {size}; {why})")
    dynamic_hw = fails_at(wrapped, m, other_size(size)) is None
    need("onnxscript")
    need("onnx")
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
    inputs = inputs_of(wrapped, example(2, m, size))  # batch 2: torch.export fixes a dim whose example is 1
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapped,
            inputs,
            None,
            dynamo=True,
            dynamic_shapes=(axes, None)[: len(inputs)],
            input_names=["image", "present"][: len(inputs)],
            output_names=["logits"],
            verbose=False,
        )
    for key, value in (metadata or {}).items():
        program.model.metadata_props[f"prismlab.{key}"] = value if isinstance(value, str) else json.dumps(value)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path), external_data=False)  # one self-contained file (models here are far below 2 GB)
    return dynamic_hw


def onnx_max_diff(
    path: str | Path, model: nn.Module, inputs: Sequence[torch.Tensor], present: torch.Tensor | None = None
) -> float:
    """Max abs difference between onnxruntime's and PyTorch's outputs over `inputs`; with `present`,
    the file is one for every subset and each input holds every declared channel."""
    ort = need("onnxruntime", "the parity check")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            feed = {"image": x.numpy()} | ({} if present is None else {"present": present.numpy()})
            got = torch.from_numpy(session.run(None, feed)[0])
            worst = max(worst, float((got - model(x)).abs().max()))
    return worst


def parity_inputs(m: int, size: int, dynamic_hw: bool) -> list[torch.Tensor]:
    """The batches a one-subset file is checked on: the export size, and a second one when H/W are dynamic."""
    return [example(2, m, size, seed=1)] + ([example(3, m, other_size(size), seed=2)] if dynamic_hw else [])


def within_tolerance(path: str | Path, diff: float | None) -> float | None:
    """diff, or a PrismError when it is above TOLERANCE (None: not checked)."""
    if diff is not None and not diff <= TOLERANCE:
        raise PrismError(f"{path}: onnxruntime's logits differ from PyTorch's by {diff:.2e} (> {TOLERANCE:g})")
    return diff


def check_every_subset(
    path: str | Path, model: nn.Module, subsets: Sequence[Sequence[int]], k: int, size: int, dynamic_hw: bool
) -> float | None:
    """One file for every subset against the per-subset PyTorch model on each of them (None: no
    onnxruntime). A PrismError above TOLERANCE."""
    worst = 0.0
    for i, ids in enumerate(subsets):
        shapes = [(2, size)] + ([(3, other_size(size))] if dynamic_hw else [])
        xs = [example(n, len(ids), s, seed=10 + i) for n, s in shapes]
        full = [full_input(x, ids, k) for x in xs]
        fixed = FixedChannels(model, ids).eval()
        try:
            diff = onnx_max_diff(path, _Gather(fixed, ids), [f[0] for f in full], full[0][1])
        except ConfigError:  # no onnxruntime: the file is written, the check is not run
            return None
        worst = max(worst, diff)
    return within_tolerance(path, worst)


class _Gather(nn.Module):
    """The per-subset model fed from a full input: its own channels' planes."""

    def __init__(self, model: nn.Module, ids: Sequence[int]):
        super().__init__()
        self.model, self.ids = model, list(ids)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image[:, self.ids])


def output_paths(out: str | Path, subsets: list[str], any_channel: bool) -> dict[str, Path]:
    """subset -> file: --out itself for one subset of a one-subset model, else --out's name + -<SUBSET>."""
    out = Path(out)
    if len(subsets) == 1 and not any_channel:
        return {subsets[0]: out}
    return {s: out.with_name(f"{out.stem}-{s}{out.suffix or '.onnx'}") for s in subsets}


def export_checkpoint(
    checkpoint: str | Path, out: str | Path, channels: str | None = None, size: int | None = None
) -> list[dict]:
    """`prismlab export`: one ONNX file per subset, each checked against the checkpoint's model in
    PyTorch with onnxruntime when it is installed -> one dict per file."""
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, checkpoint)
    cfg = ckpt["config"]
    sampling = str(cfg.get("channel_sampling", "rgb"))
    # A specialist exports the subset it was trained on; an any-channel model (hcs) takes any.
    size = size or int(cfg["image_size"])
    names = ckpt.get("classes") or [str(i) for i in range(ckpt["model_spec"]["num_classes"])]
    name = ckpt["model_spec"]["name"]
    label = f"{checkpoint}: {name}"  # how a size error names the model
    if channels == ANY:
        return [export_every_subset(model, out, size, {"model": name, "classes": names}, label)]
    declared = declared_of(model)
    subsets = parse_subsets(channels or (sampling[6:] if sampling.startswith("fixed:") else "RGB"), declared)
    done = []
    for subset, path in output_paths(out, subsets, sampling == "hcs").items():
        ids = subset_ids(subset, declared)
        meta = {
            "model": name,
            "channels": subset,
            "channel_ids": list(ids),
            "mean": band_stats(ids)[0],
            "std": band_stats(ids)[1],
            "image_size": size,
            "classes": names,
        }
        _, dynamic_hw = export_model(model, ids, size, path, meta, label)
        inputs = parity_inputs(len(ids), size, dynamic_hw)
        try:
            diff = onnx_max_diff(path, FixedChannels(model, ids), inputs)
        except ConfigError:  # no onnxruntime: the file is written, the check is not run
            diff = None
        within_tolerance(path, diff)
        done.append(
            {
                "path": str(path),
                "channels": subset,
                "channel_ids": list(ids),
                "size": size,
                "dynamic_hw": dynamic_hw,
                "max_abs_diff": diff,
                "checked_shapes": [list(x.shape) for x in inputs],
            }
        )
    return done


def export_every_subset(
    model: nn.Module, out: str | Path, size: int, metadata: dict | None = None, label: str = "the model"
) -> dict:
    """One ONNX file that serves every subset (inputs image and present), checked on each subset."""
    wrapped = AnySubset(model).eval()
    k = len(wrapped.channel_names)
    mean, std = band_stats(tuple(range(k)))
    meta = {
        **(metadata or {}),
        "channels": ANY,
        "channel_names": list(wrapped.channel_names),
        "subsets": [list(s) for s in wrapped.subsets],
        "mean": mean,
        "std": std,
        "image_size": size,
        "inputs": "image [N, K, H, W]: every declared channel in id order, zeros where absent; "
        "present [K]: 1.0 where the channel is there",
    }
    dynamic_hw = write_onnx(wrapped, len(wrapped.subsets[0]), size, out, meta, label)
    diff = check_every_subset(out, model, wrapped.subsets, k, size, dynamic_hw)
    names = wrapped.channel_names
    sep = "" if all(len(n) == 1 for n in names) else "+"
    return {
        "path": str(out),
        "channels": ANY,
        "channel_ids": [list(s) for s in wrapped.subsets],
        "subsets": [sep.join(names[i] for i in s) for s in wrapped.subsets],
        "size": size,
        "dynamic_hw": dynamic_hw,
        "max_abs_diff": diff,
        "checked_shapes": [[2, k, size, size]] + ([[3, k, other_size(size), other_size(size)]] if dynamic_hw else []),
    }


def export_onnx(model: nn.Module, path: str | Path, channels: str | Sequence[int] = "RGB", size: int = 64) -> float:
    """The library's export: `model`'s inference form for one channel subset (or "any": one file for
    every subset, inputs image and present) as ONNX at `path`, checked in onnxruntime against PyTorch
    -> the largest logit difference (a PrismError above TOLERANCE)."""
    if channels == ANY:
        diff = export_every_subset(model, path, size)["max_abs_diff"]
        if diff is None:
            raise ConfigError(f"the parity check needs the onnxruntime package ({DEPLOY_HINT})")
        return diff
    ids = subset_ids(channels, declared_of(model)) if isinstance(channels, str) else tuple(channels)
    _, dynamic_hw = export_model(model, ids, size, path)
    inputs = parity_inputs(len(ids), size, dynamic_hw)
    return within_tolerance(path, onnx_max_diff(path, FixedChannels(model, ids).eval(), inputs))

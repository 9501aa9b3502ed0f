"""ONNX export of a checkpoint's inference form (fused, every BatchNorm folded), with a parity check.

The file takes one normalised image batch `image` [N, m, H, W] (the channels of one subset, ids fixed
at export) and returns `logits` [N, classes]. N is always dynamic; H and W are too when the model runs
at another size in PyTorch (every registered model does: they end in global pooling).

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

from prismlab.channels import SUBSETS, parse_subsets
from prismlab.data.channels import MEAN, STD
from prismlab.engine.checkpoint import model_from_checkpoint
from prismlab.engine.rundir import load_checkpoint
from prismlab.errors import ConfigError, PrismError, first_line
from prismlab.models.fuse import inference_form

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


def fails_at(model: nn.Module, channels: int, size: int) -> str | None:
    """Why the model cannot take a [2, channels, size, size] input, or None when it can."""
    try:
        with torch.no_grad():
            model(example(2, channels, size))
    except (RuntimeError, ValueError) as e:
        return first_line(e)
    return None


def export_model(model: nn.Module, channels: Sequence[int], size: int, path: str | Path,
                 metadata: dict | None = None, label: str = "the model") -> tuple[FixedChannels, bool]:
    """Write `model`'s inference form for these channel ids as ONNX -> (what was exported, dynamic H/W).
    label: how a size error names the model (the checkpoint file, for `prismlab export`)."""
    wrapped = FixedChannels(inference_form(model, channels), channels).eval()
    m = len(wrapped.channels)
    why = fails_at(wrapped, m, size)
    if why:
        raise ConfigError(f"{label} cannot take {size}x{size} input (--size {size}; {why})")
    dynamic_hw = fails_at(wrapped, m, other_size(size)) is None
    need("onnxscript")
    need("onnx")
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
    # The example's batch is 2: torch.export fixes a dim whose example size is 1.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(wrapped, (example(2, m, size),), None, dynamo=True, dynamic_shapes=(axes,),
                                    input_names=["image"], output_names=["logits"], verbose=False)
    for key, value in (metadata or {}).items():
        program.model.metadata_props[f"prismlab.{key}"] = value if isinstance(value, str) else json.dumps(value)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path), external_data=False)  # one self-contained file (models here are far below 2 GB)
    return wrapped, dynamic_hw


def onnx_max_diff(path: str | Path, model: nn.Module, inputs: Sequence[torch.Tensor]) -> float:
    """Max abs difference between onnxruntime's and PyTorch's outputs over `inputs`."""
    ort = need("onnxruntime", "the parity check")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
            worst = max(worst, float((got - model(x)).abs().max()))
    return worst


def output_paths(out: str | Path, subsets: list[str], any_channel: bool) -> dict[str, Path]:
    """subset -> file: --out itself for one subset of a one-subset model, else --out's name + -<SUBSET>."""
    out = Path(out)
    if len(subsets) == 1 and not any_channel:
        return {subsets[0]: out}
    return {s: out.with_name(f"{out.stem}-{s}{out.suffix or '.onnx'}") for s in subsets}


def export_checkpoint(checkpoint: str | Path, out: str | Path, channels: str | None = None,
                      size: int | None = None) -> list[dict]:
    """`prismlab export`: one ONNX file per subset, each checked against the checkpoint's model in
    PyTorch with onnxruntime when it is installed -> one dict per file."""
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, checkpoint)
    cfg = ckpt["config"]
    sampling = str(cfg.get("channel_sampling", "rgb"))
    # A specialist exports the subset it was trained on; an any-channel model (hcs) takes any.
    subsets = parse_subsets(channels or (sampling[6:] if sampling.startswith("fixed:") else "RGB"))
    size = size or int(cfg["image_size"])
    names = ckpt.get("classes") or [str(i) for i in range(ckpt["model_spec"]["num_classes"])]
    done = []
    for subset, path in output_paths(out, subsets, sampling == "hcs").items():
        ids = SUBSETS[subset]
        meta = {"model": ckpt["model_spec"]["name"], "channels": subset, "channel_ids": list(ids),
                "mean": [MEAN[i] for i in ids], "std": [STD[i] for i in ids], "image_size": size, "classes": names}
        _, dynamic_hw = export_model(model, ids, size, path, meta, label=f"{checkpoint}: {meta['model']}")
        inputs = [example(2, len(ids), size, seed=1)] + ([example(3, len(ids), other_size(size), seed=2)]
                                                         if dynamic_hw else [])
        try:
            diff = onnx_max_diff(path, FixedChannels(model, ids), inputs)
        except ConfigError:  # no onnxruntime: the file is written, the check is not run
            diff = None
        if diff is not None and not diff <= TOLERANCE:
            raise PrismError(f"{path}: onnxruntime's logits differ from PyTorch's by {diff:.2e} (> {TOLERANCE:g})")
        done.append({"path": str(path), "channels": subset, "channel_ids": list(ids), "size": size,
                     "dynamic_hw": dynamic_hw, "max_abs_diff": diff, "checked_shapes": [list(x.shape) for x in inputs]})
    return done


def export_onnx(model: nn.Module, path: str | Path, channels: str | Sequence[int] = "RGB", size: int = 64) -> float:
    """The library's export: `model`'s inference form for one channel subset as ONNX at `path`, checked
    in onnxruntime against PyTorch -> the largest logit difference (a PrismError above TOLERANCE)."""
    ids = SUBSETS[channels] if isinstance(channels, str) else tuple(channels)
    _, dynamic_hw = export_model(model, ids, size, path)
    inputs = [example(2, len(ids), size, seed=1)] + ([example(3, len(ids), other_size(size), seed=2)] if dynamic_hw else [])
    diff = onnx_max_diff(path, FixedChannels(model, ids).eval(), inputs)
    if not diff <= TOLERANCE:
        raise PrismError(f"{path}: onnxruntime's logits differ from PyTorch's by {diff:.2e} (> {TOLERANCE:g})")
    return diff

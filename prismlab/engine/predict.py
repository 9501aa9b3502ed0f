"""Top-k predictions for image files of any channel count, with a trained checkpoint.

The fastest path prismlab has that keeps the model's output: its inference form (fused, BatchNorm
folded), in channels_last memory, with the images of one channel subset in batches (`prismlab bench
infer` times these runtimes; the form and the layout change the logits by float rounding only).
"""

from __future__ import annotations

from pathlib import Path

import torch

from prismlab.channels import parse_subsets, subset_ids
from prismlab.data.channels import to_subset
from prismlab.data.decode import load_image, resize_center_crop
from prismlab.engine.checkpoint import model_from_checkpoint
from prismlab.engine.rundir import load_checkpoint
from prismlab.errors import ConfigError
from prismlab.models.fuse import inference_form

BATCH = 64


@torch.no_grad()
def predict(checkpoint: str | Path, images: list[str | Path], channels: str = "RGB", topk: int = 5,
            size: int | None = None) -> list[dict]:
    """A gray (1-channel) file is always fed as L: its true channel set. The model's adapter
    applies its gray policy (the naive one repeats L into R, G and B)."""
    subsets = parse_subsets(channels)
    if len(subsets) != 1:
        raise ConfigError(f"--channels takes one subset for predict, got {channels!r} (e.g. RGB, RB or L)")
    subset = subsets[0]
    ckpt = load_checkpoint(checkpoint)
    trained = model_from_checkpoint(ckpt, checkpoint)
    size = size or int(ckpt["config"]["image_size"])
    names = ckpt.get("classes") or [str(i) for i in range(ckpt["model_spec"]["num_classes"])]
    files = []
    for path in images:
        img, gray = load_image(path)
        x = torch.from_numpy(resize_center_crop(img, size)).permute(2, 0, 1)[None]
        files.append({"image": str(path), "channels": "L" if gray else subset, "gray": gray, "x": x})
    for used in dict.fromkeys(f["channels"] for f in files):
        group = [f for f in files if f["channels"] == used]
        # Deployed per subset: a model with per-subset BatchNorm folds that subset's statistics.
        model = inference_form(trained, subset_ids(used)).to(memory_format=torch.channels_last)
        for start in range(0, len(group), BATCH):
            chunk = group[start:start + BATCH]
            xs, ids = to_subset(torch.cat([f.pop("x") for f in chunk]), used)
            probs = model(xs.contiguous(memory_format=torch.channels_last), ids).softmax(1)
            for f, row in zip(chunk, probs):
                p, i = row.topk(min(topk, len(row)))
                f["top"] = [{"class": names[int(c)], "label": int(c), "prob": float(q)} for q, c in zip(p, i)]
    return files

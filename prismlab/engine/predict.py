"""Top-k predictions for image files of any channel count, with a trained checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from prismlab.data.channels import parse_subsets, to_subset
from prismlab.data.decode import load_image, resize_center_crop
from prismlab.engine.checkpoint import load_checkpoint, model_from_checkpoint
from prismlab.errors import ConfigError


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
    model = model_from_checkpoint(ckpt, checkpoint)
    size = size or int(ckpt["config"]["image_size"])
    names = ckpt.get("classes") or [str(i) for i in range(ckpt["model_spec"]["num_classes"])]
    out = []
    for path in images:
        img, gray = load_image(path)
        x = torch.from_numpy(resize_center_crop(img, size)).permute(2, 0, 1)[None]
        used = "L" if gray else subset
        xs, ids = to_subset(x, used)
        probs = model(xs, ids).softmax(1)[0]
        p, i = probs.topk(min(topk, len(probs)))
        out.append({"image": str(path), "channels": used, "gray": gray,
                    "top": [{"class": names[int(c)], "label": int(c), "prob": float(q)} for q, c in zip(p, i)]})
    return out

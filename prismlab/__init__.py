"""prismlab: any-channel convolution and shallow networks for small-scale image classification.

The library in a few names (imported on first use, so `import prismlab` stays light):

    create_model(name, num_classes, **kw)  a registered model, or "tv:<name>" / "timm:<name>"
    any_channel(backbone, adapter=...)      any module with a first Conv2d, behind a channel adapter
    load_model(checkpoint, form=...)        a trained model back from a checkpoint
    to_subset(images, "RB")                 uint8 RGB [N,3,H,W] -> normalised [N,m,H,W] and channel ids
    subset_ids, SUBSETS, CHANNEL_NAMES      channel subsets by name
    register_model, register_adapter        put your own model or adapter in the registry
    inference_form(model, channels)         the fused, BatchNorm-folded form that is deployed
    export_onnx(model, path, channels, size) that form as ONNX, checked in onnxruntime

Every model is called as model(x, channels): x normalised float [N, m, H, W], channels the ids of
its m channels (R=0, G=1, B=2, L=3; declared extra ids after them).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "create_model": "prismlab.models.registry",
    "register_model": "prismlab.models.registry",
    "register_adapter": "prismlab.models.registry",
    "list_models": "prismlab.models.registry",
    "any_channel": "prismlab.models.backbones",
    "inference_form": "prismlab.models.fuse",
    "load_model": "prismlab.engine.checkpoint",
    "to_subset": "prismlab.data.channels",
    "subset_ids": "prismlab.channels",
    "SUBSETS": "prismlab.channels",
    "CHANNEL_NAMES": "prismlab.channels",
    "export_onnx": "prismlab.deploy.onnx_export",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        if name in ("create_model", "register_model", "register_adapter", "list_models"):
            importlib.import_module("prismlab.models")  # every model file registers its models
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'prismlab' has no attribute {name!r}")

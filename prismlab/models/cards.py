"""Model cards: what a registered model or adapter does, where it comes from, and what it costs.

The principle and the reference are what the model file registered (models/registry.py); the cost
is counted here, never typed: parameters as trained and as deployed, and the FLOPs of one image
through the inference form (prismlab.analysis.flops).
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

from prismlab.analysis.flops import count_flops, count_params
from prismlab.channels import RGB_IDS
from prismlab.models.fuse import inference_form
from prismlab.models.registry import ADAPTERS, MODELS, Entry, create_model, make_adapter

NUM_CLASSES = 50  # the course's class count


def model_card(name: str, size: int) -> str:
    model = create_model(name, num_classes=NUM_CLASSES)
    return _card(MODELS.get(name), "model", model, f"{size}x{size} RGB, {NUM_CLASSES} classes, naive adapter", size)


def adapter_card(name: str, size: int, first_layer: nn.Module | None = None) -> str:
    """An adapter's card: as registered, or as a model built it to be its trunk's first conv."""
    if first_layer is None:
        return _card(ADAPTERS.get(name), "adapter", make_adapter(name), f"{size}x{size} RGB, the adapter alone", size)
    setting = f"{size}x{size} RGB, the adapter alone, built as the trunk's first conv (first_layer)"
    return _card(ADAPTERS.get(name), "adapter", first_layer, setting, size)


Adapter = str | tuple[str, nn.Module]  # a name, or a name and the module a model built as its first conv


def cards_markdown(names: Sequence[str], size: int, adapters: Sequence[Adapter] = ()) -> str:
    """The cards of the models `names` and of the `adapters`, costed at size x size, as Markdown."""
    cards = [adapter_card(a, size) if isinstance(a, str) else adapter_card(a[0], size, a[1]) for a in adapters]
    return "\n\n".join([model_card(n, size) for n in names] + cards) + "\n"


def cards_section(models: Sequence[str], size: int, adapters: Sequence[Adapter] = ()) -> list[str]:
    """A report's closing section: the cards of the models and adapters it shows, each once (by name)."""
    once: dict[str, Adapter] = {}
    for a in adapters:
        once.setdefault(a if isinstance(a, str) else a[0], a)
    return ["## Model cards", "", cards_markdown(list(dict.fromkeys(models)), size, list(once.values()))]


def _card(entry: Entry, kind: str, module: nn.Module, setting: str, size: int) -> str:
    deployed = inference_form(module)
    flops = count_flops(deployed, size, channels=RGB_IDS)
    return "\n".join(
        [
            f"### `{entry.name}` ({kind})",
            "",
            entry.principle,
            "",
            f"Reference: {entry.reference}.",
            "",
            f"Cost at {setting}: {count_params(module):,} parameters as trained, {count_params(deployed):,} as "
            f"deployed; {flops / 1e6:,.1f} MFLOPs deployed.",
        ]
    )

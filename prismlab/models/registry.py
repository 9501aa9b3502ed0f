"""Models and channel adapters by name, in timm's way: each model file registers its own with
@register_model / @register_adapter, and importing prismlab.models imports every model file.

What is registered is a model card's text as well: the builder's docstring opens with the
principle (one or two lines), and `reference` says where it comes from.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from torch import nn

from prismlab.errors import ConfigError, first_line


@dataclass(frozen=True)
class Entry:
    name: str
    build: Callable[..., nn.Module]
    principle: str  # the docstring's first paragraph, on one line
    reference: str  # paper, authors and year, or "this project"


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, reference: str):
        """Decorator for a builder (a function or a class) that registers it under `name`."""

        def wrap(build):
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            # build.__doc__, not inspect.getdoc: a class without a docstring must not borrow its parent's.
            doc = inspect.cleandoc(build.__doc__ or "")
            principle = doc.split("\n\n")[0].splitlines()
            if not 1 <= len(principle) <= 2 or not reference:
                raise ValueError(f"{self.kind} {name!r}: needs a docstring that opens with its principle in "
                                 "one or two lines, and a reference")
            self._entries[name] = Entry(name, build, " ".join(principle), reference)
            return build

        return wrap

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> Entry:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r} (known: {', '.join(self.names())})")
        return self._entries[name]

    def build(self, name: str, **kw) -> nn.Module:
        entry = self.get(name)
        try:
            return entry.build(**kw)
        except TypeError as e:  # an unknown keyword is the user's mistake, not a crash
            raise ConfigError(f"{self.kind} {name!r}: {e}") from None
        except (ValueError, RuntimeError, ZeroDivisionError, OverflowError) as e:  # a value it cannot build
            raise ConfigError(f"{self.kind} {name!r} with {kw}: {first_line(e)}") from None


MODELS = Registry("model")
ADAPTERS = Registry("adapter")
register_model = MODELS.register
register_adapter = ADAPTERS.register


def list_models() -> dict[str, str]:
    """name -> principle, sorted by name."""
    return {n: MODELS.get(n).principle for n in MODELS.names()}


# Families of models named `<source>:<architecture>` (tv:resnet18): source -> builder(arch, num_classes, **kw).
# models/backbones.py registers torchvision's and timm's.
SOURCES: dict[str, Callable[..., nn.Module]] = {}


def register_source(source: str, build: Callable[..., nn.Module]) -> None:
    SOURCES[source] = build


def is_model(name: str) -> bool:
    """A registered model, or one of a registered source (tv:<name>, timm:<name>)."""
    return name in MODELS.names() or (":" in name and name.partition(":")[0] in SOURCES)


def create_model(name: str, num_classes: int = 50, **kw) -> nn.Module:
    """Build a registered model, or a source's as `<source>:<architecture>` (torchvision's and timm's
    behind a channel adapter). The result carries `.spec`, enough to rebuild it from a checkpoint."""
    source, _, arch = name.partition(":")
    if arch and source in SOURCES:
        try:
            model = SOURCES[source](arch, num_classes=num_classes, **kw)
        except TypeError as e:
            raise ConfigError(f"model {name!r}: {e}") from None
    else:
        model = MODELS.build(name, num_classes=num_classes, **kw)
    model.spec = {"name": name, "num_classes": num_classes, **kw}
    return model


def make_adapter(name: str, **kw) -> nn.Module:
    return ADAPTERS.build(name, **kw)

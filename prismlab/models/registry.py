"""Models and channel adapters by name, in timm's way: each model file registers its own with
@register_model / @register_adapter, and importing prismlab.models imports every model file.

What is registered is a model card's text as well: the builder's docstring opens with the
principle (one or two lines), and `reference` says where it comes from.
"""

from __future__ import annotations

import functools
import inspect
import re
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
                raise ValueError(
                    f"{self.kind} {name!r}: needs a docstring that opens with its principle in "
                    "one or two lines, and a reference"
                )
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
            raise ConfigError(f"{self.kind} {name!r}: {e}{keyword_suggestion(e, entry.build)}") from None
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
            raise ConfigError(f"model {name!r}: {e}{keyword_suggestion(e, SOURCES[source])}") from None
    else:
        model = MODELS.build(name, num_classes=num_classes, **kw)
    model.spec = {"name": name, "num_classes": num_classes, **kw}
    return model


def make_adapter(name: str, **kw) -> nn.Module:
    return ADAPTERS.build(name, **kw)


def keyword_suggestion(error: TypeError, build: Callable) -> str:
    """'; did you mean X?' when `error` is an unexpected keyword: the closest of the optional parameters
    of `build`, of each callable the keywords were handed on to (the traceback's frames), and of the
    callable that refused them. Builders take **kw, so their own signature alone names nothing."""
    from prismlab.engine.config import did_you_mean

    found = re.search(r"([\w.]+)\(\) got an unexpected keyword argument '(\w+)'", str(error))
    if found is None:
        return ""
    refused, word = found[1].removesuffix(".__init__"), found[2]
    frames, tb = [], error.__traceback__.tb_next  # the first frame is the one that caught it
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    callables = [build, *map(_function_of, frames)]
    if frames:  # the refusing callable is a name in the frame that called it
        last = frames[-1]
        callables += [v for v in (*last.f_locals.values(), *last.f_globals.values()) if _qualname(v) == refused]
    return did_you_mean(word, {n for c in callables if c is not None for n in _optional_parameters(c)})


def _function_of(frame) -> Callable | None:
    """The module-level function or method a frame runs, looked up by its qualified name."""
    parts = getattr(frame.f_code, "co_qualname", frame.f_code.co_name).split(".")  # co_qualname: Python 3.11+
    if "<locals>" in parts:
        return None
    obj = frame.f_globals.get(parts[0])
    for part in parts[1:]:
        obj = getattr(obj, part, None)
    try:
        obj = inspect.unwrap(obj)  # a decorated builder (torchvision's): its own code is the frame's
    except (TypeError, ValueError):
        return None
    return obj if getattr(obj, "__code__", None) is frame.f_code else None


def _qualname(obj) -> str | None:
    obj = obj.func if isinstance(obj, functools.partial) else obj
    return getattr(obj, "__qualname__", None) if callable(obj) else None


def _optional_parameters(fn: Callable) -> list[str]:
    """The names a caller may give by keyword and may leave out: what a user's keyword can mean."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in params
        if p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and p.default is not p.empty)
    ]

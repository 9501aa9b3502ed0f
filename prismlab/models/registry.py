"""One model registry, in the spirit of timm: register a builder, build by name."""

from __future__ import annotations

from typing import Callable

from torch import nn

from prismlab.errors import ConfigError

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_DOCS: dict[str, str] = {}


def register_model(name: str):
    def wrap(fn):
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} registered twice")
        _BUILDERS[name] = fn
        _DOCS[name] = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        return fn

    return wrap


def list_models() -> dict[str, str]:
    """name -> one-line description, sorted by name."""
    _load_all()
    return dict(sorted(_DOCS.items()))


def create_model(name: str, num_classes: int = 50, **kw) -> nn.Module:
    """Build a registered model. The result carries `.spec`, enough to rebuild it from a checkpoint."""
    _load_all()
    if name not in _BUILDERS:
        raise ConfigError(f"unknown model {name!r} (known: {', '.join(sorted(_BUILDERS))})")
    try:
        model = _BUILDERS[name](num_classes=num_classes, **kw)
    except TypeError as e:  # an unknown keyword is the user's mistake, not a crash
        raise ConfigError(f"model {name!r}: {e}") from None
    model.spec = {"name": name, "num_classes": num_classes, **kw}
    return model


def _load_all() -> None:
    # Importing the modules runs their @register_model decorators.
    import prismlab.models.zoo  # noqa: F401

"""Channel names and ids, and the named subsets: what both the data and the models speak.

Channel ids are fixed: R=0, G=1, B=2, L=3 (gray luminance). A subset is a name such as "RB";
its ids are given in canonical order.
"""

from __future__ import annotations

from typing import Sequence

from prismlab.errors import ConfigError

CHANNEL_NAMES = ("R", "G", "B", "L")
RGB_IDS = (0, 1, 2)
GRAY_ID = 3

SUBSETS = {"RGB": (0, 1, 2), "RG": (0, 1), "GB": (1, 2), "RB": (0, 2), "R": (0,), "G": (1,), "B": (2,), "L": (3,)}
ALL_SUBSETS = tuple(SUBSETS)
_NAME_OF = {ids: name for name, ids in SUBSETS.items()}


def parse_subsets(spec: str | Sequence[str], names: Sequence[str] = CHANNEL_NAMES) -> list[str]:
    """'all' or 'RGB,R,L' (or a list of names) -> validated subset names, in the given order, each once.
    With declared channel names (a model's, e.g. (..., "NIR")), a subset may also be written as those
    names joined by '+': 'R+NIR'."""
    names_ = spec.split(",") if isinstance(spec, str) else list(spec)
    names_ = [n.strip() for n in names_ if n.strip()]
    if names_ == ["all"]:
        return list(ALL_SUBSETS)
    if not names_:
        raise ConfigError("no channel subset given (choose from all, " + ", ".join(ALL_SUBSETS) + ")")
    # a set written with + that is a named subset reads as its name (R+B is RB); each set once
    by_set = {}
    for n in names_:
        key = tuple(sorted(subset_ids(n, names)))
        by_set.setdefault(key, _NAME_OF.get(key, n))
    return list(by_set.values())


def subset_ids(name: str, names: Sequence[str] = CHANNEL_NAMES) -> tuple[int, ...]:
    """One subset's channel ids: "RB" -> (0, 2); with declared names, "R+NIR" or "NIR" -> their ids."""
    if isinstance(name, str) and name.strip() in SUBSETS:
        return SUBSETS[name.strip()]
    parts = [p.strip() for p in name.split("+")] if isinstance(name, str) else []
    if parts and len(set(parts)) == len(parts) and all(p in names for p in parts):
        return tuple(names.index(p) for p in parts)
    declared = f", or declared channels joined by + ({'+'.join(names)})" if tuple(names) != CHANNEL_NAMES else ""
    raise ConfigError(f"unknown channel subset {name!r} (one of {', '.join(ALL_SUBSETS)}{declared})")


def subset_name(ids: Sequence[int]) -> str:
    key = tuple(sorted(int(i) for i in ids))
    if key not in _NAME_OF:
        raise ConfigError(f"no subset holds channels {key}")
    return _NAME_OF[key]


def declared_names(
    owner: str, num_channel_ids: int | None = None, channel_names: Sequence[str] | None = None
) -> tuple[str, ...]:
    """The channel ids a model or adapter knows, by name: R, G, B, L unless more are declared by name
    (channel_names=(..., "NIR")) or by count (num_channel_ids=5: ids beyond L shown as #4)."""
    if channel_names is None:
        n = len(CHANNEL_NAMES) if num_channel_ids is None else int(num_channel_ids)
        channel_names = tuple(CHANNEL_NAMES[:n]) + tuple(f"#{i}" for i in range(len(CHANNEL_NAMES), n))
    elif num_channel_ids is not None and num_channel_ids != len(channel_names):
        raise ConfigError(f"{owner}: num_channel_ids={num_channel_ids} but {len(channel_names)} channel_names given")
    if len(channel_names) < 1:
        raise ConfigError(f"{owner}: at least one channel id must be declared")
    base = tuple(channel_names[: len(CHANNEL_NAMES)])
    if base != CHANNEL_NAMES[: len(base)]:  # ids 0-3 mean R, G, B, L to the data, the statistics and gray
        raise ConfigError(
            f"{owner}: channel_names must start with {', '.join(CHANNEL_NAMES)} (ids 0-3), then the "
            f"declared ones, got {', '.join(map(str, channel_names))}"
        )
    return tuple(channel_names)


def check_declared(owner: str, ids: Sequence[int], names: Sequence[str]) -> None:
    """A one-line refusal of a channel id that `names` does not declare."""
    for c in ids:
        if not 0 <= int(c) < len(names):
            raise ConfigError(
                f"{owner}: channel id {c} was not declared (known: "
                + ", ".join(f"{i}={n}" for i, n in enumerate(names))
                + "; declare more with num_channel_ids= or channel_names=)"
            )

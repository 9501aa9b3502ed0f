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

SUBSETS = {
    "RGB": (0, 1, 2),
    "RG": (0, 1),
    "GB": (1, 2),
    "RB": (0, 2),
    "R": (0,),
    "G": (1,),
    "B": (2,),
    "L": (3,),
}
ALL_SUBSETS = tuple(SUBSETS)
_NAME_OF = {ids: name for name, ids in SUBSETS.items()}


def parse_subsets(spec: str | Sequence[str]) -> list[str]:
    """'all' or 'RGB,R,L' (or a list of names) -> validated subset names, in the given order, each once."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    if names == ["all"]:
        return list(ALL_SUBSETS)
    if not names:
        raise ConfigError("no channel subset given (choose from all, " + ", ".join(ALL_SUBSETS) + ")")
    for n in names:
        if n not in SUBSETS:
            raise ConfigError(f"unknown channel subset {n!r} (choose from all, {', '.join(ALL_SUBSETS)})")
    return names


def subset_ids(name: str) -> tuple[int, ...]:
    """One subset's channel ids: "RB" -> (0, 2)."""
    if not isinstance(name, str) or name.strip() not in SUBSETS:
        raise ConfigError(f"unknown channel subset {name!r} (one of {', '.join(ALL_SUBSETS)})")
    return SUBSETS[name.strip()]


def subset_name(ids: Sequence[int]) -> str:
    key = tuple(sorted(int(i) for i in ids))
    if key not in _NAME_OF:
        raise ConfigError(f"no subset holds channels {key}")
    return _NAME_OF[key]

"""Config text to values: a YAML file, key=value overrides, a value coerced to its key's type, and
the one-line errors that name what is wrong (engine/config.py builds the TrainConfig from them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from prismlab.errors import ConfigError, PrismError, first_line


def coerce(key: str, raw: Any, like: Any) -> Any:
    """Turn a YAML/CLI value into the field's type, or say which key is wrong."""
    if isinstance(raw, str) and not isinstance(like, str):
        try:
            raw = yaml.safe_load(raw)
        except yaml.YAMLError:
            pass
    try:
        if isinstance(like, bool):
            if not isinstance(raw, bool):
                raise ValueError
            return raw
        if isinstance(like, int):
            if isinstance(raw, bool) or float(raw) != int(raw):
                raise ValueError
            return int(raw)
        if isinstance(like, float):
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        if isinstance(like, dict):
            if not isinstance(raw, dict):
                raise ValueError
            return raw
        if isinstance(raw, (list, dict)):  # str() of one would be a name or path nobody meant
            raise ValueError
        return str(raw)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf), float(10**400)
        raise ConfigError(f"config {key}={short(raw)}: expected {type(like).__name__}") from None


def short(value: Any) -> str:
    """repr(value), shortened: a hostile value may be megabytes long."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring, r.maxlong, r.maxother = 80, 40, 80
    return r.repr(value)


def did_you_mean(word: str, choices) -> str:
    """'; did you mean X?' for the closest choice, or '' when none is close."""
    import difflib

    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def read_mapping(path: Path, error: type[PrismError] = ConfigError) -> dict:
    """A YAML file of config keys (safe_load; an empty file is {}), or a one-line `error` naming it."""
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise error(f"{path}: invalid YAML ({first_line(e)})") from None
    if not isinstance(loaded, dict):
        raise error(f"{path}: expected a mapping of config keys")
    return loaded


def split_kv(s: str) -> tuple[str, str]:
    """A key=value override -> (key, value as text)."""
    if "=" not in s:
        raise ConfigError(f"override {s!r} is not key=value")
    k, v = s.split("=", 1)
    return k.strip(), v

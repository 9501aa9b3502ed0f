"""User-facing errors: the CLI prints these as one line and exits non-zero, without a traceback."""


class PrismError(Exception):
    """Base class for errors caused by the user's input (files, configs, arguments)."""


class DataError(PrismError):
    """A data file or split line is unusable; the message names the file (and line)."""


class ConfigError(PrismError):
    """A config value or CLI argument is invalid."""


def first_line(e: BaseException) -> str:
    """An exception's first non-empty line (or its type): enough for a one-line error."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__

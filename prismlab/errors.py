"""User-facing errors: the CLI prints these as one line and exits non-zero, without a traceback."""


class PrismError(Exception):
    """Base class for errors caused by the user's input (files, configs, arguments)."""


class DataError(PrismError):
    """A data file or split line is unusable; the message names the file (and line)."""


class ConfigError(PrismError):
    """A config value or CLI argument is invalid."""


def first_line(e: BaseException, skip_header: bool = False, sentence: bool = False) -> str:
    """An exception's first non-empty line (or its type): enough for a one-line error, and the
    one way prismlab shortens a message to one. With `skip_header`, a first line followed by
    others is skipped (torch's "Error(s) in loading state_dict for X:" says nothing by itself);
    with `sentence`, only that line's first sentence is kept (torch's first sentence says it)."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    if skip_header and len(lines) > 1:
        lines = lines[1:]
    line = lines[0] if lines else type(e).__name__
    return line.split(". ")[0].rstrip(".") if sentence else line

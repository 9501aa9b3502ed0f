"""User-facing errors: the CLI prints these as one line and exits non-zero, without a traceback."""


class PrismError(Exception):
    """Base class for errors caused by the user's input (files, configs, arguments)."""


class DataError(PrismError):
    """A data file or split line is unusable; the message names the file (and line)."""


class ConfigError(PrismError):
    """A config value or CLI argument is invalid."""

"""User-facing errors: the CLI prints their message on one line and exits non-zero."""

__all__ = ["AevbError", "CheckpointError", "ConfigError", "DataError"]


class AevbError(Exception):
    """A problem the user can fix (bad input, missing file); never a bug in aevb."""


class ConfigError(AevbError):
    """An unknown config key, a value of the wrong type, or an inconsistent setting."""


class DataError(AevbError):
    """A dataset that cannot be found, fetched, verified or used as asked."""


class CheckpointError(AevbError):
    """A checkpoint or run directory that is missing, corrupt or not writable."""

"""User-facing errors: the CLI prints their message on one line and exits non-zero."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AevbError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "PluginError",
    "check_choice",
    "check_positive",
]


class AevbError(Exception):
    """A problem the user can fix (bad input, missing file); never a bug in aevb."""


class ConfigError(AevbError):
    """An unknown config key, a value of the wrong type, or an inconsistent setting."""


class DataError(AevbError):
    """A dataset that cannot be found, fetched, verified or used as asked."""


class CheckpointError(AevbError):
    """A checkpoint or run directory that is missing, corrupt or not writable."""


class PluginError(ConfigError):
    """User code a run or a config names (a custom network, a plugin model) that cannot be
    imported or built."""


def check_choice(key: str, value: str, choices: Sequence[str]) -> None:
    """Raise a ConfigError naming ``key`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


def check_positive(key: str, value: float | None) -> None:
    """Raise a ConfigError naming ``key`` if ``value`` is given and not above 0 (NaN too)."""
    if value is not None and not value > 0:
        raise ConfigError(f"{key} must be positive, got {value}")

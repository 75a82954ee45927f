"""The one registry of models: name → class, the built-in models and the plugins.

A plugin is a model class from outside aevb: registered in the process with
``register_model("my-vae", MyVAE)``, or published by an installed package under the entry-point
group ``aevb.models`` (``my-vae = "my_package.models:MyVAE"`` in its ``pyproject.toml``), read
through ``importlib.metadata`` the first time anything looks a model up. A plugin that fails to
import, is no model, or takes a name already registered is a warning naming it, never an error
of every command.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import is_dataclass
from importlib import metadata
from typing import Any

from aevb.errors import ConfigError
from aevb.models.base import Model

__all__ = ["BUILTIN", "ENTRY_POINT_GROUP", "ModelRegistry", "PluginWarning"]

ENTRY_POINT_GROUP = "aevb.models"
BUILTIN = "aevb"
"""The origin of the models that ship with aevb."""


class PluginWarning(UserWarning):
    """A plugin model that could not be registered (the message names it and says why)."""


class ModelRegistry(Mapping[str, type[Model]]):
    """A read-only mapping of names to model classes, with where each comes from
    (``origin``); the ``aevb.models`` entry points are loaded on first use."""

    def __init__(self, builtin: dict[str, type[Model]]) -> None:
        self._models = dict(builtin)
        self._origins = dict.fromkeys(builtin, BUILTIN)
        self._plugins_loaded = False

    def __getitem__(self, name: str) -> type[Model]:
        self._load_plugins()
        return self._models[name]

    def __iter__(self) -> Iterator[str]:
        self._load_plugins()
        return iter(list(self._models))

    def __len__(self) -> int:
        self._load_plugins()
        return len(self._models)

    def origin(self, name: str) -> str:
        """Where model ``name`` comes from: "aevb", "entry point NAME (DIST VERSION)" or
        "register_model (MODULE)"."""
        self._load_plugins()
        return self._origins[name]

    def register(self, name: str, cls: type[Model], origin: str) -> None:
        problem = _problem(name, cls)
        if problem:
            raise ConfigError(f"cannot register model {name!r}: {problem}")
        if name in self._models and self._models[name] is not cls:
            raise ConfigError(f"cannot register model {name!r}: that name is taken by"
                              f" {_path(self._models[name])} ({self._origins[name]})")
        self._models[name], self._origins[name] = cls, origin

    @contextlib.contextmanager
    def temporarily(self, name: str, cls: type[Model]) -> Iterator[None]:
        """``cls`` registered as ``name`` inside the block only (``aevb.testing``)."""
        self.register(name, cls, f"checked, not registered ({cls.__module__})")
        try:
            yield
        finally:
            del self._models[name], self._origins[name]

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True  # first: a plugin that imports aevb.models finds it whole
        for entry in _entry_points():
            dist = getattr(entry, "dist", None)
            origin = f"entry point {entry.value}" + (
                f" ({dist.name} {dist.version})" if dist is not None else "")
            if entry.name in self._models:
                warnings.warn(f"aevb: the plugin model {entry.name!r} ({origin}) is not"
                              f" registered: that name is taken by {self._origins[entry.name]}",
                              PluginWarning, stacklevel=2)
                continue
            try:
                cls = entry.load()
            except Exception as error:  # a plugin's own bug must not stop every command
                warnings.warn(f"aevb: the plugin model {entry.name!r} ({origin}) failed to"
                              f" import: {type(error).__name__}: {error}", PluginWarning,
                              stacklevel=2)
                continue
            problem = _problem(entry.name, cls)
            if problem:
                warnings.warn(f"aevb: the plugin model {entry.name!r} ({origin}) is not"
                              f" registered: {problem}", PluginWarning, stacklevel=2)
                continue
            self._models[entry.name], self._origins[entry.name] = cls, origin


def _entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)


def _path(cls: Any) -> str:
    return f"{getattr(cls, '__module__', '?')}:{getattr(cls, '__qualname__', cls)!s}"


def _problem(name: str, cls: Any) -> str | None:
    """Why ``cls`` cannot be model ``name``, or None: the contract's class-level parts."""
    if not isinstance(cls, type) or not issubclass(cls, Model):
        return f"{_path(cls)} is not a subclass of aevb.models.Model"
    config_class = getattr(cls, "config_class", None)
    if not (isinstance(config_class, type) and is_dataclass(config_class)):
        return f"{_path(cls)}.config_class must be its config dataclass"
    try:
        own = getattr(config_class(), "name", None)
    except Exception as error:
        return f"its config {config_class.__name__}() fails: {error}"
    if own != name:
        return f"its config's name is {own!r}: a model's config names it (name: str = {name!r})"
    if not getattr(cls, "description", ""):
        return f"{_path(cls)} needs a one-line description (for `aevb models`)"
    return None

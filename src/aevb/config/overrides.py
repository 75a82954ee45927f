"""Overrides of a run's config from the command line or a notebook: ``"train.epochs=5"``,
``"model.net.hidden=400,400"`` or, where the key's last part is unique in the config (the chosen
model's keys included), ``"epochs=5"``, ``"hidden=400,400"``; every value type-checked.
"""

from __future__ import annotations

import contextlib
import typing
from dataclasses import asdict
from typing import Any

from torch import nn

from aevb.config.run import (
    Config,
    _models_taking,
    _unknown_key_message,
    config_from_dict,
    config_to_dict,
)
from aevb.errors import ConfigError
from aevb.models import model_class
from aevb.nn.custom import CustomNetConfig, spec_of

__all__ = ["ALIASES", "apply_overrides", "with_networks"]

ALIASES = {"dataset": "data.name", "model": "model.name"}
Keys = tuple[str, ...]


def _paths(tree: dict[str, Any], tables: bool = False, prefix: Keys = ()) -> list[Keys]:
    """The paths of ``tree``'s leaves, or (``tables``) of its sub-tables."""
    paths: list[Keys] = []
    for key, value in tree.items():
        if isinstance(value, dict):
            paths += [(*prefix, key)] * tables + _paths(value, tables, (*prefix, key))
        elif not tables:
            paths.append((*prefix, key))
    return paths


def _resolve_key(key: str, tree: dict[str, Any]) -> Keys:
    """The path in ``tree`` (the config as nested dicts) that an override key names."""
    key = ALIASES.get(key.replace("-", "_"), key.replace("-", "_"))
    parts = tuple(key.split("."))
    leaves = _paths(tree)
    if parts in leaves:
        return parts
    # "hidden", "net.hidden", "model.hidden": a path that ends so, or starts and ends so. A field
    # named for a Python keyword ends with "_" (lambda_): it answers to its name without.
    spoken = {p: (*p[:-1], p[-1].removesuffix("_")) for p in leaves}
    matches = [p for p in leaves if parts in (p[-len(parts):], spoken[p][-len(parts):])
               or (len(parts) == 2 and p[0] == parts[0] and parts[-1] in (p[-1], spoken[p][-1]))]
    if len(matches) == 1:
        return matches[0]
    if matches:
        choices = " or ".join(".".join(m) for m in matches)
        raise ConfigError(f"config key {key!r} is ambiguous: say {choices}")
    section = parts[0] if parts[0] in ("data", "train", "eval") and len(parts) > 1 else "model"
    cls = (model_class(tree["model"]["name"]).config_class if section == "model"
           else typing.get_type_hints(Config)[section])
    raise ConfigError(_unknown_key_message(key, cls, section))


def _get(tree: dict[str, Any], path: Keys) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _set(tree: dict[str, Any], path: Keys, value: Any) -> None:
    _get(tree, path[:-1])[path[-1]] = value


def _switch_model(current: Any, name: str) -> dict[str, Any]:
    """The model section for model ``name``: its defaults, with every setting of ``current``
    that differs from ``current``'s own defaults carried over where the new model has it."""
    cls = model_class(name).config_class
    old = config_to_dict(current)
    if type(current) is cls:
        return old
    new, defaults = config_to_dict(cls()), config_to_dict(type(current)())
    keys, unset = set(_paths(new)) - {("name",)}, set(_paths(old)) - set(_paths(defaults))
    for path in _paths(old):  # a key the default lacks (a net of another kind's): a setting
        if path in keys and (path in unset or _get(old, path) != _get(defaults, path)):
            _set(new, path, _get(old, path))
    return new


def _kind_path(key: str, tree: dict[str, Any]) -> Keys | None:
    """The sub-table that ``--net conv`` names (a model key whose value picks a kind)."""
    parts = tuple(key.replace("-", "_").split("."))
    matches = [p for p in _paths(tree, tables=True) if len(p) > 1 and p[-len(parts):] == parts]
    return matches[0] if len(matches) == 1 else None


def apply_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """A copy of ``config`` with ``{key: value}`` applied, type-checked.

    A new ``model`` (``model.name``) comes first: that model's defaults plus the old one's
    settings that differ from its defaults and that the new model has. Then a kind for a
    sub-table (``net="conv"``) replaces it with that kind's defaults; every other key is then
    looked up among the keys the model has now.
    """
    tree = config_to_dict(config)
    for key, value in overrides.items():
        if ALIASES.get(key, key) == "model.name":
            tree["model"] = _switch_model(config.model, str(value))
    kinds = {key: path for key in overrides if (path := _kind_path(key, tree))}
    for key, path in kinds.items():
        _set(tree, path, str(overrides[key]))
    if kinds:  # the kind's defaults filled in, read with the keys that need no new kind
        # (a conv net may need --inference top-down given with it)
        for key, value in overrides.items():
            with contextlib.suppress(ConfigError):
                path = None if key in kinds else _resolve_key(key, tree)
                if path is not None and path != ("model", "name"):
                    _set(tree, path, value)
        tree = config_to_dict(config_from_dict(tree))
    for key, value in overrides.items():
        if key in kinds:
            continue
        path = _resolve_key(key, tree)
        if path != ("model", "name"):
            _set(tree, path, value)
    return config_from_dict(tree)


def with_networks(config: Config, encoder: nn.Module | None, decoder: nn.Module | None,
                   emits_parameters: bool, label_input_set: bool) -> Config:
    """``config`` with the model's nets replaced by the modules ``encoder`` and ``decoder``
    (``nn.custom``: recorded by import path and constructor arguments); m2's ``label_input``,
    its MLP's alone, is turned off unless ``label_input_set``."""
    if encoder is None or decoder is None:
        raise ConfigError("fit takes your own networks in pairs: give both encoder= and"
                          " decoder=")
    name, takers = config.model.name, _models_taking(CustomNetConfig.kind)
    if name not in takers:
        raise ConfigError(f"model {name!r} takes no networks of your own (those that do:"
                          f" {', '.join(takers)})")
    net = {"kind": CustomNetConfig.kind, "encoder": asdict(spec_of(encoder, "encoder")),
           "decoder": asdict(spec_of(decoder, "decoder")),
           "decoder_emits_parameters": emits_parameters}
    tree = config_to_dict(config)
    tree["model"]["net"] = net
    if tree["model"].get("label_input") and not label_input_set:
        tree["model"]["label_input"] = False  # m2's y at the first layer is its MLP's alone
    return config_from_dict(tree)


"""A run's configuration: frozen dataclasses, read from TOML, overridden from the command line.

Two layers. :mod:`aevb.config.schema` (data, train and eval settings) knows no model, so the
data layer may import it. :mod:`aevb.config.run` (``Config``, TOML in and out) and
:mod:`aevb.config.overrides` read the model registry for ``[model]``, so they sit above the
models; their names load from here on first use, which keeps ``import aevb.data`` free of
every model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from aevb.config.schema import DataConfig, EvalConfig, TrainConfig

if TYPE_CHECKING:
    from aevb.config.overrides import apply_overrides
    from aevb.config.run import (
        Config,
        config_from_dict,
        config_keys,
        config_to_dict,
        dump_toml,
        field_docs,
        load_config,
        model_config,
        model_keys,
        save_config,
    )

_ABOVE_MODELS = {
    "apply_overrides": "aevb.config.overrides",
    **dict.fromkeys(["Config", "config_from_dict", "config_keys", "config_to_dict", "dump_toml",
                     "field_docs", "load_config", "model_config", "model_keys", "save_config"],
                    "aevb.config.run"),
}

__all__ = [
    "Config",
    "DataConfig",
    "EvalConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_keys",
    "config_to_dict",
    "dump_toml",
    "field_docs",
    "load_config",
    "model_config",
    "model_keys",
    "save_config",
]


def __getattr__(name: str) -> Any:
    if name in _ABOVE_MODELS:
        return getattr(importlib.import_module(_ABOVE_MODELS[name]), name)
    raise AttributeError(f"module 'aevb.config' has no attribute {name!r}")

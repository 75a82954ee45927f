"""A run's configuration: frozen dataclasses, read from TOML, overridden from the command line.

:mod:`aevb.config.schema` knows no model, so the data layer may import it; :mod:`~.run` and
:mod:`~.overrides` read the model registry, so their names load from here on first use (which
keeps ``import aevb.data`` free of every model).
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

__all__ = ["Config", "DataConfig", "EvalConfig", "TrainConfig", "apply_overrides", "config_from_dict",
           "config_keys", "config_to_dict", "dump_toml", "field_docs", "load_config",
           "model_config", "model_keys", "save_config"]


def __getattr__(name: str) -> Any:
    if name in __all__:  # the names above the models (the schema's are already here)
        module = "overrides" if name == "apply_overrides" else "run"
        return getattr(importlib.import_module(f"aevb.config.{module}"), name)
    raise AttributeError(f"module 'aevb.config' has no attribute {name!r}")

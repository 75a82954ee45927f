"""aevb: autoencoders and variational autoencoders (Kingma & Welling's AEVB) on PyTorch.

The notebook API mirrors the command line::

    from aevb import Config, apply_overrides, train, evaluate_run
    config = apply_overrides(Config(), {"dataset": "digits", "epochs": 5})
    result = train(config, "runs/digits")
    print(evaluate_run("runs/digits"))

Each name loads its layer on first use (PEP 562), so ``import aevb.data`` loads the data layer
and not every model, and ``import aevb`` is quick.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aevb.api import Fitted, fit, load
    from aevb.config.overrides import apply_overrides
    from aevb.config.run import Config, load_config, save_config
    from aevb.config.schema import DataConfig, EvalConfig, TrainConfig
    from aevb.data.datasets import list_datasets, load_dataset
    from aevb.data.splits import Dataset, Split
    from aevb.engine.checkpoint import load_model
    from aevb.engine.loop import TrainResult, train
    from aevb.errors import AevbError, CheckpointError, ConfigError, DataError, PluginError
    from aevb.evaluation.evaluate import evaluate_model, evaluate_run, log_likelihood
    from aevb.evaluation.quality import sample_quality
    from aevb.experiments.compare import compare_models, comparison_table
    from aevb.experiments.sweep import sweep, sweep_table
    from aevb.models import (
        MODELS,
        Batch,
        Classifier,
        ClosedForm,
        Conditional,
        Corrupting,
        DataSpec,
        Encoder,
        Generative,
        Likelihood,
        Model,
        Step,
        build_model,
        register_model,
    )

__version__ = "0.1.0"

_NAMES = {  # where each public name lives
    "aevb.api": "Fitted fit load",
    "aevb.config.overrides": "apply_overrides",
    "aevb.config.run": "Config load_config save_config",
    "aevb.config.schema": "DataConfig EvalConfig TrainConfig",
    "aevb.data.datasets": "list_datasets load_dataset",
    "aevb.data.splits": "Dataset Split",
    "aevb.engine.checkpoint": "load_model",
    "aevb.engine.loop": "TrainResult train",
    "aevb.errors": "AevbError CheckpointError ConfigError DataError PluginError",
    "aevb.evaluation.evaluate": "evaluate_model evaluate_run log_likelihood",
    "aevb.evaluation.quality": "sample_quality",
    "aevb.experiments.compare": "compare_models comparison_table",
    "aevb.experiments.sweep": "sweep sweep_table",
    "aevb.models": "Batch Classifier ClosedForm Conditional Corrupting DataSpec Encoder Generative Likelihood MODELS Model Step build_model register_model",
}
_PUBLIC = {name: module for module, names in _NAMES.items() for name in names.split()}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value  # the next lookup is a plain attribute
        return value
    raise AttributeError(f"module 'aevb' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])

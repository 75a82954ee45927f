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
    from aevb.errors import AevbError, CheckpointError, ConfigError, DataError
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
    )

__version__ = "0.1.0"

_PUBLIC = {
    "Fitted": "aevb.api",
    "fit": "aevb.api",
    "load": "aevb.api",
    "apply_overrides": "aevb.config.overrides",
    "Config": "aevb.config.run",
    "load_config": "aevb.config.run",
    "save_config": "aevb.config.run",
    "DataConfig": "aevb.config.schema",
    "EvalConfig": "aevb.config.schema",
    "TrainConfig": "aevb.config.schema",
    "list_datasets": "aevb.data.datasets",
    "load_dataset": "aevb.data.datasets",
    "Dataset": "aevb.data.splits",
    "Split": "aevb.data.splits",
    "load_model": "aevb.engine.checkpoint",
    "TrainResult": "aevb.engine.loop",
    "train": "aevb.engine.loop",
    "AevbError": "aevb.errors",
    "CheckpointError": "aevb.errors",
    "ConfigError": "aevb.errors",
    "DataError": "aevb.errors",
    "evaluate_model": "aevb.evaluation.evaluate",
    "evaluate_run": "aevb.evaluation.evaluate",
    "log_likelihood": "aevb.evaluation.evaluate",
    "sample_quality": "aevb.evaluation.quality",
    "compare_models": "aevb.experiments.compare",
    "comparison_table": "aevb.experiments.compare",
    "sweep": "aevb.experiments.sweep",
    "sweep_table": "aevb.experiments.sweep",
    "Batch": "aevb.models",
    "Classifier": "aevb.models",
    "ClosedForm": "aevb.models",
    "Conditional": "aevb.models",
    "Corrupting": "aevb.models",
    "DataSpec": "aevb.models",
    "Encoder": "aevb.models",
    "Generative": "aevb.models",
    "Likelihood": "aevb.models",
    "MODELS": "aevb.models",
    "Model": "aevb.models",
    "Step": "aevb.models",
    "build_model": "aevb.models",
}

__all__ = [
    "MODELS",
    "AevbError",
    "Batch",
    "CheckpointError",
    "Classifier",
    "ClosedForm",
    "Conditional",
    "Config",
    "ConfigError",
    "Corrupting",
    "DataConfig",
    "DataError",
    "DataSpec",
    "Dataset",
    "Encoder",
    "EvalConfig",
    "Fitted",
    "Generative",
    "Likelihood",
    "Model",
    "Split",
    "Step",
    "TrainConfig",
    "TrainResult",
    "apply_overrides",
    "build_model",
    "compare_models",
    "comparison_table",
    "evaluate_model",
    "evaluate_run",
    "fit",
    "list_datasets",
    "load",
    "load_config",
    "load_dataset",
    "load_model",
    "log_likelihood",
    "sample_quality",
    "save_config",
    "sweep",
    "sweep_table",
    "train",
]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value  # the next lookup is a plain attribute
        return value
    raise AttributeError(f"module 'aevb' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])

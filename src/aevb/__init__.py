"""aevb: autoencoders and variational autoencoders (Kingma & Welling's AEVB) on PyTorch.

The notebook API mirrors the command line::

    from aevb import Config, apply_overrides, train, evaluate_run
    config = apply_overrides(Config(), {"dataset": "digits", "epochs": 5})
    result = train(config, "runs/digits")
    print(evaluate_run("runs/digits"))
"""

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

"""The one registry of models: name → class. Adding a built-in model is one module and one
line here; a plugin model registers itself (``register_model``, or the entry-point group
``aevb.models``: ``models.registry``).

Each class names its own frozen config dataclass (``config_class``); ``[model]`` in a run's
config holds that dataclass's keys and nothing else.
"""

from __future__ import annotations

from typing import Any

from aevb.errors import ConfigError
from aevb.models.autoencoders import (
    Autoencoder,
    ContractiveAutoencoder,
    ConvAutoencoder,
    DenoisingAutoencoder,
    LinearAutoencoder,
    SparseAutoencoder,
)
from aevb.models.base import (
    Batch,
    Classifier,
    ClosedForm,
    Conditional,
    Corrupting,
    DataSpec,
    Encoder,
    Generative,
    Hierarchical,
    Likelihood,
    Metrics,
    Model,
    PerExampleState,
    Posterior,
    Step,
)
from aevb.models.conv_vae import ConvVAE
from aevb.models.cvae import CVAE
from aevb.models.hvae import HVAE
from aevb.models.m2 import M2
from aevb.models.pca import PCA
from aevb.models.registry import ModelRegistry, PluginWarning
from aevb.models.stacked import StackedAutoencoder
from aevb.models.vae import VAE
from aevb.models.wasserstein import SWAE, WAEMMD
from aevb.nn.bayes import BayesianLinear
from aevb.nn.nets import init_normal_

__all__ = ["MODELS", "Batch", "Classifier", "ClosedForm", "Conditional", "Corrupting", "DataSpec",
           "Encoder", "Generative", "Hierarchical", "Likelihood", "Metrics", "Model",
           "PerExampleState", "PluginWarning", "Posterior", "Step", "build_model", "model_class",
           "register_model"]

MODELS = ModelRegistry({
    "vae": VAE,
    "cvae": CVAE,
    "m2": M2,
    "hvae": HVAE,
    "ae": Autoencoder,
    "linear-ae": LinearAutoencoder,
    "pca": PCA,
    "sparse-ae": SparseAutoencoder,
    "denoising-ae": DenoisingAutoencoder,
    "contractive-ae": ContractiveAutoencoder,
    "stacked-ae": StackedAutoencoder,
    "conv-ae": ConvAutoencoder,
    "conv-vae": ConvVAE,
    "wae-mmd": WAEMMD,
    "swae": SWAE,
})


def register_model(name: str, cls: type[Model]) -> type[Model]:
    """Make ``cls`` model ``name`` in this process: the loop, evaluation, the report, pictures,
    ``aevb.fit`` and ``aevb.load`` take it as they take a built-in one. An installed package
    publishes a model to every process (the CLI, ``torchrun``'s workers) through the
    entry-point group ``aevb.models`` instead (``docs/extending.md``). Returns ``cls``; a name
    already taken, or a class that is no model, is a ConfigError."""
    MODELS.register(name, cls, f"register_model ({cls.__module__})")
    return cls


def model_class(name: str) -> type[Model]:
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ConfigError(f"unknown model {name!r} (known: {known}; a plugin model comes from"
                          " an installed package or register_model)") from None


def build_model(config: Any, data: DataSpec) -> Model:
    """The registered model for ``config`` (an instance of that model's ``config_class``)."""
    cls = model_class(config.name)
    if type(config) is not cls.config_class:
        raise ConfigError(f"model {config.name!r} needs a {cls.config_class.__name__},"
                          f" not a {type(config).__name__}")
    model = cls(config, data)
    std = getattr(getattr(config, "net", None), "init_std", None)
    if std is not None:  # the paper's N(0, 0.01²) initialisation, for every model's MLPs
        init_normal_(model, std)
        for layer in model.modules():
            if isinstance(layer, BayesianLinear):
                layer.init_mean_(std)
    return model

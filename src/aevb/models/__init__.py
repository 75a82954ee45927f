"""The one registry of models: name → class. Adding a model is one module and one line here."""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import ConfigError
from .autoencoders import (
    Autoencoder,
    ContractiveAutoencoder,
    ConvAutoencoder,
    DenoisingAutoencoder,
    LinearAutoencoder,
    SparseAutoencoder,
)
from .base import Batch, ClosedFormModel, DataSpec, LatentVariableModel, Model
from .pca import PCA
from .stacked import StackedAutoencoder
from .vae import VAE

__all__ = [
    "MODELS",
    "Batch",
    "ClosedFormModel",
    "DataSpec",
    "LatentVariableModel",
    "Model",
    "build_model",
]

MODELS: dict[str, type[Model]] = {
    "vae": VAE,
    "ae": Autoencoder,
    "linear-ae": LinearAutoencoder,
    "pca": PCA,
    "sparse-ae": SparseAutoencoder,
    "denoising-ae": DenoisingAutoencoder,
    "contractive-ae": ContractiveAutoencoder,
    "stacked-ae": StackedAutoencoder,
    "conv-ae": ConvAutoencoder,
}


def build_model(config: ModelConfig, data: DataSpec) -> Model:
    try:
        cls = MODELS[config.name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ConfigError(f"unknown model {config.name!r} (known: {known})") from None
    return cls(config, data)

"""The one registry of models: name → class. Adding a model is one module and one line here."""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import ConfigError
from .base import Batch, DataSpec, LatentVariableModel, Model
from .vae import VAE

__all__ = ["MODELS", "Batch", "DataSpec", "LatentVariableModel", "Model", "build_model"]

MODELS: dict[str, type[Model]] = {
    "vae": VAE,
}


def build_model(config: ModelConfig, data: DataSpec) -> Model:
    try:
        cls = MODELS[config.name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ConfigError(f"unknown model {config.name!r} (known: {known})") from None
    return cls(config, data)

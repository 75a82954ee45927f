"""The model contract the one training loop relies on."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from ..config import ModelConfig
from ..objectives import ElboTerms

__all__ = ["Batch", "ClosedFormModel", "DataSpec", "LatentVariableModel", "Model"]


class Batch(NamedTuple):
    """A minibatch: ``x`` (B, *event_shape) and, where the data has them, labels ``y`` (B,)."""

    x: torch.Tensor
    y: torch.Tensor | None = None


class DataSpec(NamedTuple):
    """What a model needs to know of its data to build itself."""

    event_shape: tuple[int, ...]
    kind: str
    """"binary", "unit" ([0, 1]) or "real"."""
    num_classes: int | None = None


class Model(nn.Module, ABC):
    """Every trainable model: one ``loss`` for the loop, ``encode``/``reconstruct`` for pictures.

    ``loss`` returns the scalar to minimise and named per-batch metrics (means over the batch,
    detached). The metrics always include ``loss``; the loop keeps the checkpoint with the lowest
    validation ``loss``.
    """

    description: ClassVar[str] = ""
    noise: str = "none"
    """The input corruption the model trains with (``corruption.NOISES``); a model that
    corrupts its input sets it, and then gets a noisy / denoised / clean picture."""

    def __init__(self, config: ModelConfig, data: DataSpec) -> None:
        super().__init__()
        self.config = config
        self.data = data

    @abstractmethod
    def loss(self, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Scalar loss and metrics for one minibatch; ``step`` drives any schedule."""

    @abstractmethod
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code of x (B, *event_shape) → (B, latent_dim); a VAE's posterior mean."""

    @abstractmethod
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """x → its reconstruction (B, *event_shape), on the data's scale (a VAE: decoder mean)."""


class LatentVariableModel(Model):
    """A model with a likelihood: evaluation computes its ELBO and importance-sampled log p(x)."""

    @abstractmethod
    def elbo_terms(self, x: torch.Tensor, samples: int = 1) -> ElboTerms:
        """Per-example ELBO, reconstruction and KL terms (B,), in nats."""

    @abstractmethod
    def log_weights(self, x: torch.Tensor, samples: int) -> torch.Tensor:
        """Importance log-weights log p(x, z_k) - log q(z_k|x), shape (K, B), in nats."""

    @abstractmethod
    def sample(self, n: int) -> torch.Tensor:
        """Decoder means of n draws z ~ p(z), shape (n, *event_shape)."""

    @abstractmethod
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder means at given codes z (..., latent_dim) → (..., *event_shape)."""


class ClosedFormModel(Model):
    """A model fitted to the training data in closed form (PCA), not only by gradient steps.

    The loop calls ``fit_data`` once, before the first step of a fresh run (a resumed run has
    the fitted state in its checkpoint's buffers); a model without trainable parameters then
    takes no optimizer steps, and the loop runs one epoch to measure its loss.
    """

    @abstractmethod
    def fit_data(self, x: torch.Tensor) -> None:
        """Fit to the whole training split x (N, *event_shape), as stored (under dynamic
        binarization: the grey levels, not a binary sample)."""

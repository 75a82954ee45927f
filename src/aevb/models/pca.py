"""Principal component analysis in closed form: the baseline a linear autoencoder converges to."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from aevb.errors import ConfigError, check_positive
from aevb.inference.objectives import reconstruction_loss
from aevb.inference.schedules import Step
from aevb.models.base import Batch, ClosedForm, DataSpec, Encoder, Metrics, Model

__all__ = ["PCA", "PCAConfig"]


@dataclass(frozen=True)
class PCAConfig:
    name: str = "pca"
    latent_dim: int = 20
    """Number of principal directions kept."""

    def __post_init__(self) -> None:
        check_positive("model.latent_dim", self.latent_dim)


class PCA(Model, Encoder, ClosedForm):
    """Code h = V^T (x - mean), reconstruction V h + mean, V the top ``latent_dim`` principal
    directions of the training data (F, D), from one SVD of the centred data.

    Among all rank-D affine maps this minimises the training squared error (Eckart-Young),
    which is also the optimum of a linear autoencoder with squared error (Baldi & Hornik 1989).
    It has no trainable parameters: the mean and directions are buffers set by ``fit_data``.
    """

    description = "PCA in closed form (SVD): the optimum of the linear autoencoder, a baseline"
    config_class = PCAConfig
    metric_names = {
        "loss": ("squared error (minimised in closed form)", ""),
        "rec_loss": ("reconstruction loss L(x, g(f(x)))", ""),
    }
    mean: torch.Tensor
    components: torch.Tensor
    explained_variance: torch.Tensor

    def __init__(self, config: PCAConfig, data: DataSpec) -> None:
        super().__init__(config, data)
        features = math.prod(data.event_shape)
        if config.latent_dim > features:
            raise ConfigError(f"pca: latent_dim {config.latent_dim} exceeds the {features}"
                              " dimensions of the data")
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("components", torch.zeros(config.latent_dim, features))
        self.register_buffer("explained_variance", torch.zeros(config.latent_dim))

    @torch.no_grad()
    def fit_data(self, x: torch.Tensor) -> None:
        x = x.flatten(1).double()  # float64: a stable SVD of up to 50k x 784 values
        if len(x) < self.config.latent_dim:
            raise ConfigError(f"pca: {len(x)} training examples cannot give"
                              f" {self.config.latent_dim} components")
        mean = x.mean(0)
        _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
        d = self.config.latent_dim
        self.mean.copy_(mean)
        self.components.copy_(vh[:d])
        self.explained_variance.copy_(s[:d].pow(2) / max(1, len(x) - 1))

    def encode(self, batch: Batch) -> torch.Tensor:
        return (batch.x.flatten(1) - self.mean) @ self.components.T

    def reconstruct(self, batch: Batch) -> torch.Tensor:
        flat = self.encode(batch) @ self.components + self.mean
        return flat.unflatten(-1, self.data.event_shape)

    def loss(self, batch: Batch, step: Step) -> tuple[torch.Tensor, Metrics]:
        rec = reconstruction_loss(self.reconstruct(batch), batch.x, "mse").mean()
        return rec, {"loss": rec.detach(), "rec_loss": rec.detach()}

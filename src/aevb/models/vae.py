"""The variational autoencoder of Kingma & Welling (2014), with its SGVB estimators."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Distribution

from ..config import ModelConfig
from ..corruption import corrupt, resolve_noise
from ..heads import DiagonalGaussianHead, decoder_head
from ..nets import mlp
from ..objectives import ElboTerms, elbo_terms, log_weights
from ..priors import StandardNormal
from .base import Batch, DataSpec, LatentVariableModel

__all__ = ["VAE"]


class VAE(LatentVariableModel):
    """Gaussian MLP encoder q(z|x), prior N(0, I), MLP decoder p(x|z) (sec. 3, appendix C).

    ``config.estimator`` picks SGVB estimator A ("mc") or B ("analytic"), ``config.samples`` is
    L, and ``config.beta`` weights the KL term of the training objective (beta = 1: the ELBO).
    With ``config.noise`` the training objective is the denoising bound of Im et al. (2017):
    the encoder sees a corrupted x~, the likelihood scores the clean x, E_q(z|x~)[log p(x|z)]
    - KL(q(z|x~) || p(z)); evaluation always encodes the clean x.
    """

    description = "variational autoencoder (Kingma & Welling 2014): Gaussian q(z|x), N(0,I) prior"

    def __init__(self, config: ModelConfig, data: DataSpec) -> None:
        super().__init__(config, data)
        features = math.prod(data.event_shape)
        hidden = list(config.hidden)
        self.encoder = nn.Sequential(nn.Flatten(), mlp([features, *hidden], config.activation))
        self.posterior_head = DiagonalGaussianHead(
            hidden[-1] if hidden else features, config.latent_dim
        )
        self.decoder = mlp([config.latent_dim, *reversed(hidden)], config.activation)
        self.likelihood_head = decoder_head(
            config.likelihood,
            hidden[0] if hidden else config.latent_dim,
            data.event_shape,
            data.kind,
            config.sigma,
            config.min_sigma,
        )
        self.prior = StandardNormal(config.latent_dim)
        self.noise = resolve_noise(config.noise, "none", data.kind)

    def posterior(self, x: torch.Tensor) -> Distribution:
        """q(z|x): batch shape (B,), event shape (latent_dim,)."""
        return self.posterior_head(self.encoder(x))

    def likelihood(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for z (..., latent_dim): batch shape (...), event shape the data's."""
        return self.likelihood_head(self.decoder(z))

    def elbo_terms(self, x: torch.Tensor, samples: int = 1) -> ElboTerms:
        return elbo_terms(
            x, self.posterior(x), self.prior(), self.likelihood, samples, self.config.estimator
        )

    def log_weights(self, x: torch.Tensor, samples: int) -> torch.Tensor:
        return log_weights(x, self.posterior(x), self.prior(), self.likelihood, samples)

    def loss(self, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x_in = corrupt(batch.x, self.noise, self.config.noise_level)
        terms = elbo_terms(batch.x, self.posterior(x_in), self.prior(), self.likelihood,
                           self.config.samples, self.config.estimator)
        objective = terms.rec - self.config.beta * terms.kl
        loss = -objective.mean()
        metrics = {
            "loss": loss.detach(),
            "elbo": terms.elbo.mean().detach(),
            "rec": terms.rec.mean().detach(),
            "kl": terms.kl.mean().detach(),
        }
        return loss, metrics

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x).mean

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.likelihood(z).mean

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def sample(self, n: int) -> torch.Tensor:
        return self.decode(self.prior().sample((n,)))

"""Wasserstein autoencoders: the VAE's per-example KL to the prior is replaced by a distance
between the aggregate posterior q(z) (the batch of codes) and the prior p(z) = N(0, I).

The loss is mean_b c(x_b, g(z_b)) + lambda D(q(z), p(z)), z_b = f(x_b) (or z_b ~ q(z|x_b)),
c the squared error or cross-entropy (``objectives.reconstruction_loss``) and D estimated
from the batch of B codes against B fresh prior draws:

- WAE-MMD (Tolstikhin et al. 2018, algorithm 2): D = the unbiased MMD^2 U-statistic with an
  inverse multiquadratic or RBF kernel;
- SWAE (Kolouri et al. 2019, algorithm 1): D = the sliced Wasserstein-p distance over L random
  directions.

They define no likelihood, so no ELBO or log p(x): they sample from the prior and decode.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from aevb.errors import ConfigError, check_choice, check_positive
from aevb.inference.objectives import (
    KERNELS,
    mmd_u_statistic,
    reconstruction_loss,
    sliced_wasserstein,
)
from aevb.inference.schedules import Step
from aevb.models.autoencoders import resolve_reconstruction
from aevb.models.base import Batch, DataSpec, Encoder, Generative, Metrics, Model, unconditional
from aevb.nn.heads import DiagonalGaussianHead
from aevb.nn.nets import MLPConfig, mlp
from aevb.nn.priors import StandardNormal

__all__ = ["SWAE", "SWAEConfig", "WAEConfig", "WAEMMD", "WassersteinAutoencoder"]

ENCODERS = ("deterministic", "gaussian")


@dataclass(frozen=True)
class _Keys:  # the keys both share
    name: str = ""
    latent_dim: int = 8
    """Dimensions of z (the paper's MNIST runs: 8)."""
    net: MLPConfig = MLPConfig()
    """The encoder's hidden layers; the decoder mirrors them."""
    reconstruction: str = "auto"
    """The cost c(x, g(z)): bce (cross-entropy, data in [0, 1]) | mse (squared error) | auto
    (bce on data in [0, 1], mse on real data)."""
    encoder: str = "deterministic"
    """deterministic (z = f(x), the paper's choice) | gaussian (z ~ q(z|x) = N(mu, sigma^2),
    reparameterised; codes for evaluation are the means)."""
    lambda_: float = 10.0
    """lambda, the weight on the distance to the prior (``--lambda``; the paper: 10)."""

    def __post_init__(self) -> None:
        check_positive("model.latent_dim", self.latent_dim)
        check_choice("model.reconstruction", self.reconstruction, ("auto", "bce", "mse"))
        check_choice("model.encoder", self.encoder, ENCODERS)
        if self.lambda_ < 0:
            raise ConfigError(f"model.lambda must be >= 0, got {self.lambda_}")


@dataclass(frozen=True)
class WAEConfig(_Keys):
    name: str = "wae-mmd"
    kernel: str = "imq"
    """The MMD kernel, with C = 2 latent_dim (the prior's variance 1): imq (C / (C + ||x-y||^2),
    the paper's) | rbf (exp(-||x-y||^2 / C))."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("model.kernel", self.kernel, tuple(KERNELS))


@dataclass(frozen=True)
class SWAEConfig(_Keys):
    name: str = "swae"
    projections: int = 50
    """L, the random directions on the sphere drawn afresh for every batch."""
    p: float = 2.0
    """The order p of the 1-D Wasserstein distances (Kolouri et al.: 2)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("model.projections", self.projections)
        if self.p < 1:
            raise ConfigError(f"model.p must be >= 1 (a Wasserstein order), got {self.p}")


class WassersteinAutoencoder(Model, Encoder, Generative):
    """Abstract: an MLP encoder (deterministic or Gaussian), its mirror as decoder, prior
    N(0, I); subclasses give the distance between codes and prior samples.

    Metrics, means over the batch: ``loss``, ``rec_loss`` (c(x, g(z)) per example) and the
    unweighted distance under the subclass's ``distance_name``. ``loss`` picks the best
    checkpoint: lambda is fixed, so it does not move with the schedule.
    """

    distance_name: str

    def __init__(self, config: WAEConfig | SWAEConfig, data: DataSpec) -> None:
        super().__init__(config, data)
        self.reconstruction = resolve_reconstruction(config.reconstruction, data)
        features, hidden, act = math.prod(data.event_shape), config.net.hidden, config.net.activation
        width, dim = hidden[-1] if hidden else features, config.latent_dim
        self.encoder = nn.Sequential(nn.Flatten(), mlp([features, *hidden], act))
        self.code_head: nn.Module = (DiagonalGaussianHead(width, dim)
                                     if config.encoder == "gaussian" else nn.Linear(width, dim))
        self.decoder = nn.Sequential(
            mlp([dim, *reversed(hidden)], act),
            nn.Linear(hidden[0] if hidden else dim, features),
            nn.Unflatten(-1, data.event_shape),
        )
        self.prior = StandardNormal(dim)

    @abstractmethod
    def distance(self, codes: torch.Tensor, prior_draws: torch.Tensor) -> torch.Tensor:
        """The unweighted distance (a scalar) between codes (B, D) and prior draws (B, D)."""

    def _codes(self, x: torch.Tensor, sample: bool) -> torch.Tensor:
        head = self.code_head(self.encoder(x))
        if isinstance(head, torch.Tensor):
            return head
        return head.rsample() if sample else head.mean

    def loss(self, batch: Batch, step: Step) -> tuple[torch.Tensor, Metrics]:
        codes = self._codes(batch.x, sample=True)
        rec = reconstruction_loss(self.decoder(codes), batch.x, self.reconstruction).mean()
        prior_draws = self.prior().sample((codes.shape[0],))
        distance = self.distance(codes.float(), prior_draws)
        loss = rec + self.config.lambda_ * distance
        return loss, {"loss": loss.detach(), "rec_loss": rec.detach(),
                      self.distance_name: distance.detach()}

    def encode(self, batch: Batch) -> torch.Tensor:
        return self._codes(batch.x, sample=False)

    def decode(self, z: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        unconditional(condition)
        output = self.decoder(z)
        return output.sigmoid() if self.reconstruction == "bce" else output

    def reconstruct(self, batch: Batch) -> torch.Tensor:
        return self.decode(self.encode(batch))

    def sample(self, n: int, condition: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.prior().sample((n,)), condition)


class WAEMMD(WassersteinAutoencoder):
    """WAE-MMD (Tolstikhin et al. 2018): D = MMD^2 (U-statistic) with ``kernel``."""

    description = "Wasserstein autoencoder, WAE-MMD (Tolstikhin et al. 2018): MMD to N(0,I)"
    config_class = WAEConfig
    distance_name = "mmd"
    metric_names = {
        "loss": ("loss (minimised)", ""),
        "rec_loss": ("reconstruction cost c(x, g(z))", ""),
        "mmd": ("MMD^2 of codes to the prior (U-statistic)", ""),
    }

    def distance(self, codes: torch.Tensor, prior_draws: torch.Tensor) -> torch.Tensor:
        return mmd_u_statistic(codes, prior_draws, KERNELS[self.config.kernel])


class SWAE(WassersteinAutoencoder):
    """The sliced-Wasserstein autoencoder (Kolouri et al. 2019): D = SW_p over L directions."""

    description = "sliced-Wasserstein autoencoder (Kolouri et al. 2019): SW_p to N(0,I)"
    config_class = SWAEConfig
    distance_name = "sw"
    metric_names = {
        "loss": ("loss (minimised)", ""),
        "rec_loss": ("reconstruction cost c(x, g(z))", ""),
        "sw": ("sliced Wasserstein-p distance of codes to the prior", ""),
    }

    def distance(self, codes: torch.Tensor, prior_draws: torch.Tensor) -> torch.Tensor:
        return sliced_wasserstein(codes, prior_draws, self.config.projections, self.config.p)

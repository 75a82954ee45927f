"""The VampPrior (Tomczak & Welling 2018, "VAE with a VampPrior"), written as a user of aevb
would write a model of their own: a VAE whose prior is the mixture of the encoder's posteriors
at K learned pseudo-inputs, p(z) = 1/K sum_k q(z | u_k).

Everything else (the ELBO and its estimators, IWAE, warm-up, importance-sampled log p(x), the
loop, resume, pictures, report) is aevb's VAE, unchanged: there is no closed-form KL to a
mixture, so the ELBO's KL is the Monte Carlo estimate log q(z|x) - log p(z) at the draw of z.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, MixtureSameFamily

from aevb.errors import ConfigError
from aevb.models import DataSpec
from aevb.models.vae import VAE, BaseVAEConfig
from aevb.nn.custom import CustomNetConfig
from aevb.nn.nets import MLPConfig

__all__ = ["VampPrior", "VampPriorConfig", "VampPriorVAE"]


@dataclass(frozen=True)
class VampPriorConfig(BaseVAEConfig):
    name: str = "vampprior"
    net: MLPConfig | CustomNetConfig = MLPConfig()
    """The encoder's hidden layers; the decoder mirrors them (as the vae)."""
    components: int = 100
    """K, the number of pseudo-inputs (the paper: 500 on MNIST; evaluation's memory grows
    with K)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.components < 1:
            raise ConfigError(f"model.components must be at least 1, got {self.components}")


class VampPrior(nn.Module):
    """p(z) = 1/K sum_k q(z | u_k): the posterior ``posterior`` (a function of a batch of x)
    at K pseudo-inputs u_k, learned, kept in (0, 1) by a sigmoid and started near grey."""

    def __init__(self, components: int, event_shape: tuple[int, ...],
                 posterior: Callable[[torch.Tensor], Distribution]) -> None:
        super().__init__()
        self.logits = nn.Parameter(0.1 * torch.randn(components, *event_shape))
        self._posterior = (posterior,)  # a tuple: the encoder is not registered twice

    def pseudo_inputs(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def forward(self) -> MixtureSameFamily:
        components = self._posterior[0](self.pseudo_inputs())  # batch (K,), event (D,)
        weights = Categorical(logits=torch.zeros(self.logits.shape[0],
                                                 device=self.logits.device))
        return MixtureSameFamily(weights, components)


class VampPriorVAE(VAE):
    """aevb's VAE with the VampPrior in place of N(0, I)."""

    description = "VAE with the VampPrior (Tomczak & Welling 2018): p(z) = mean_k q(z|u_k)"
    config_class: ClassVar[type] = VampPriorConfig

    def __init__(self, config: VampPriorConfig, data: DataSpec) -> None:
        super().__init__(config, data)
        self.prior = VampPrior(config.components, tuple(data.event_shape), self.posterior)

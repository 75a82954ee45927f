"""Priors p(z) as modules that return ``torch.distributions`` objects."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Independent, Normal

__all__ = ["StandardNormal"]


class StandardNormal(nn.Module):
    """p(z) = N(0, I) over ``latent_dim`` dimensions (the paper's prior)."""

    loc: torch.Tensor
    scale: torch.Tensor

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        # Buffers, so the prior follows the model to its device and dtype.
        self.register_buffer("loc", torch.zeros(latent_dim), persistent=False)
        self.register_buffer("scale", torch.ones(latent_dim), persistent=False)

    def forward(self) -> Independent:
        return Independent(Normal(self.loc, self.scale), 1)

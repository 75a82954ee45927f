"""Priors p(z), and conditional priors p(z|c), as modules that return ``torch.distributions``
objects."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Independent, Normal

from aevb.nn.nets import mlp

__all__ = ["LearnedConditionalPrior", "StandardNormal"]


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


class LearnedConditionalPrior(nn.Module):
    """p(z|c) = N(mu(c), diag sigma^2(c)), mu and log sigma^2 from a small tanh MLP of c.

    The conditional prior of Sohn et al. (2015, the "prior network" of sec. 4.2): c (..., C)
    gives a distribution with batch shape (...) and event shape (latent_dim,). The output
    layer starts at zero, so training starts from p(z|c) = N(0, I).
    """

    def __init__(self, condition_dim: int, latent_dim: int, hidden: Sequence[int] = (64,)
                 ) -> None:
        super().__init__()
        body = mlp([condition_dim, *hidden], "tanh")  # first: the same random stream as ever
        out = nn.Linear([condition_dim, *hidden][-1], 2 * latent_dim)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.net = nn.Sequential(*body, out)

    def forward(self, c: torch.Tensor) -> Independent:
        mu, log_var = self.net(c).float().chunk(2, dim=-1)
        return Independent(Normal(mu, torch.exp(0.5 * log_var)), 1)

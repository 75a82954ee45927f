"""Top-down cells for a hierarchical VAE with a deterministic state, for flat features (MLPs).

A state h runs from the top of the hierarchy down: it starts as a learned vector, each layer
reads its prior p(z_l | h) and posterior q(z_l | h, d_l) from it (d_l that layer's bottom-up
features of x), and z_l joins it through a residual branch, h ← h + g([h, z_l]). The decoder
reads the last state, so x sees every layer directly, not only through z1.

The posterior is a residual of the prior (Vahdat & Kautz 2020): q = N(mu_p + dmu, sigma_p ·
dsigma), (dmu, log dsigma) read from [h, d_l] (bidirectional, as Kingma et al. 2016 and Child
2021). Every output that could make a layer carry information at initialisation starts at
zero: the prior heads give N(0, I), the posterior heads q = p (no KL to pay for nothing, unlike
the precision-weighted merge whose gate costs 0.1 nats per dimension at the start), and the
residual branches start scaled down by ``RESIDUAL_SCALE``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.distributions import Independent, Normal
from torch.nn.utils.parametrizations import weight_norm

from aevb.nn.nets import mlp
from aevb.nn.priors import StandardNormal

__all__ = ["RESIDUAL_SCALE", "Layer", "ResidualCells", "TopDown", "branch", "residual_posterior",
           "side_by_side"]

RESIDUAL_SCALE = 0.1
"""The factor on the initial weights of each residual branch's last layer (NVAE's 0.1)."""


def branch(sizes: Sequence[int], out: int, activation: str, last_scale: float,
           normalised: bool) -> nn.Sequential:
    """An MLP ``sizes`` then a linear map to ``out``, whose initial weights and bias are scaled
    by ``last_scale`` (0: the branch starts at zero); with ``normalised`` every linear layer
    is weight-normalised (Salimans & Kingma 2016)."""
    net = mlp(sizes, activation)
    last = nn.Linear(sizes[-1], out)
    with torch.no_grad():
        last.weight.mul_(last_scale)
        last.bias.mul_(last_scale)
    layers = [*net, last]
    if normalised:  # a zero weight has no direction: leave a zero-started layer plain
        layers = [weight_norm(m) if isinstance(m, nn.Linear)
                  and not (m is last and last_scale == 0) else m for m in layers]
    return nn.Sequential(*layers)


def side_by_side(*tensors: torch.Tensor, event_dims: int = 1) -> torch.Tensor:
    """The tensors joined on the first of their ``event_dims`` last dimensions (features
    (..., F_i), or maps (..., C_i, H, W) with 3), leading dimensions broadcast (the state
    (B, H) beside K samples (K, B, D))."""
    shape = torch.broadcast_shapes(*(t.shape[:-event_dims] for t in tensors))
    return torch.cat([t.expand(*shape, *t.shape[-event_dims:]) for t in tensors], -event_dims)


def gaussian(parameters: torch.Tensor) -> Independent:
    """N(mu, sigma) from (..., 2D) = [mu, log sigma^2], in float32."""
    mu, log_var = parameters.float().chunk(2, dim=-1)
    return Independent(Normal(mu, torch.exp(0.5 * log_var)), 1)


def residual_posterior(prior: Independent, shift: torch.Tensor) -> Independent:
    """q = N(mu_p + dmu, sigma_p · dsigma) from the prior and (..., 2D) = [dmu, log dsigma^2]."""
    dmu, log_var = shift.float().chunk(2, dim=-1)
    p = prior.base_dist
    return Independent(Normal(p.loc + dmu, p.scale * torch.exp(0.5 * log_var)), 1)


class Layer(NamedTuple):
    """One stochastic layer of a pass: q(z_l|·), p(z_l|·) and the value of z_l."""

    posterior: Independent
    prior: Independent
    z: torch.Tensor
    """(K, B, D_l) drawn by ``rsample``, or (B, D_l): the mean of the posterior."""


class TopDown(nn.Module, ABC):
    """A top-down path of stochastic layers over a deterministic state h: the order of
    inference and generation, for cells of any shape (``ResidualCells`` on vectors, the
    convolutional ones on feature maps). Codes are flat, z_l (..., D_l)."""

    dims: tuple[int, ...]

    @abstractmethod
    def initial(self, leading: Sequence[int]) -> torch.Tensor:
        """The top state, for a batch of shape ``leading``."""

    @abstractmethod
    def prior(self, layer: int, h: torch.Tensor) -> Independent:
        """p(z_layer | h), ``layer`` 0-based (z1 is 0)."""

    @abstractmethod
    def posterior(self, layer: int, h: torch.Tensor, prior: Independent,
                  features: torch.Tensor) -> Independent:
        """q(z_layer | h, d_layer), from the state, its prior and the bottom-up features."""

    @abstractmethod
    def inject(self, layer: int, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The state below layer ``layer`` once z_layer has joined it."""

    def infer(self, features: Sequence[torch.Tensor], samples: int | None
              ) -> tuple[list[Layer], torch.Tensor]:
        """One pass down given each layer's bottom-up features (z1's first): the layers, z1
        first, and the last state (the decoder's input). ``samples`` K draws of the whole
        hierarchy, (K, B, D_l) each; ``None``: every layer at its posterior mean."""
        n = len(self.dims)
        h = self.initial(features[-1].shape[: 1])
        layers: list[Layer] = []
        for layer in reversed(range(n)):
            p = self.prior(layer, h)
            q = self.posterior(layer, h, p, features[layer])
            if samples is None:
                z = q.mean
            else:
                z = q.rsample((samples,)) if layer == n - 1 else q.rsample()
            layers.insert(0, Layer(q, p, z))
            h = self.inject(layer, h, z)
        return layers, h

    def generate(self, leading: Sequence[int], given: Sequence[torch.Tensor | None]
                 ) -> torch.Tensor:
        """The last state of an ancestral pass for a batch of shape ``leading``: z_l the one
        ``given`` (broadcast to ``leading``) where there is one, else drawn from its prior."""
        h = self.initial(leading)
        for layer in reversed(range(len(self.dims))):
            kept = given[layer]
            z = self.prior(layer, h).sample() if kept is None else kept.expand(
                *leading, kept.shape[-1])
            h = self.inject(layer, h, z)
        return h


class ResidualCells(TopDown):
    """The top-down path of n layers (``dims``, z1 first) over a state of ``state`` units.

    ``features[l]`` is the size of the bottom-up features layer l's posterior reads; ``hidden``
    the hidden layers of every branch. Layer l's cell: p(z_l | h) (the top's: N(0, I)),
    q(z_l | h, d_l), and h ← h + g_l([h, z_l]).
    """

    def __init__(self, dims: Sequence[int], features: Sequence[int], state: int,
                 hidden: Sequence[int], activation: str, normalised: bool) -> None:
        super().__init__()
        self.dims = tuple(dims)
        self.start = nn.Parameter(torch.zeros(state))
        self.priors = nn.ModuleList(  # layers 1 .. n-1; the top's prior is N(0, I)
            branch([state], 2 * d, activation, 0.0, normalised) for d in dims[:-1])
        self.posteriors = nn.ModuleList(
            branch([state + f], 2 * d, activation, 0.0, normalised)
            for d, f in zip(dims, features, strict=True))
        self.projections = nn.ModuleList(nn.Linear(d, state) for d in dims)
        self.residuals = nn.ModuleList(
            branch([state, *hidden], state, activation, RESIDUAL_SCALE, normalised)
            for _ in dims)
        self.top_prior = StandardNormal(dims[-1])

    def prior(self, layer: int, h: torch.Tensor) -> Independent:
        """p(z_layer | h), ``layer`` 0-based."""
        if layer == len(self.dims) - 1:
            top = self.top_prior()
            return Independent(Normal(top.base_dist.loc.expand(*h.shape[:-1], -1),
                                      top.base_dist.scale.expand(*h.shape[:-1], -1)), 1)
        return gaussian(self.priors[layer](h))

    def posterior(self, layer: int, h: torch.Tensor, prior: Independent,
                  features: torch.Tensor) -> Independent:
        """q(z_layer | h, d_layer), a residual of ``prior``."""
        return residual_posterior(prior, self.posteriors[layer](side_by_side(h, features)))

    def inject(self, layer: int, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The state after z_layer joins it: h' = h + W z (a linear path from every z to the
        decoder, as Child 2021 adds z's projection), then h' + g(h'), a residual block."""
        h = h + self.projections[layer](z.to(h.dtype))
        return h + self.residuals[layer](h)

    def initial(self, leading: Sequence[int]) -> torch.Tensor:
        """The top state, (*leading, H)."""
        return self.start.expand(*leading, -1)

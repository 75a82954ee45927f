"""Heads: features → ``torch.distributions`` objects.

The encoder head gives q(z|x); the decoder heads give p(x|z) with the data's event shape, for
any leading batch shape of the features (L samples × B examples, K × B, …), either from flat
features through a linear map (an MLP decoder) or straight from a convolutional decoder's
output map, which holds the parameters per pixel. Distribution parameters are always float32,
also when the layers before them run in bfloat16 (autocast), so log-densities and KL terms keep
full precision.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import (
    Bernoulli,
    ContinuousBernoulli,
    Distribution,
    Independent,
    Normal,
)

from aevb.errors import ConfigError

__all__ = ["LIKELIHOODS", "BernoulliHead", "ContinuousBernoulliHead", "DecoderHead",
           "DiagonalGaussianHead", "GaussianHead", "decoder_head"]


class DiagonalGaussianHead(nn.Module):
    """Features (..., F) → N(mu, diag sigma^2) over (..., D), parameterised by log sigma^2.

    The paper's Gaussian MLP encoder (appendix C.2): ``[mu, log sigma^2] = W h + b``.
    """

    def __init__(self, in_features: int, latent_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, 2 * latent_dim)

    def forward(self, features: torch.Tensor) -> Independent:
        mu, log_var = self.linear(features).float().chunk(2, dim=-1)
        return Independent(Normal(mu, torch.exp(0.5 * log_var)), 1)


class DecoderHead(nn.Module):
    """Base for decoder heads: features → k parameters per data value, each (..., *event_shape).

    With ``in_features`` the features are flat (..., in_features) and a linear map gives the
    k × prod(event_shape) parameters. With ``in_features=None`` the features already are the
    parameters, as a convolutional decoder's last block emits them: (..., k * C, *rest) for
    event shape (C, *rest), the first C channels the first parameter, and so on.
    """

    params_per_value = 1
    """k: how many numbers the decoder gives per data value (2 for a mean and a variance)."""
    linear: nn.Linear | None

    def __init__(self, in_features: int | None, event_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.event_shape = tuple(event_shape)
        self.linear = None
        if in_features is not None:
            self.linear = nn.Linear(in_features,
                                    self.params_per_value * math.prod(self.event_shape))

    def _outputs(self, features: torch.Tensor) -> list[torch.Tensor]:
        k = self.params_per_value
        if self.linear is None:
            dims = len(self.event_shape)
            expected = (k * self.event_shape[0], *self.event_shape[1:])
            if tuple(features.shape[-dims:]) != expected:
                raise ValueError(f"a per-value head for event shape {self.event_shape} needs"
                                 f" features (..., {expected}), got {tuple(features.shape)}")
            return list(features.float().chunk(k, dim=-dims))
        out = self.linear(features).float()
        batch = features.shape[:-1]
        return [o.reshape(*batch, *self.event_shape) for o in out.chunk(k, dim=-1)]

    def _independent(self, base: Distribution) -> Independent:
        return Independent(base, len(self.event_shape))


class BernoulliHead(DecoderHead):
    """p(x|z) = prod_i Bernoulli(x_i; sigmoid(logit_i)), for binary data (the paper's MNIST)."""

    def forward(self, features: torch.Tensor) -> Independent:
        (logits,) = self._outputs(features)
        return self._independent(Bernoulli(logits=logits))


class ContinuousBernoulliHead(DecoderHead):
    """The continuous Bernoulli (Loaiza-Ganem & Cunningham 2019), a proper density on [0, 1]."""

    def forward(self, features: torch.Tensor) -> Independent:
        (logits,) = self._outputs(features)
        return self._independent(ContinuousBernoulli(logits=logits))


class GaussianHead(DecoderHead):
    """p(x|z) = N(mu(z), sigma^2) with sigma fixed, one learned scalar, or one per pixel.

    ``fixed`` is the squared-error (rate-distortion) view; with ``pixel`` the network outputs
    log sigma^2 too. With ``sigmoid_mean`` mu = sigmoid(output), in (0, 1): with ``pixel``
    that is the paper's Frey Face decoder (appendix C.2, "gaussian-sigmoid"). Learned sigmas
    are kept above ``min_sigma`` so the density stays bounded on data with constant pixels.
    """

    def __init__(self, in_features: int | None, event_shape: tuple[int, ...], variance: str,
                 sigma: float, min_sigma: float, sigmoid_mean: bool = False) -> None:
        if variance not in ("fixed", "learned", "pixel"):
            raise ConfigError(f"unknown Gaussian variance {variance!r}")
        self.params_per_value = 2 if variance == "pixel" else 1
        super().__init__(in_features, event_shape)
        self.variance = variance
        self.min_sigma = min_sigma
        self.sigmoid_mean = sigmoid_mean
        log_sigma = torch.tensor(math.log(sigma))
        if variance == "learned":
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    def forward(self, features: torch.Tensor) -> Independent:
        outputs = self._outputs(features)
        mu = torch.sigmoid(outputs[0]) if self.sigmoid_mean else outputs[0]
        if self.variance == "fixed":
            scale = self.log_sigma.exp().expand_as(mu)
        elif self.variance == "learned":
            scale = (self.min_sigma + self.log_sigma.exp()).expand_as(mu)
        else:
            scale = self.min_sigma + torch.exp(0.5 * outputs[1])
        return self._independent(Normal(mu, scale))


LIKELIHOODS = {
    "bernoulli": "binary data: Bernoulli with logits",
    "continuous-bernoulli": "data in [0, 1]: the continuous Bernoulli",
    "gaussian-fixed": "real data: Gaussian with a fixed sigma (L2 distortion)",
    "gaussian-learned": "real data: Gaussian with one learned sigma",
    "gaussian-pixel": "real data: Gaussian with a per-pixel sigma from the decoder",
    "gaussian-sigmoid": "data in [0, 1]: Gaussian with sigmoid means and a per-pixel sigma"
                        " (the paper's Frey Face decoder)",
}


def decoder_head(likelihood: str, in_features: int | None, event_shape: tuple[int, ...],
                 data_kind: str, sigma: float = 1.0, min_sigma: float = 1e-3) -> DecoderHead:
    """The decoder head for ``likelihood``, checked against the data it will model.

    ``in_features``: the size of flat decoder features, or None for a convolutional decoder
    that emits the head's ``params_per_value`` parameters per value itself (``DecoderHead``).
    ``data_kind`` is the dataset's: "binary" ({0, 1}), "unit" ([0, 1]) or "real".
    """
    if likelihood not in LIKELIHOODS:
        raise ConfigError(
            f"unknown likelihood {likelihood!r} (known: {', '.join(LIKELIHOODS)})"
        )
    if likelihood == "bernoulli" and data_kind != "binary":
        raise ConfigError(
            f"the bernoulli likelihood needs binary data, but this data is {data_kind!r}"
            " (values not all 0 or 1): set data.binarize to static, dynamic or threshold,"
            " or use likelihood continuous-bernoulli or gaussian-*"
        )
    if likelihood == "continuous-bernoulli" and data_kind == "real":
        raise ConfigError(
            "the continuous-bernoulli likelihood needs data in [0, 1], but this data is real-valued"
        )
    if likelihood == "bernoulli":
        return BernoulliHead(in_features, event_shape)
    if likelihood == "continuous-bernoulli":
        return ContinuousBernoulliHead(in_features, event_shape)
    if likelihood == "gaussian-sigmoid":
        return GaussianHead(in_features, event_shape, "pixel", sigma, min_sigma, sigmoid_mean=True)
    variance = likelihood.split("-", 1)[1]
    return GaussianHead(in_features, event_shape, variance, sigma, min_sigma)

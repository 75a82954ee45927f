"""Objectives as pure functions of distributions, in nats per example.

Every function returns one value per example, shape (B,) or (K, B); callers reduce once.
Equation numbers are Kingma & Welling, *Auto-Encoding Variational Bayes* (2014).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch.distributions import Distribution, kl_divergence

__all__ = [
    "ElboTerms",
    "elbo_terms",
    "iwae_bound",
    "kl_term",
    "log_mean_exp",
    "log_weights",
]

Likelihood = Callable[[torch.Tensor], Distribution]
"""z (..., B, D) → p(x|z) with batch shape (..., B)."""


class ElboTerms(NamedTuple):
    """Per-example parts of the ELBO, each (B,), in nats: ``elbo = rec - kl``."""

    elbo: torch.Tensor
    rec: torch.Tensor
    """Reconstruction term E_q[log p(x|z)], estimated with L samples."""
    kl: torch.Tensor
    """KL(q(z|x) || p(z)), analytic or estimated with the same L samples."""


def kl_term(
    posterior: Distribution, prior: Distribution, z: torch.Tensor | None = None
) -> torch.Tensor:
    """KL(q || p) per example (B,): analytic where torch registers it, else a sampled estimate.

    The sampled estimate averages log q(z) - log p(z) over the leading sample dimension of
    ``z`` (L, B, D), which must then be given.
    """
    try:
        return kl_divergence(posterior, prior)
    except NotImplementedError:
        if z is None:
            raise ValueError("no analytic KL is registered for these distributions; pass z") from None
        return (posterior.log_prob(z) - prior.log_prob(z)).mean(0)


def elbo_terms(
    x: torch.Tensor,
    posterior: Distribution,
    prior: Distribution,
    likelihood: Likelihood,
    samples: int = 1,
    estimator: str = "analytic",
) -> ElboTerms:
    """The SGVB estimate of the ELBO with ``samples`` = L draws of z per datapoint.

    ``estimator="mc"`` is the generic estimator A (eq. 6):
    mean_l [log p(x, z_l) - log q(z_l|x)]. ``estimator="analytic"`` is estimator B (eq. 7):
    -KL(q||p) in closed form plus mean_l log p(x|z_l). ``rsample`` is the reparameterization
    trick (sec. 2.4), so gradients flow through z.
    """
    z = posterior.rsample((samples,))  # (L, B, D)
    rec = likelihood(z).log_prob(x).mean(0)
    if estimator == "analytic":
        kl = kl_term(posterior, prior, z)
    elif estimator == "mc":
        kl = (posterior.log_prob(z) - prior.log_prob(z)).mean(0)
    else:
        raise ValueError(f"unknown estimator {estimator!r}")
    return ElboTerms(rec - kl, rec, kl)


def log_weights(
    x: torch.Tensor,
    posterior: Distribution,
    prior: Distribution,
    likelihood: Likelihood,
    samples: int,
) -> torch.Tensor:
    """Importance log-weights log p(x, z_k) - log q(z_k|x) for k = 1..K, shape (K, B)."""
    z = posterior.rsample((samples,))
    return likelihood(z).log_prob(x) + prior.log_prob(z) - posterior.log_prob(z)


def log_mean_exp(values: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/K) sum_k exp(values_k) along ``dim``, computed stably."""
    return torch.logsumexp(values, dim) - math.log(values.shape[dim])


def iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """The importance-weighted bound (Burda et al. 2016) from log-weights (K, B) → (B,).

    With K = 1 it is the estimator-A ELBO; as K grows it tightens to log p(x), which is why
    the same function serves as the importance-sampled log-likelihood estimate.
    """
    return log_mean_exp(log_w, 0)

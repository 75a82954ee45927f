"""Objectives as pure functions of distributions, in nats per example.

Every function returns one value per example, shape (B,) or (K, B); callers reduce once.
Equation numbers are Kingma & Welling, *Auto-Encoding Variational Bayes* (2014).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Distribution, kl_divergence

__all__ = [
    "ElboTerms",
    "elbo_terms",
    "iwae_bound",
    "jacobian_frobenius",
    "kl_sparsity",
    "kl_term",
    "l1_sparsity",
    "log_mean_exp",
    "log_weights",
    "reconstruction_loss",
    "sigmoid_jacobian_frobenius",
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


# ---------------------------------------------------------------------------------------------
# deterministic autoencoders: reconstruction losses and penalties on the code


def reconstruction_loss(output: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """L(x, g(f(x))) per example (B,), summed over the pixels of each example.

    ``kind="bce"``: ``output`` holds logits and the loss is the cross-entropy
    -sum_i [x_i log s_i + (1 - x_i) log(1 - s_i)], s = sigmoid(logits), in nats (the Bernoulli
    negative log-likelihood when x is binary; for x in [0, 1] it is not zero at s = x).
    ``kind="mse"``: ``output`` is the reconstruction and the loss is sum_i (output_i - x_i)^2.
    """
    if kind == "bce":
        per_value = F.binary_cross_entropy_with_logits(output, x, reduction="none")
    elif kind == "mse":
        per_value = (output - x).pow(2)
    else:
        raise ValueError(f"unknown reconstruction loss {kind!r}")
    return per_value.flatten(1).sum(1)


def l1_sparsity(code: torch.Tensor) -> torch.Tensor:
    """The L1 norm of the code per example, sum_j |h_j|, shape (B,)."""
    return code.abs().sum(-1)


def kl_sparsity(code: torch.Tensor, target: float, eps: float = 1e-6) -> torch.Tensor:
    """sum_j KL(Bernoulli(rho) || Bernoulli(rho_hat_j)), rho_hat_j the batch mean of h_j.

    The sparsity penalty of Ng's sparse autoencoder notes (sec. 3): ``code`` (B, D) holds
    activations in (0, 1) and ``target`` is rho. The mean activations are a property of the
    batch, so this returns one value (a scalar), not one per example. rho_hat is kept in
    [eps, 1 - eps] so a dead or saturated unit gives a large but finite penalty.
    """
    rho_hat = code.mean(0).clamp(eps, 1 - eps)
    rho = torch.full_like(rho_hat, target)
    return kl_divergence(Bernoulli(probs=rho), Bernoulli(probs=rho_hat)).sum()


def sigmoid_jacobian_frobenius(code: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """||dh/dx||_F^2 per example (B,) for one sigmoid layer h = sigmoid(W x + b), in closed form.

    dh_j/dx_i = h_j (1 - h_j) W_ji, so ||J||_F^2 = sum_j (h_j (1 - h_j))^2 sum_i W_ji^2
    (Rifai et al. 2011, eq. 5). ``code`` is h (B, D), ``weight`` is W (D, F).
    """
    return ((code * (1 - code)).pow(2) * weight.pow(2).sum(1)).sum(-1)


def jacobian_frobenius(
    encoder: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
    """||df/dx||_F^2 per example (B,) of any encoder f: (F,) → (D,), exactly, by autograd.

    ``x`` is (B, F); ``encoder`` maps one example, and is vectorised over the batch with
    ``torch.func.vmap`` of a reverse-mode Jacobian (D backward passes, no finite differences).
    The result is differentiable in the encoder's parameters.
    """
    jacobian = torch.func.vmap(torch.func.jacrev(encoder))(x)  # (B, D, F)
    return jacobian.pow(2).flatten(1).sum(1)

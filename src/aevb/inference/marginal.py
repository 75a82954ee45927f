"""The marginal-likelihood estimator of Kingma & Welling (2014), Appendix D.

For any normalised q(z) whose support lies inside the posterior's,
E_{z ~ p(z|x)} [q(z) / p(x, z)] = 1 / p(x), so L posterior draws (HMC, one chain per datapoint)
give log p(x) ≈ -(logsumexp_l [log q(z_l) - log p(x, z_l)] - log L). q is a full-covariance
Gaussian fitted to a first set of draws and evaluated on a second, fresh one.

A reciprocal (harmonic-mean type) estimator: unbiased for 1/p(x), but by Jensen its -log
overestimates log p(x), by more the larger the variance of q/p(x, z) under the posterior, which
is finite only when q's tails are lighter than the posterior's: hence q fitted to posterior
draws. Importance sampling from the same q (``fitted_importance_sampled``) errs low instead, so
the two bracket log p(x) in expectation when q fits well.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.distributions import MultivariateNormal

from aevb.inference.hmc import LogDensity, sample_chains
from aevb.inference.objectives import log_mean_exp

__all__ = ["RIDGE", "AppendixDResult", "appendix_d_log_marginal", "fit_gaussian",
           "fitted_importance_sampled", "reciprocal_importance_sampled"]

RIDGE = 1e-6
"""Added to the fitted covariance's diagonal, relative to its mean variance (trace / D)."""


class AppendixDResult(NamedTuple):
    """The Appendix D estimate for a batch of B datapoints."""

    log_marginal: torch.Tensor
    """(B,) estimated log p(x) in nats (≤ 0 for discrete x)."""
    fitted: MultivariateNormal
    """Batch shape (B,): the Gaussian q fitted to the first set of posterior draws."""
    accept_rate: torch.Tensor
    """(B,) mean HMC acceptance probability per chain after burn-in."""


def fit_gaussian(z: torch.Tensor, ridge: float = RIDGE) -> MultivariateNormal:
    """A full-covariance Gaussian per chain (batch shape (B,)) fitted to draws z (L, B, D): the
    sample mean and covariance plus ``ridge`` · (trace / D) · I, positive definite even for
    nearly collinear draws (or L ≤ D)."""
    mean = z.mean(0)
    centred = z - mean
    cov = torch.einsum("lbi,lbj->bij", centred, centred) / max(z.shape[0] - 1, 1)
    dim = z.shape[-1]
    scale = cov.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(torch.finfo(z.dtype).eps)
    eye = torch.eye(dim, dtype=z.dtype, device=z.device)
    return MultivariateNormal(mean, covariance_matrix=cov + ridge * scale[:, None, None] * eye)


def _log_joint_each(log_joint: LogDensity, z: torch.Tensor) -> torch.Tensor:
    """log p(x_b, z_lb) for draws z (L, B, D) → (L, B); ``log_joint`` takes one draw per chain."""
    with torch.no_grad():
        return torch.stack([log_joint(z_l) for z_l in z])


def reciprocal_importance_sampled(log_joint: LogDensity, density: MultivariateNormal,
                                  z: torch.Tensor) -> torch.Tensor:
    """log p(x) ≈ -log (1/L) Σ_l q(z_l) / p(x, z_l) per datapoint (B,), from posterior draws
    z (L, B, D) and a density q with batch shape (B,) (Appendix D's estimate, step 4).
    """
    with torch.no_grad():
        log_ratio = density.log_prob(z) - _log_joint_each(log_joint, z)
    return -log_mean_exp(log_ratio, 0)


def appendix_d_log_marginal(log_joint: LogDensity, z0: torch.Tensor, samples: int = 1000,
                            burn_in: int = 200, leapfrog_steps: int = 10, step_size: float = 0.1,
                            target_accept: float = 0.9,
                            generator: torch.Generator | None = None) -> AppendixDResult:
    """Appendix D's estimate of log p(x_b) for each of B datapoints.

    ``log_joint(z)`` is log p(x_b, z_b) (B,) for z (B, D), one HMC chain per datapoint from z0
    (B, D) (the encoder's mean is a good start). After ``burn_in`` adapting transitions the
    chains draw ``samples`` states that fit q, then ``samples`` more for the estimate. Cost:
    (burn_in + 2 · samples) · (leapfrog_steps + 1) gradients of log_joint on the batch.
    """
    draws, accept_rate = sample_chains(
        log_joint, z0, 2 * samples, burn_in=burn_in, leapfrog_steps=leapfrog_steps,
        step_size=step_size, target_accept=target_accept, generator=generator,
    )
    fitted = fit_gaussian(draws[:samples])
    log_marginal = reciprocal_importance_sampled(log_joint, fitted, draws[samples:])
    return AppendixDResult(log_marginal, fitted, accept_rate)


def fitted_importance_sampled(log_joint: LogDensity, proposal: MultivariateNormal,
                              samples: int) -> torch.Tensor:
    """log p(x) ≈ log (1/K) Σ_k p(x, z_k) / q(z_k), z_k ~ q = ``proposal`` (batch shape (B,),
    e.g. ``AppendixDResult.fitted``), per datapoint (B,): low in log on average, the opposite
    of Appendix D's error. Draws use the global torch RNG."""
    with torch.no_grad():
        z = proposal.sample((samples,))
        log_w = _log_joint_each(log_joint, z) - proposal.log_prob(z)
    return log_mean_exp(log_w, 0)

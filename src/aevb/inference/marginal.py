"""The marginal-likelihood estimator of Kingma & Welling (2014), Appendix D.

For a datapoint x and any normalised density q(z) whose support lies inside the posterior's,

    E_{z ~ p(z|x)} [ q(z) / p(x, z) ] = ∫ q(z) / p(x) dz = 1 / p(x),

so L posterior draws z_l give  log p(x) ≈ -log (1/L) Σ_l q(z_l) / p(x, z_l), evaluated here in
log space as -(logsumexp_l [log q(z_l) - log p(x, z_l)] - log L). The posterior draws come from
HMC (``aevb.inference.hmc``), one chain per datapoint; q is a full-covariance Gaussian fitted to a first
set of L draws, and the estimate averages over a second, fresh set from the same chains, so
that q is independent of the draws it is evaluated on.

This is a reciprocal (harmonic-mean type) importance-sampling estimator. The average inside
the log is unbiased for 1/p(x) and consistent as L grows, but its log is not: by Jensen's
inequality -log of an unbiased estimate of 1/p(x) overestimates log p(x) on average, and the
overestimate is driven by the variance of the ratio q/p(x, z) under the posterior. That
variance is finite only when q's tails fall off faster than the posterior's; a q with heavier
tails makes the sum depend on rare draws that a finite L mostly misses, and the estimate sits
too high, possibly by a lot. Hence q is fitted to posterior draws (matching its spread) rather
than chosen freely, and the paper asks for a q with light tails. The opposite estimator,
importance sampling from the same q (``fitted_importance_sampled``), errs low instead, so the
two bracket log p(x) in expectation when q fits well.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.distributions import MultivariateNormal

from aevb.inference.hmc import LogDensity, sample_chains
from aevb.inference.objectives import log_mean_exp

__all__ = [
    "RIDGE",
    "AppendixDResult",
    "appendix_d_log_marginal",
    "fit_gaussian",
    "fitted_importance_sampled",
    "reciprocal_importance_sampled",
]

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
    """A full-covariance Gaussian per chain fitted to draws z (L, B, D): the sample mean and
    the unbiased sample covariance plus ``ridge`` · (trace / D) · I, which keeps it positive
    definite when the draws are nearly collinear (or L ≤ D) while moving it by a negligible
    relative amount. Batch shape (B,).
    """
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


def reciprocal_importance_sampled(
    log_joint: LogDensity, density: MultivariateNormal, z: torch.Tensor
) -> torch.Tensor:
    """log p(x) ≈ -log (1/L) Σ_l q(z_l) / p(x, z_l) per datapoint (B,), from posterior draws
    z (L, B, D) and a density q with batch shape (B,) (Appendix D's estimate, step 4).
    """
    with torch.no_grad():
        log_ratio = density.log_prob(z) - _log_joint_each(log_joint, z)
    return -log_mean_exp(log_ratio, 0)


def appendix_d_log_marginal(
    log_joint: LogDensity,
    z0: torch.Tensor,
    samples: int = 1000,
    burn_in: int = 200,
    leapfrog_steps: int = 10,
    step_size: float = 0.1,
    target_accept: float = 0.9,
    generator: torch.Generator | None = None,
) -> AppendixDResult:
    """Kingma & Welling's Appendix D estimate of log p(x_b) for each of B datapoints.

    ``log_joint(z)`` is log p(x_b, z_b) (B,) for z (B, D), one HMC chain per datapoint,
    started at z0 (B, D) (the encoder's mean is a good start). After ``burn_in`` adapting
    transitions the chains draw 2 · ``samples`` states with the step size frozen: the first
    ``samples`` fit q (``fit_gaussian``), the next ``samples`` continue the same chains and
    enter the estimate (``reciprocal_importance_sampled``). Cost: (burn_in + 2 · samples) ·
    (leapfrog_steps + 1) gradient evaluations of log_joint on the batch.
    """
    draws, accept_rate = sample_chains(
        log_joint, z0, 2 * samples, burn_in=burn_in, leapfrog_steps=leapfrog_steps,
        step_size=step_size, target_accept=target_accept, generator=generator,
    )
    fitted = fit_gaussian(draws[:samples])
    log_marginal = reciprocal_importance_sampled(log_joint, fitted, draws[samples:])
    return AppendixDResult(log_marginal, fitted, accept_rate)


def fitted_importance_sampled(
    log_joint: LogDensity, proposal: MultivariateNormal, samples: int
) -> torch.Tensor:
    """log p(x) ≈ log (1/K) Σ_k p(x, z_k) / q(z_k), z_k ~ q, per datapoint (B,), with K =
    ``samples`` draws from ``proposal`` (batch shape (B,)), e.g. ``AppendixDResult.fitted``.

    Unbiased for p(x), so low in log on average: it and the Appendix D estimate err in
    opposite directions. Draws use the global torch RNG.
    """
    with torch.no_grad():
        z = proposal.sample((samples,))
        log_w = _log_joint_each(log_joint, z) - proposal.log_prob(z)
    return log_mean_exp(log_w, 0)

"""Objectives as pure functions of distributions, in nats per example.

One value per example, (B,) or (K, B), reduced once by the caller; properties of a whole batch
(sparsity KL, free-bits floor, MMD, sliced Wasserstein) are scalars. Equations: Kingma & Welling
(2014).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Distribution, Independent, kl_divergence

__all__ = ["ELEMENTS_PER_CHUNK", "ELEMENTS_PER_CHUNK_GPU", "KERNELS", "ElboTerms", "Kernel",
           "elbo_terms", "elements_per_chunk", "free_bits_kl", "imq_kernel", "importance_sampled",
           "iwae_bound", "jacobian_frobenius", "kl_per_dimension", "kl_sparsity", "l1_sparsity",
           "log_mean_exp", "log_weights", "mmd_u_statistic", "rbf_kernel", "reconstruction_loss",
           "sigmoid_jacobian_frobenius", "sliced_wasserstein"]

Likelihood = Callable[[torch.Tensor], Distribution]
"""z (..., B, D) → p(x|z) with batch shape (..., B)."""

ELEMENTS_PER_CHUNK = 1 << 20
"""Decoder outputs (samples × points × pixels) per importance-sampling chunk on a CPU: 4 MiB of
float32 per temporary stays in the cache between passes, and below glibc's mmap threshold (32
MiB at most), above which every allocation maps fresh pages and page-faults on them."""

ELEMENTS_PER_CHUNK_GPU = 1 << 26
"""The same on a GPU (256 MiB of float32), which needs many rows per kernel and pays kernel
launches per chunk: on an H100 (784-500-50 net, 100 points, K = 5000, float32) chunks of 2^20
gave 2.9 M (points x K)/s, 2^23 25 M, 2^25 30-37 M, 2^26 37 M, under 1 GiB at the peak."""


def elements_per_chunk(device: torch.device | None) -> int:
    """``ELEMENTS_PER_CHUNK`` on a CPU (or where the device is not known), else the GPU's."""
    return ELEMENTS_PER_CHUNK if device is None or device.type == "cpu" else ELEMENTS_PER_CHUNK_GPU


class ElboTerms(NamedTuple):
    """Per-example parts of the ELBO in nats: ``elbo = rec - sum of every KL part``. ``kl``
    names one KL per latent layer (a VAE: ``{"z": ...}``), each (B, D_layer) per latent
    dimension where the distributions factorise, else (B, 1)."""

    rec: torch.Tensor
    """Reconstruction term E_q[log p(x|z)] (B,), estimated with L samples."""
    kl: dict[str, torch.Tensor]

    @property
    def kl_total(self) -> torch.Tensor:
        """The whole KL (B,): the rate, in the rate-distortion view."""
        return torch.stack([part.sum(-1) for part in self.kl.values()]).sum(0)

    @property
    def elbo(self) -> torch.Tensor:
        return self.rec - self.kl_total


def _factors(distribution: Distribution) -> Distribution | None:
    """The per-dimension distribution under an ``Independent(..., 1)``, else None."""
    if isinstance(distribution, Independent) and distribution.reinterpreted_batch_ndims == 1:
        return distribution.base_dist
    return None


def kl_per_dimension(posterior: Distribution, prior: Distribution, z: torch.Tensor | None = None,
                     analytic: bool = True) -> torch.Tensor:
    """KL(q || p) per example and latent dimension, (B, D); (B, 1) if they do not factorise.
    Analytic where torch registers a closed form (and ``analytic``), else mean_l [log q(z_l) -
    log p(z_l)] over z (L, B, D), then required: estimators A and B (eqs. 6, 7) differ here."""
    q, p = _factors(posterior), _factors(prior)
    if q is None or p is None:
        q, p = posterior, prior
    if analytic:
        try:
            kl = kl_divergence(q, p)
            return kl if q is not posterior else kl.unsqueeze(-1)
        except NotImplementedError:
            pass
    if z is None:
        raise ValueError("no analytic KL is registered for these distributions; pass z")
    sampled = (q.log_prob(z) - p.log_prob(z)).mean(0)
    return sampled if q is not posterior else sampled.unsqueeze(-1)


def elbo_terms(x: torch.Tensor, posterior: Distribution, prior: Distribution,
               likelihood: Likelihood, samples: int = 1, estimator: str = "analytic") -> ElboTerms:
    """The SGVB estimate of the ELBO with ``samples`` = L draws of z per datapoint: "mc" is
    estimator A (eq. 6), mean_l [log p(x, z_l) - log q(z_l|x)]; "analytic" is B (eq. 7), the
    closed-form -KL(q||p) plus mean_l log p(x|z_l). ``rsample`` is the reparameterization
    trick (sec. 2.4)."""
    if estimator not in ("analytic", "mc"):
        raise ValueError(f"unknown estimator {estimator!r}")
    z = posterior.rsample((samples,))  # (L, B, D)
    rec = likelihood(z).log_prob(x).mean(0)
    kl = kl_per_dimension(posterior, prior, z, analytic=estimator == "analytic")
    return ElboTerms(rec, {"z": kl})


def free_bits_kl(kl: torch.Tensor, floor: float) -> torch.Tensor:
    """sum_j max(floor, mean_b KL_bj), a scalar for ``kl`` (B, D): the "free bits" of Kingma et
    al. (2016, appendix C.8); a dimension whose minibatch KL is below the floor costs the floor
    and gets no gradient pushing it to the prior."""
    return kl.mean(0).clamp(min=floor).sum()


def log_weights(x: torch.Tensor, posterior: Distribution, prior: Distribution,
                likelihood: Likelihood, samples: int) -> torch.Tensor:
    """Importance log-weights log p(x, z_k) - log q(z_k|x) for k = 1..K, shape (K, B)."""
    z = posterior.rsample((samples,))
    return likelihood(z).log_prob(x) + prior.log_prob(z) - posterior.log_prob(z)


def log_mean_exp(values: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/K) sum_k exp(values_k) along ``dim``, computed stably."""
    return torch.logsumexp(values, dim) - math.log(values.shape[dim])


def iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """The importance-weighted bound (Burda et al. 2016) from log-weights (K, B) → (B,): at K = 1
    the estimator-A ELBO; it tightens to log p(x) as K grows, so it is also the IS estimate."""
    return log_mean_exp(log_w, 0)


def importance_sampled(draw_log_weights: Callable[[int], torch.Tensor], samples: int,
                       values_per_sample: int, device: torch.device | None = None) -> torch.Tensor:
    """log p(x) ≈ log (1/K) sum_k w_k per example (B,), the K log-weights drawn in chunks.

    ``draw_log_weights(k)`` gives (k, B) fresh log-weights; ``values_per_sample`` (B × pixels)
    sets the chunk so that memory stays near ``elements_per_chunk(device)`` values whatever K.
    """
    chunk = max(1, elements_per_chunk(device) // max(1, values_per_sample))
    parts = [draw_log_weights(min(chunk, samples - k)) for k in range(0, samples, chunk)]
    return iwae_bound(torch.cat(parts, 0))


# ---------------------------------------------------------------------------------------------
# deterministic autoencoders: reconstruction losses and penalties on the code


def reconstruction_loss(output: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """L(x, g(f(x))) per example (B,), summed over pixels. "bce": ``output`` holds logits, the
    cross-entropy -sum_i [x_i log s_i + (1 - x_i) log(1 - s_i)], s = sigmoid(logits), in nats
    (not zero at s = x for grey x); "mse": ``output`` is the reconstruction, sum_i (out_i - x_i)^2.
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
    """sum_j KL(Bernoulli(rho) || Bernoulli(rho_hat_j)), rho_hat_j the batch mean of h_j, a
    scalar: Ng's sparse autoencoder notes (sec. 3), ``code`` (B, D) in (0, 1), rho = ``target``.
    rho_hat is kept in [eps, 1 - eps]: a dead or saturated unit costs a large, finite penalty.
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


def jacobian_frobenius(encoder: Callable[[torch.Tensor], torch.Tensor],
                       x: torch.Tensor) -> torch.Tensor:
    """||df/dx||_F^2 per example (B,) of any encoder f: (F,) → (D,) on x (B, F), exactly: a
    ``vmap`` of a reverse-mode Jacobian, differentiable in the encoder's parameters."""
    jacobian = torch.func.vmap(torch.func.jacrev(encoder))(x)  # (B, D, F)
    return jacobian.pow(2).flatten(1).sum(1)


# ---------------------------------------------------------------------------------------------
# Wasserstein autoencoders: distances between the batch of codes and the prior (scalars)

Kernel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(N, D), (M, D) → the Gram matrix (N, M) of a positive-definite kernel."""


def _squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||x_i - y_j||^2 (N, M), with a finite gradient where x_i = y_j (``cdist``'s root has
    none at zero)."""
    return (x.pow(2).sum(-1, keepdim=True) + y.pow(2).sum(-1) - 2 * x @ y.T).clamp(min=0)


def imq_kernel(x: torch.Tensor, y: torch.Tensor, variance: float = 1.0) -> torch.Tensor:
    """The inverse multiquadratic kernel C / (C + ||x - y||^2), Gram matrix (N, M), C = 2 D
    sigma^2, sigma^2 = ``variance`` the prior's: Tolstikhin et al. (2018), sec. 4, for its
    heavier tails than the RBF kernel's."""
    scale = 2 * x.shape[-1] * variance
    return scale / (scale + _squared_distances(x, y))


def rbf_kernel(x: torch.Tensor, y: torch.Tensor, variance: float = 1.0) -> torch.Tensor:
    """The Gaussian kernel exp(-||x - y||^2 / C), Gram matrix (N, M), C as ``imq_kernel``'s."""
    scale = 2 * x.shape[-1] * variance
    return torch.exp(-_squared_distances(x, y) / scale)


KERNELS: dict[str, Kernel] = {"imq": imq_kernel, "rbf": rbf_kernel}


def mmd_u_statistic(x: torch.Tensor, y: torch.Tensor, kernel: Kernel) -> torch.Tensor:
    """The unbiased MMD^2(P, Q) from x (N, D) ~ P and y (M, D) ~ Q, a scalar: the U-statistic
    of Gretton et al. (2012, eq. 3), so it can be below zero when P = Q; N, M >= 2."""
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError(f"the MMD U-statistic needs at least 2 points per sample, got {n}, {m}")
    kxx, kyy = kernel(x, x), kernel(y, y)
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return within_x + within_y - 2 * kernel(x, y).mean()


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, projections: int | torch.Tensor,
                       p: float = 2.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """SW_p = (mean_l W_p^p(theta_l . x, theta_l . y))^(1/p) of x, y (N, D), a scalar (Kolouri
    et al. 2019, eq. 10): in 1-D, W_p of equal-sized samples pairs the sorted projections.
    ``projections``: L directions drawn uniformly (from ``generator``), or the directions (D, L).
    """
    if x.shape != y.shape or x.dim() != 2:
        raise ValueError(f"sliced_wasserstein needs two samples of one shape (N, D), got"
                         f" {tuple(x.shape)} and {tuple(y.shape)}")
    if isinstance(projections, int):
        projections = torch.randn(x.shape[1], projections, generator=generator,
                                  device=x.device, dtype=x.dtype)
    theta = projections / projections.norm(dim=0, keepdim=True)
    x_sorted = (x @ theta).sort(0).values
    y_sorted = (y @ theta).sort(0).values
    return (x_sorted - y_sorted).abs().pow(p).mean().pow(1 / p)

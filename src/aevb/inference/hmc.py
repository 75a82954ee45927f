"""Hamiltonian Monte Carlo over a batch of independent chains (Neal 2011, *MCMC using
Hamiltonian dynamics*).

Chain c targets its own unnormalised density p_c(z) (one per datapoint: p(z|x_c) up to p(x_c));
a ``LogDensity`` maps states (C, D) to log p_c (C,). With unit mass H(z, m) = -log p(z) + |m|²/2;
a transition draws m ~ N(0, I), integrates by leapfrog and accepts with probability
min(1, exp(-ΔH)). Step sizes are per chain (C,). Gradients are taken with respect to z only, so
parameters' ``.grad`` stay untouched; randomness comes from ``generator`` (on z's device) if given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

__all__ = ["JITTER", "HMCStep", "LogDensity", "adapt_step_size", "hmc_step", "leapfrog",
           "log_density_grad", "sample_chains"]

LogDensity = Callable[[torch.Tensor], torch.Tensor]
"""z (C, D) -> (C,) unnormalised log density of each chain's target; differentiable in z."""

JITTER = 0.5
"""``sample_chains`` draws each transition's step size uniformly within ±JITTER of ε
(Neal 2011, section 3.2)."""

GradFn = Callable[[torch.Tensor], torch.Tensor]
"""z (C, D) -> gradient of the log density (C, D)."""


class HMCStep(NamedTuple):
    """The outcome of one HMC transition of every chain."""

    z: torch.Tensor
    """(C, D) the chains' new states (detached)."""
    accept_prob: torch.Tensor
    """(C,) Metropolis acceptance probability min(1, exp(-ΔH)); 0 for non-finite proposals."""
    accepted: torch.Tensor
    """(C,) bool, whether each chain moved."""


def log_density_grad(log_density: LogDensity, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log density (C,), its gradient in z (C, D)), detached; also under ``torch.no_grad()``."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        value = log_density(z)
        (grad,) = torch.autograd.grad(value.sum(), inputs=(z,))
    return value.detach(), grad.detach()


def _per_chain(step_size: torch.Tensor | float, z: torch.Tensor) -> torch.Tensor:
    """A step size, scalar or (C,), as a (C, 1) or scalar tensor that broadcasts over D."""
    eps = torch.as_tensor(step_size, dtype=z.dtype, device=z.device)
    return eps.unsqueeze(-1) if eps.dim() == 1 else eps


def _leapfrog(z: torch.Tensor, momentum: torch.Tensor, grad_fn: GradFn,
              step_size: torch.Tensor | float, steps: int,
              grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Leapfrog from (z, momentum) given the gradient at z; returns (z, momentum, gradient)."""
    if steps < 1:
        raise ValueError(f"leapfrog needs at least one step, got {steps}")
    eps = _per_chain(step_size, z)
    momentum = momentum + 0.5 * eps * grad
    for i in range(steps):
        z = z + eps * momentum
        grad = grad_fn(z)
        # Full momentum steps in the middle, half a step at the end (Neal 2011, eq. 2.28-2.30).
        momentum = momentum + (eps if i < steps - 1 else 0.5 * eps) * grad
    return z, momentum, grad


def leapfrog(z: torch.Tensor, momentum: torch.Tensor, grad_fn: GradFn,
             step_size: torch.Tensor | float, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` leapfrog steps for H = -log p(z) + |m|²/2 from z, momentum (C, D); returns
    (z, momentum). ``grad_fn(z)`` is the gradient of log p (C, D); ``step_size`` scalar or (C,).
    """
    z, momentum, _ = _leapfrog(z, momentum, grad_fn, step_size, steps, grad_fn(z))
    return z, momentum


def _transition(log_density: LogDensity, z: torch.Tensor, value: torch.Tensor, grad: torch.Tensor,
                step_size: torch.Tensor | float, leapfrog_steps: int,
                generator: torch.Generator | None) -> tuple[HMCStep, torch.Tensor, torch.Tensor]:
    """One transition from z given its log density and gradient (each state evaluated once);
    returns the step and the new state's (value, grad)."""
    last: dict[str, torch.Tensor] = {}

    def grad_fn(x: torch.Tensor) -> torch.Tensor:
        last["value"], g = log_density_grad(log_density, x)
        return g

    momentum = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
    z_new, m_new, grad_new = _leapfrog(z, momentum, grad_fn, step_size, leapfrog_steps, grad)
    value_new = last["value"]
    # ΔH = H(end) - H(start); a NaN or inf anywhere on the path makes the proposal invalid.
    delta_h = (value - value_new) + 0.5 * (m_new.pow(2).sum(-1) - momentum.pow(2).sum(-1))
    finite = (torch.isfinite(delta_h) & torch.isfinite(z_new).all(-1)
              & torch.isfinite(grad_new).all(-1))
    zero = torch.zeros_like(delta_h)
    accept_prob = torch.where(finite, torch.exp(-torch.where(finite, delta_h, zero)), zero)
    accept_prob = accept_prob.clamp(max=1.0)
    u = torch.rand(z.shape[:1], generator=generator, dtype=z.dtype, device=z.device)
    accepted = u < accept_prob
    keep = accepted.unsqueeze(-1)
    step = HMCStep(torch.where(keep, z_new, z).detach(), accept_prob, accepted)
    return step, torch.where(accepted, value_new, value), torch.where(keep, grad_new, grad)


def hmc_step(log_density: LogDensity, z: torch.Tensor, step_size: torch.Tensor | float,
             leapfrog_steps: int = 10, generator: torch.Generator | None = None) -> HMCStep:
    """One HMC transition per chain: fresh N(0, I) momentum, ``leapfrog_steps`` leapfrog steps
    of ``step_size`` (scalar or (C,)), a Metropolis test; non-finite proposals are rejected."""
    value, grad = log_density_grad(log_density, z)
    step, _, _ = _transition(log_density, z.detach(), value, grad, step_size, leapfrog_steps,
                             generator)
    return step


def adapt_step_size(step_size: torch.Tensor | float, accept_prob: torch.Tensor, target: float = 0.9,
                    rate: float = 0.05, bounds: tuple[float, float] = (1e-4, 10.0)) -> torch.Tensor:
    """One Robbins–Monro update per chain, log ε += rate · (accept_prob - target), clamped to
    ``bounds``: the new step sizes (C,), at a fixed point when the mean acceptance is ``target``.
    """
    eps = torch.as_tensor(step_size, dtype=accept_prob.dtype, device=accept_prob.device)
    log_eps = eps.log() + rate * (accept_prob - target)
    return log_eps.exp().clamp(*bounds)


def _adaptation_rate(t: int) -> float:
    # A decaying Robbins–Monro gain (sum diverges, sum of squares converges): large early so
    # that a badly chosen initial ε is corrected within the burn-in, even though a target of
    # 0.9 moves log ε up by at most 0.1 · rate per transition, and small late so that the
    # frozen ε is not just the last noisy iterate.
    return (1.0 + t / 10) ** -0.6


def sample_chains(log_density: LogDensity, z0: torch.Tensor, samples: int, burn_in: int = 100,
                  leapfrog_steps: int = 10, step_size: torch.Tensor | float = 0.1,
                  target_accept: float = 0.9, generator: torch.Generator | None = None,
                  progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Run C chains from z0 (C, D): ``burn_in`` transitions adapting each chain's ε toward
    ``target_accept`` (a decaying gain; ε then frozen at the geometric mean of its iterates
    over the burn-in's second half), then ``samples`` transitions. Returns (states (S, C, D),
    each chain's mean acceptance over the sampling phase (C,)).
    """
    z = z0.detach()
    eps = torch.as_tensor(step_size, dtype=z.dtype, device=z.device).expand(z.shape[0]).clone()
    value, grad = log_density_grad(log_density, z)
    draws = []
    accept = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
    log_eps_sum, averaged = torch.zeros_like(eps), 0
    for t in tqdm(range(burn_in + samples), desc="hmc", unit="step", disable=not progress):
        # a fresh U(1 - JITTER, 1 + JITTER) factor: with a fixed trajectory length, a direction
        # whose period is a multiple of it (or of half of it) is never explored
        jitter = 1 + JITTER * (2 * torch.rand(eps.shape, generator=generator, dtype=eps.dtype,
                                              device=eps.device) - 1)
        step, value, grad = _transition(log_density, z, value, grad, eps * jitter,
                                        leapfrog_steps, generator)
        z = step.z
        if t < burn_in:
            eps = adapt_step_size(eps, step.accept_prob, target_accept, _adaptation_rate(t))
            if 2 * t >= burn_in:
                log_eps_sum, averaged = log_eps_sum + eps.log(), averaged + 1
            if t == burn_in - 1:
                eps = (log_eps_sum / averaged).exp()
        else:
            draws.append(z)
            accept += step.accept_prob
    if not draws:
        return z.new_empty((0, *z.shape)), accept
    return torch.stack(draws), accept / samples

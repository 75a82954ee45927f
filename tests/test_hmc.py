import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from aevb.inference.hmc import adapt_step_size, hmc_step, leapfrog, log_density_grad, sample_chains

DTYPE = torch.float64
MEAN = torch.tensor([1.0, -2.0, 0.5], dtype=DTYPE)
COV = torch.tensor([[1.0, 0.8, 0.2], [0.8, 1.5, 0.3], [0.2, 0.3, 0.5]], dtype=DTYPE)


def target() -> MultivariateNormal:
    return MultivariateNormal(MEAN, COV)


def unit_log_density(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * z.pow(2).sum(-1)


def energy(z: torch.Tensor, momentum: torch.Tensor) -> torch.Tensor:
    return -unit_log_density(z) + 0.5 * momentum.pow(2).sum(-1)


def test_samples_match_gaussian_moments(validate_distributions):
    chains, samples = 200, 200
    z0 = torch.full((chains, 3), 3.0, dtype=DTYPE)  # away from the mode: burn-in must move it
    draws, _ = sample_chains(target().log_prob, z0, samples, burn_in=100,
                             generator=torch.Generator().manual_seed(0))
    assert draws.shape == (samples, chains, 3)
    flat = draws.reshape(-1, 3)
    # N = 200 chains x 200 draws = 40000; allowing an integrated autocorrelation time of 10
    # (measured: 1-4 per coordinate) leaves N_eff = 4000. Standard errors: mean_i
    # sqrt(S_ii / N_eff) <= sqrt(1.5 / 4000) = 0.019; covariance_ij sqrt((S_ii S_jj + S_ij^2)
    # / N_eff) <= sqrt(2 * 1.5^2 / 4000) = 0.034. Five of each: 0.097 and 0.17, per entry.
    n_eff = chains * samples / 10
    var = COV.diagonal()
    mean_tol = 5 * (var / n_eff).sqrt()
    cov_tol = 5 * ((var[:, None] * var[None, :] + COV.pow(2)) / n_eff).sqrt()
    assert ((flat.mean(0) - MEAN).abs() < mean_tol).all()
    assert ((torch.cov(flat.T) - COV).abs() < cov_tol).all()


def test_adapted_acceptance_is_near_target():
    z0 = target().sample((100,))
    for start in (0.1, 3.0):  # too small and too large an initial step
        _, accept = sample_chains(target().log_prob, z0, 100, burn_in=150, step_size=start,
                                  target_accept=0.9, generator=torch.Generator().manual_seed(1))
        assert abs(accept.mean().item() - 0.9) < 0.03
        assert (accept > 0.7).all()


def test_fixed_step_acceptance_is_strictly_between_0_and_1():
    z = torch.randn(500, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(2))
    step = hmc_step(unit_log_density, z, 1.5, leapfrog_steps=10,
                    generator=torch.Generator().manual_seed(3))
    rate = step.accept_prob.mean().item()
    assert 0.2 < rate < 0.95
    moved = (step.z != z).any(-1)
    assert torch.equal(moved, step.accepted)
    assert 0 < step.accepted.sum() < 500


def test_non_finite_proposals_are_rejected():
    def log_density(z: torch.Tensor) -> torch.Tensor:
        inside = z.abs().amax(-1) < 1  # NaN outside the box, as an overflowing decoder gives
        return torch.where(inside, unit_log_density(z), torch.full_like(z[:, 0], math.nan))

    z = torch.zeros(50, 2, dtype=DTYPE)
    step = hmc_step(log_density, z, 0.5, leapfrog_steps=5,
                    generator=torch.Generator().manual_seed(4))
    assert torch.isfinite(step.accept_prob).all()
    assert (step.accept_prob == 0).any() and step.accepted.any()  # both kinds of proposal
    assert not step.accepted[step.accept_prob == 0].any()
    assert (step.z.abs() < 1).all()


def test_leapfrog_is_reversible():
    gen = torch.Generator().manual_seed(5)
    z0 = torch.randn(20, 3, dtype=DTYPE, generator=gen)
    m0 = torch.randn(20, 3, dtype=DTYPE, generator=gen)
    eps = torch.linspace(0.05, 0.5, 20, dtype=DTYPE)  # one step size per chain

    def grad_fn(z: torch.Tensor) -> torch.Tensor:
        return log_density_grad(target().log_prob, z)[1]

    z1, m1 = leapfrog(z0, m0, grad_fn, eps, 25)
    assert (z1 - z0).abs().max() > 0.1
    z2, m2 = leapfrog(z1, -m1, grad_fn, eps, 25)
    assert torch.allclose(z2, z0, rtol=0, atol=1e-10)
    assert torch.allclose(-m2, m0, rtol=0, atol=1e-10)


def test_leapfrog_energy_error_is_second_order():
    gen = torch.Generator().manual_seed(6)
    z0 = torch.randn(100, 2, dtype=DTYPE, generator=gen)
    m0 = torch.randn(100, 2, dtype=DTYPE, generator=gen)

    def grad_fn(z: torch.Tensor) -> torch.Tensor:
        return -z

    def max_energy_error(eps: float) -> float:
        # the same trajectory length, so only the discretisation changes
        z, m = leapfrog(z0, m0, grad_fn, eps, round(1.0 / eps))
        return (energy(z, m) - energy(z0, m0)).abs().max().item()

    coarse, fine = max_energy_error(0.05), max_energy_error(0.025)
    assert coarse < 1e-2
    assert 3 < coarse / fine < 5


def test_log_density_grad_leaves_parameters_alone():
    net = torch.nn.Linear(3, 1).double()

    def log_density(z: torch.Tensor) -> torch.Tensor:
        return -net(z).squeeze(-1).pow(2) - z.pow(2).sum(-1)

    z = torch.randn(7, 3, dtype=DTYPE)
    with torch.no_grad():
        value, grad = log_density_grad(log_density, z)
    assert all(p.grad is None for p in net.parameters())
    assert not value.requires_grad and not grad.requires_grad
    assert value.shape == (7,) and grad.shape == (7, 3)
    expected = -2 * net(z).detach() * net.weight.detach() - 2 * z  # d/dz of the density
    assert torch.allclose(grad, expected)


def test_adapt_step_size_moves_toward_target():
    eps = torch.tensor([0.5, 0.5, 1e-4, 10.0], dtype=DTYPE)
    accept = torch.tensor([1.0, 0.2, 0.0, 1.0], dtype=DTYPE)
    new = adapt_step_size(eps, accept, target=0.9, rate=0.05)
    assert new[0] == pytest.approx(0.5 * math.exp(0.05 * 0.1))
    assert new[1] == pytest.approx(0.5 * math.exp(-0.05 * 0.7))
    assert new[2] == pytest.approx(1e-4) and new[3] == pytest.approx(10.0)  # clamped


def test_same_generator_seed_reproduces_the_chains():
    z0 = torch.zeros(10, 3, dtype=DTYPE)

    def run() -> torch.Tensor:
        return sample_chains(target().log_prob, z0, 5, burn_in=5,
                             generator=torch.Generator().manual_seed(7))[0]

    assert torch.equal(run(), run())


def test_every_chain_mixes_on_an_anisotropic_gaussian():
    # With a fixed trajectory length some chains' step sizes make it a near multiple of a
    # direction's period and those chains barely move in it (lag-1 autocorrelation ~0.97 was
    # seen before step-size jitter); every chain must decorrelate.
    posterior = MultivariateNormal(torch.zeros(2, dtype=DTYPE),
                                   torch.diag(torch.tensor([0.2, 0.05], dtype=DTYPE)))
    draws, _ = sample_chains(posterior.log_prob, torch.zeros(60, 2, dtype=DTYPE), 200,
                             burn_in=100, leapfrog_steps=5,
                             generator=torch.Generator().manual_seed(8))
    centred = draws - draws.mean(0)
    lag1 = (centred[1:] * centred[:-1]).mean(0) / centred.pow(2).mean(0)
    assert lag1.max() < 0.7

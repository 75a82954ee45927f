"""The SGVB estimators, the KL and the importance-sampled likelihood against known answers."""

import math

import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal

from aevb.config.run import model_config
from aevb.evaluation.evaluate import log_likelihood
from aevb.inference.objectives import (
    ELEMENTS_PER_CHUNK,
    ELEMENTS_PER_CHUNK_GPU,
    elbo_terms,
    importance_sampled,
    iwae_bound,
    kl_per_dimension,
    log_mean_exp,
    log_weights,
)
from aevb.models import Batch, DataSpec, build_model
from aevb.nn.nets import MLPConfig

pytestmark = pytest.mark.usefixtures("validate_distributions")


def diag_normal(loc, scale):
    return Independent(Normal(loc, scale), 1)


def test_analytic_kl_matches_monte_carlo():
    torch.manual_seed(0)
    q = diag_normal(torch.randn(4, 3), torch.rand(4, 3) + 0.3)
    p = diag_normal(torch.zeros(3), torch.ones(3))
    z = q.sample((200_000,))
    log_ratio = q.log_prob(z) - p.log_prob(z)
    mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(len(z))
    per_dimension = kl_per_dimension(q, p)
    assert per_dimension.shape == (4, 3)
    analytic = per_dimension.sum(-1)
    assert torch.all((analytic - mc).abs() < 4 * se + 1e-3)
    # and the closed form itself, written out once here as the reference
    mu, sigma = q.base_dist.loc, q.base_dist.scale
    closed = 0.5 * (sigma**2 + mu**2 - 1 - 2 * sigma.log())
    torch.testing.assert_close(per_dimension, closed)
    # estimator A's per-dimension KL: the same in expectation, dimension by dimension
    sampled = kl_per_dimension(q, p, z, analytic=False)
    per_dim_se = (q.base_dist.log_prob(z) - p.base_dist.log_prob(z)).std(0) / math.sqrt(len(z))
    assert torch.all((sampled - closed).abs() < 4 * per_dim_se + 1e-3)


def test_sampled_kl_fallback_when_no_closed_form():
    torch.manual_seed(1)
    q = diag_normal(torch.randn(2, 3), torch.ones(2, 3))
    # A full-covariance prior has no registered KL against Independent(Normal).
    p = MultivariateNormal(torch.zeros(3), torch.eye(3) * 2.0)
    with pytest.raises(ValueError):
        kl_per_dimension(q, p)
    z = q.sample((100_000,))
    sampled = kl_per_dimension(q, p, z)
    assert sampled.shape == (2, 1)  # the prior does not factorise: one KL for all of z
    exact = kl_per_dimension(MultivariateNormal(q.base_dist.loc, torch.eye(3)), p)
    torch.testing.assert_close(sampled, exact, atol=0.03, rtol=0.0)


def _tiny_vae(likelihood="gaussian-fixed", **kw):
    torch.manual_seed(2)
    config = model_config("vae", latent_dim=2, net=MLPConfig((8,), "tanh"), likelihood=likelihood,
                          **kw)
    return build_model(config, DataSpec((5,), "real"))


def test_estimators_a_and_b_agree_in_expectation():
    model = _tiny_vae()
    x = torch.randn(3, 5)
    with torch.no_grad():
        a = elbo_terms(x, model.posterior(x), model.prior(), model.likelihood, 200_000, "mc")
        b = elbo_terms(x, model.posterior(x), model.prior(), model.likelihood, 200_000, "analytic")
    torch.testing.assert_close(a.elbo, b.elbo, atol=0.05, rtol=0.0)
    torch.testing.assert_close(a.kl_total, b.kl_total, atol=0.05, rtol=0.0)


def test_estimator_b_has_lower_variance_than_a():
    model = _tiny_vae()
    x = torch.randn(3, 5)
    post, prior = model.posterior(x), model.prior()
    with torch.no_grad():
        draws = {
            name: torch.stack([elbo_terms(x, post, prior, model.likelihood, 1, name).elbo
                               for _ in range(2000)])
            for name in ("mc", "analytic")
        }
    assert torch.all(draws["analytic"].var(0) < draws["mc"].var(0))


def test_iwae_with_one_sample_is_the_estimator_a_elbo():
    model = _tiny_vae()
    x = torch.randn(6, 5)
    post, prior = model.posterior(x), model.prior()
    torch.manual_seed(3)
    bound = iwae_bound(log_weights(x, post, prior, model.likelihood, 1))
    torch.manual_seed(3)
    elbo = elbo_terms(x, post, prior, model.likelihood, 1, "mc").elbo
    torch.testing.assert_close(bound, elbo)


def test_log_mean_exp_is_stable_and_exact():
    values = torch.tensor([[1000.0, -1000.0], [1000.0, -1000.0]])
    torch.testing.assert_close(log_mean_exp(values), torch.tensor([1000.0, -1000.0]))
    small = torch.randn(7, 3)
    torch.testing.assert_close(log_mean_exp(small), small.exp().mean(0).log())


# --- a linear-Gaussian VAE, whose log p(x) is known in closed form --------------------------

def _linear_gaussian_vae(exact_posterior: bool):
    """x = W z + b + N(0, s^2 I) with z ~ N(0, I): p(x) = N(b, W W^T + s^2 I).

    W has orthogonal columns, so the true posterior is diagonal and the VAE's encoder can
    represent it exactly.
    """
    torch.manual_seed(4)
    d, D, s = 2, 6, 0.5
    config = model_config("vae", latent_dim=d, net=MLPConfig(()), likelihood="gaussian-fixed",
                          sigma=s)
    model = build_model(config, DataSpec((D,), "real"))
    q, _ = torch.linalg.qr(torch.randn(D, d))
    W = q * torch.tensor([2.0, 0.7])
    b = torch.randn(D)
    with torch.no_grad():
        model.likelihood_head.linear.weight.copy_(W)
        model.likelihood_head.linear.bias.copy_(b)
        post_var = 1.0 / (1.0 + (W**2).sum(0) / s**2)  # diag of (I + W^T W / s^2)^-1
        M = post_var[:, None] * W.T / s**2
        head = model.posterior_head.linear
        if exact_posterior:
            head.weight.copy_(torch.cat([M, torch.zeros(d, D)]))
            head.bias.copy_(torch.cat([-M @ b, post_var.log()]))
        else:  # a deliberately poor encoder: wrong scale and shifted mean
            head.weight.copy_(torch.cat([0.5 * M, torch.zeros(d, D)]))
            head.bias.copy_(torch.cat([-0.5 * M @ b + 0.3, (4 * post_var).log()]))
    marginal = MultivariateNormal(b, W @ W.T + s**2 * torch.eye(D))
    x = marginal.sample((50,))
    return model, x, marginal.log_prob(x)


def test_exact_posterior_makes_every_importance_weight_equal_log_px():
    model, x, exact = _linear_gaussian_vae(exact_posterior=True)
    with torch.no_grad():
        log_w = model.log_weights(Batch(x), 10)
        # Estimator A with q = p(z|x) has zero variance: log p(x, z) - log q(z|x) = log p(x).
        elbo_a = elbo_terms(x, model.posterior(x), model.prior(), model.likelihood, 1, "mc").elbo
        kl_to_prior = model.elbo_terms(Batch(x), 1).kl_total
    torch.testing.assert_close(log_w, exact.expand(10, -1), atol=1e-4, rtol=0)
    torch.testing.assert_close(elbo_a, exact, atol=1e-4, rtol=0)
    assert torch.all(kl_to_prior > 0)


def test_importance_sampling_converges_to_exact_log_px():
    model, x, exact = _linear_gaussian_vae(exact_posterior=False)
    torch.manual_seed(5)
    with torch.no_grad():
        elbo = model.elbo_terms(Batch(x), 1000).elbo
        errors = {k: (log_likelihood(model, Batch(x), k) - exact) for k in (1, 10, 100, 5000)}
    gaps = {k: e.abs().mean().item() for k, e in errors.items()}
    assert gaps[5000] < 0.05
    assert gaps[5000] < gaps[100] < gaps[10] < gaps[1]
    # A lower bound in expectation: never far above the truth, and above the ELBO on average.
    assert errors[5000].mean().abs() < 0.02
    assert errors[5000].max() < 0.2
    assert errors[10].mean() < 0.0
    assert (exact - elbo).mean() > 0.1
    assert log_likelihood(model, Batch(x), 5000).mean() > elbo.mean()


def test_importance_sampling_joins_all_chunks_before_one_logsumexp():
    drawn = []

    def counting_log_weights(samples):
        """0, 1, 2, … in order, so the answer is known exactly."""
        start = sum(drawn)
        drawn.append(samples)
        return torch.arange(start, start + samples, dtype=torch.float32)[:, None].expand(-1, 3)

    estimate = importance_sampled(counting_log_weights, 25, ELEMENTS_PER_CHUNK // 7)
    assert drawn == [7, 7, 7, 4]
    expected = torch.logsumexp(torch.arange(25.0), 0) - math.log(25)
    assert estimate.shape == (3,)
    torch.testing.assert_close(estimate, expected.expand(3))


@pytest.mark.parametrize(("device", "elements"), [
    (None, ELEMENTS_PER_CHUNK), ("cpu", ELEMENTS_PER_CHUNK), ("cuda", ELEMENTS_PER_CHUNK_GPU)])
def test_importance_sampling_chunks_by_the_device_that_computes_the_weights(device, elements):
    """A GPU takes chunks of ELEMENTS_PER_CHUNK_GPU values (the device only sets the size; the
    weights here are CPU tensors, so no GPU is needed to check it)."""
    drawn = []

    def log_weights(samples):
        drawn.append(samples)
        return torch.zeros(samples, 2)

    device = None if device is None else torch.device(device)
    importance_sampled(log_weights, 3 * (elements // 1000) + 5, 1000, device)
    assert drawn == [elements // 1000] * 3 + [5]


def test_learning_rate_schedules_are_one_table_of_pure_functions():
    from aevb.config.schema import LR_SCHEDULES
    from aevb.inference.schedules import (
        LEARNING_RATES,
        iwae_learning_rate_factor,
        learning_rate,
    )

    assert set(LEARNING_RATES) == set(LR_SCHEDULES)
    assert [learning_rate("constant", 1e-3, step, 10) for step in (0, 55, 10**6)] == [1e-3] * 3
    # by passes over the training set: step 35 at 10 a pass is 3.5 passes, stage 1 (to 4)
    assert learning_rate("iwae", 1e-3, 0, 10) == 1e-3
    assert learning_rate("iwae", 1e-3, 35, 10) == pytest.approx(1e-3 * 10 ** (-1 / 7))
    assert learning_rate("iwae", 1e-3, 40, 10) == pytest.approx(
        1e-3 * iwae_learning_rate_factor(4.0))

"""The VAE's training objectives: IWAE, KL warm-up and free bits change what is minimised,
never the ELBO that is reported and that picks the best checkpoint."""

import pytest
import torch

from aevb.config.run import model_config
from aevb.inference.objectives import elbo_terms, free_bits_kl, iwae_bound, log_weights
from aevb.inference.schedules import linear_warmup
from aevb.inference.training import IWAEConfig
from aevb.models import Batch, DataSpec, Step, build_model
from aevb.nn.nets import MLPConfig

SPEC = DataSpec((1, 8, 8), "binary", 10)


def vae(**values):
    torch.manual_seed(0)
    return build_model(model_config("vae", latent_dim=3, net=MLPConfig((16,)), **values), SPEC)


@pytest.fixture
def x():
    generator = torch.Generator().manual_seed(1)
    return (torch.rand(6, 1, 8, 8, generator=generator) < 0.3).float()


def seeded_loss(model, x, step=None):
    torch.manual_seed(2)
    return model.loss(Batch(x), step or Step(0, 1))


def test_linear_warmup_is_a_pure_function_of_the_step():
    assert [linear_warmup(Step(i, 100), 0.5) for i in (0, 25, 50, 99)] == [0.0, 0.5, 1.0, 1.0]
    assert linear_warmup(Step(0, 100), 0.0) == 1.0
    assert Step(150, 100).fraction == 1.0


def test_iwae_with_one_sample_trains_on_the_estimator_a_elbo(x):
    model = vae(objective=IWAEConfig(iw_samples=1))
    loss, metrics = seeded_loss(model, x)
    torch.manual_seed(2)
    terms = elbo_terms(x, model.posterior(x), model.prior(), model.likelihood, 1, "mc")
    torch.testing.assert_close(loss, -terms.elbo.mean())
    torch.testing.assert_close(metrics["bound"], -loss.detach())


def test_iwae_trains_on_the_k_sample_bound_and_reports_the_elbo(x):
    model = vae(objective=IWAEConfig(iw_samples=5))
    loss, metrics = seeded_loss(model, x)
    torch.manual_seed(2)
    log_w = log_weights(x, model.posterior(x), model.prior(), model.likelihood, 5)
    torch.testing.assert_close(loss, -iwae_bound(log_w).mean())
    # the reported ELBO is E_q[log p(x|z)] from the same samples minus the analytic KL
    torch.manual_seed(2)
    posterior = model.posterior(x)
    z = posterior.rsample((5,))
    rec = model.likelihood(z).log_prob(x).mean(0)
    kl = torch.distributions.kl_divergence(posterior, model.prior())
    torch.testing.assert_close(metrics["elbo"], (rec - kl).mean())
    # IWAE's bound lies above the ELBO in expectation; over many draws it does here too
    draws = [model.loss(Batch(x), Step(0, 1))[1] for _ in range(200)]
    assert sum(m["bound"] for m in draws) > sum(m["elbo"] for m in draws)


def test_warmup_weights_the_kl_but_the_elbo_stays_the_bound(x):
    model = vae(kl_warmup=0.5, beta=2.0)
    for index, weight in [(0, 0.0), (25, 1.0), (50, 2.0), (80, 2.0)]:
        loss, metrics = seeded_loss(model, x, Step(index, 100))
        torch.manual_seed(2)
        terms = elbo_terms(x, model.posterior(x), model.prior(), model.likelihood)
        torch.testing.assert_close(loss, -(terms.rec - weight * terms.kl_total).mean())
        torch.testing.assert_close(metrics["elbo"], terms.elbo.mean())
        torch.testing.assert_close(metrics["kl_weight"], torch.tensor(weight))


def test_free_bits_floor_each_dimension_and_stop_its_gradient(x):
    torch.testing.assert_close(free_bits_kl(torch.tensor([[0.1, 2.0], [0.3, 4.0]]), 0.5),
                               torch.tensor(0.5 + 3.0))
    floor = 100.0  # far above any dimension's KL here: no KL gradient at all
    model = vae(free_bits=floor)
    loss, metrics = seeded_loss(model, x)
    torch.manual_seed(2)
    terms = elbo_terms(x, model.posterior(x), model.prior(), model.likelihood)
    torch.testing.assert_close(loss, -terms.rec.mean() + 3 * floor)
    torch.testing.assert_close(metrics["elbo"], terms.elbo.mean())  # the true ELBO
    loss.backward()
    with_floor = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch.manual_seed(2)
    (-elbo_terms(x, model.posterior(x), model.prior(), model.likelihood).rec.mean()).backward()
    for a, b in zip(with_floor, (p.grad for p in model.parameters()), strict=True):
        torch.testing.assert_close(a, b)
    # with no floor the loss is the negative ELBO
    plain, _ = seeded_loss(vae(free_bits=0.0), x)
    torch.testing.assert_close(plain, -terms.elbo.mean())


def test_free_bits_with_iwae_add_the_floor_to_the_bound(x):
    model = vae(objective=IWAEConfig(iw_samples=3), free_bits=0.5)
    loss, metrics = seeded_loss(model, x)
    torch.manual_seed(2)
    posterior = model.posterior(x)
    log_w = log_weights(x, posterior, model.prior(), model.likelihood, 3)
    kl = torch.distributions.kl_divergence(posterior.base_dist, model.prior().base_dist)
    expected = -iwae_bound(log_w).mean() + kl.mean(0).clamp(min=0.5).sum() - kl.mean(0).sum()
    torch.testing.assert_close(loss, expected)

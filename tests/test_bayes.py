"""Full variational Bayes over decoder weights (appendix F): the KL, the sampled layer, and the
in-place conversion of a network."""

import copy
import math

import pytest
import torch
from torch import nn

from aevb.nn.bayes import BayesianLinear, bayesianize_, parameter_kl
from aevb.nn.heads import BernoulliHead
from aevb.nn.nets import mlp


def _set_posterior(layer: BayesianLinear, mus: list[torch.Tensor], sigmas: list[torch.Tensor]):
    with torch.no_grad():
        for name, mu, sigma in zip(("weight", "bias")[: len(mus)], mus, sigmas, strict=True):
            getattr(layer, f"{name}_mu").copy_(mu)
            getattr(layer, f"{name}_rho").copy_(torch.log(torch.expm1(sigma)))


@pytest.mark.usefixtures("validate_distributions")
def test_kl_matches_monte_carlo_estimate():
    torch.manual_seed(0)
    layer = BayesianLinear(3, 2, prior_std=0.7)
    _set_posterior(layer, [0.5 * torch.randn(2, 3), 0.5 * torch.randn(2)],
                   [0.3 + torch.rand(2, 3), 0.3 + torch.rand(2)])
    prior = torch.distributions.Normal(0.0, 0.7)
    samples = 20_000
    log_ratio = torch.zeros(samples)
    for q in layer.posterior():
        theta = q.sample((samples,))
        dims = tuple(range(1, theta.dim()))
        log_ratio += (q.log_prob(theta) - prior.log_prob(theta)).sum(dims)
    estimate = log_ratio.mean().item()
    standard_error = log_ratio.std().item() / math.sqrt(samples)
    kl = layer.kl().item()
    assert kl > 1.0 and standard_error < 0.03 * kl  # a sharp check of a non-trivial KL
    assert abs(estimate - kl) < 4 * standard_error


@pytest.mark.usefixtures("validate_distributions")
def test_kl_closed_form_cases():
    at_prior = BayesianLinear(4, 3, prior_std=2.5)
    _set_posterior(at_prior, [torch.zeros(3, 4), torch.zeros(3)],
                   [torch.full((3, 4), 2.5), torch.full((3,), 2.5)])
    assert at_prior.kl().shape == ()
    assert at_prior.kl().item() == pytest.approx(0.0, abs=1e-5)

    # KL(N(m, s²) || N(0, p²)) = log(p / s) + (s² + m²) / (2 p²) - 1/2, per parameter
    def closed_form(m: float, s: float, p: float) -> float:
        return math.log(p / s) + (s**2 + m**2) / (2 * p**2) - 0.5

    one = BayesianLinear(1, 1, prior_std=1.5)
    _set_posterior(one, [torch.tensor([[0.5]]), torch.tensor([-1.0])],
                   [torch.tensor([[0.2]]), torch.tensor([2.0])])
    expected = closed_form(0.5, 0.2, 1.5) + closed_form(-1.0, 2.0, 1.5)
    assert one.kl().item() == pytest.approx(expected, rel=1e-5)

    no_bias = BayesianLinear(1, 1, bias=False, prior_std=1.5)
    _set_posterior(no_bias, [torch.tensor([[0.5]])], [torch.tensor([[0.2]])])
    assert no_bias.kl().item() == pytest.approx(closed_form(0.5, 0.2, 1.5), rel=1e-5)


def test_from_linear_mean_is_the_layer_and_samples_average_to_it():
    torch.manual_seed(1)
    linear = nn.Linear(4, 3)
    layer = BayesianLinear.from_linear(linear, init_sigma=0.1)
    assert torch.allclose(torch.nn.functional.softplus(layer.weight_rho), torch.tensor(0.1))
    x = torch.randn(5, 4)
    layer.eval()
    mean_output = layer(x)
    assert torch.equal(mean_output, linear(x))

    layer.train()
    with torch.no_grad():
        outputs = torch.stack([layer(x) for _ in range(4000)])
    assert not torch.equal(outputs[0], outputs[1])
    standard_error = outputs.std(0) / math.sqrt(len(outputs))
    assert (standard_error < 0.01).all()
    assert ((outputs.mean(0) - mean_output).abs() < 5 * standard_error).all()


def test_from_linear_without_bias_and_argument_checks():
    linear = nn.Linear(3, 2, bias=False)
    layer = BayesianLinear.from_linear(linear).eval()
    assert layer.bias_mu is None and len(layer.posterior()) == 1
    x = torch.randn(4, 3)
    assert torch.equal(layer(x), linear(x))
    with pytest.raises(ValueError, match="prior_std"):
        BayesianLinear(2, 2, prior_std=0.0)
    with pytest.raises(ValueError, match="init_sigma"):
        BayesianLinear(2, 2, init_sigma=-1.0)


def test_gradients_reach_mean_and_rho_through_sample_and_kl():
    torch.manual_seed(2)
    layer = BayesianLinear(3, 2)
    parameters = [layer.weight_mu, layer.weight_rho, layer.bias_mu, layer.bias_rho]
    layer(torch.randn(6, 3)).pow(2).sum().backward()
    for parameter in parameters:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
        parameter.grad = None
    layer.kl().backward()
    for parameter in parameters:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0
        parameter.grad = None
    # the mean decoder is deterministic: no gradient to the posterior's spread
    layer.eval()
    layer(torch.randn(6, 3)).sum().backward()
    assert layer.weight_rho.grad is None and layer.weight_mu.grad is not None


def test_bayesianize_replaces_nested_linears_and_keeps_the_mean_function():
    torch.manual_seed(3)
    decoder = nn.Sequential(
        mlp([2, 8, 6], "tanh"),
        nn.Sequential(nn.Linear(6, 6), nn.ReLU()),
        BernoulliHead(6, (5,)),  # a Linear held as an attribute, not in a Sequential
    )
    original = copy.deepcopy(decoder).eval()
    layers = bayesianize_(decoder, prior_std=1.0, init_sigma=1e-2)
    assert len(layers) == 4
    assert not any(type(m) is nn.Linear for m in decoder.modules())
    assert [m for m in decoder.modules() if isinstance(m, BayesianLinear)] == layers

    z = torch.randn(7, 2)
    x = torch.bernoulli(torch.full((7, 5), 0.5))
    decoder.eval()
    assert torch.equal(decoder(z).log_prob(x), original(z).log_prob(x))
    decoder.train()
    assert not torch.equal(decoder(z).log_prob(x), original(z).log_prob(x))

    total = parameter_kl(decoder)
    assert total.shape == ()
    assert total.item() == pytest.approx(sum(layer.kl().item() for layer in layers), rel=1e-6)
    assert total.item() > 0
    assert parameter_kl(nn.Tanh()).item() == 0.0
    assert parameter_kl(original).item() == 0.0


def test_bayesianize_keeps_shared_layers_shared():
    shared = nn.Linear(3, 3)
    net = nn.Sequential(shared, nn.Tanh(), shared)
    layers = bayesianize_(net)
    assert len(layers) == 1 and net[0] is net[2] is layers[0]
    assert parameter_kl(net).item() == pytest.approx(layers[0].kl().item())
    with pytest.raises(TypeError, match="from_linear"):
        bayesianize_(nn.Linear(2, 2))


def test_leading_sample_dimensions_share_one_draw():
    torch.manual_seed(4)
    layer = BayesianLinear(3, 4, init_sigma=0.5)
    k, b = 5, 2
    z = torch.randn(k, b, 3)

    torch.manual_seed(10)
    out = layer(z)
    torch.manual_seed(10)
    flat = layer(z.reshape(k * b, 3))
    assert out.shape == (k, b, 4)
    assert torch.equal(out.reshape(k * b, 4), flat)

    # one θ per call for all K x B rows: equal inputs give equal outputs within a call
    same = layer(z[:1].expand(k, b, 3))
    assert torch.equal(same[0], same[-1])

    layer.eval()
    assert torch.allclose(layer(z), z @ layer.weight_mu.T + layer.bias_mu)

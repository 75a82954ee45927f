"""The hierarchical VAE: one layer is the vae, its KL parts are unbiased per layer, its
importance-sampled log p(x) bounds the ELBO and finds the exact marginal of a linear-Gaussian
hierarchy, and both inference orders train."""

import math
from pathlib import Path

import pytest
import torch
from torch.distributions import MultivariateNormal

from aevb.config.overrides import apply_overrides
from aevb.config.run import Config, load_config, model_config
from aevb.config.schema import EvalConfig
from aevb.data import load_dataset
from aevb.engine.checkpoint import load_model
from aevb.engine.loop import train
from aevb.evaluation.evaluate import evaluate_model
from aevb.inference.objectives import iwae_bound
from aevb.inference.schedules import iwae_learning_rate_factor
from aevb.inference.training import IWAEConfig
from aevb.models import Batch, DataSpec, Hierarchical, Step, build_model
from aevb.nn.nets import MLPConfig
from aevb.reporting.figures import draw_figures

SPEC = DataSpec((1, 8, 8), "binary", 10)
ORDERS = ("bottom-up", "ladder", "residual")
"""The forms of inference: bottom-up, and top-down by the ladder's merge or residual cells."""

pytestmark = pytest.mark.usefixtures("validate_distributions")


def hvae(seed=0, spec=SPEC, inference="bottom-up", **values):
    """A small hvae; ``inference`` one of ``ORDERS`` (or ``top-down``: the default form)."""
    torch.manual_seed(seed)
    if inference in ("ladder", "residual"):
        values["posterior"], inference = inference, "top-down"
    values = {"latent_dims": (4, 3), "net": MLPConfig((16,)), "layer_hidden": (8,),
              "state_dim": 12, "inference": inference, **values}
    return build_model(model_config("hvae", **values), spec)


def randomise_heads(model, std=0.3):
    """Redraw the residual cells' heads, which start at zero, so that q and p differ."""
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for weight in model.cells.parameters():
            if not weight.any():
                weight.normal_(0, std, generator=generator)


def decoder_input(model, layers):
    """What the decoder reads after a pass: z1, or the residual cells' last state."""
    if model.cells is None:
        return layers[0].z
    h = model.cells.initial(layers[-1].z.shape[:-1])
    for layer in reversed(range(len(layers))):
        h = model.cells.inject(layer, h, layers[layer].z)
    return h


@pytest.fixture
def x():
    generator = torch.Generator().manual_seed(1)
    return (torch.rand(6, 1, 8, 8, generator=generator) < 0.3).float()


def seeded(fn, *args, seed=2):
    torch.manual_seed(seed)
    return fn(*args)


def log_weights(model, batch, samples):
    """log p(x, z1..zn) - log q(z1..zn|x), (K, B), from one pass of ``model.layers``."""
    layers = model.layers(batch.x, samples)
    log_ratio = sum(layer.prior.log_prob(layer.z) - layer.posterior.log_prob(layer.z)
                    for layer in layers)
    return model.likelihood(decoder_input(model, layers)).log_prob(batch.x) + log_ratio


@pytest.mark.parametrize("inference", ("bottom-up", "ladder"))
@pytest.mark.parametrize("estimator", ("analytic", "mc"))
def test_one_layer_is_the_vae_on_the_same_weights(x, inference, estimator):
    torch.manual_seed(0)
    vae = build_model(model_config("vae", latent_dim=4, net=MLPConfig((16,)),
                                   estimator=estimator), SPEC)
    model = hvae(seed=1, latent_dims=(4,), inference=inference, estimator=estimator)
    batch = Batch(x)
    assert not torch.allclose(seeded(model.elbo_terms, batch, 3).rec,
                              seeded(vae.elbo_terms, batch, 3).rec)  # seeds 0, 1 differ
    renamed = {k.replace("posterior_head.", "up_heads.0."): v for k, v in vae.state_dict().items()}
    model.load_state_dict(renamed)
    expected, got = seeded(vae.elbo_terms, batch, 3), seeded(model.elbo_terms, batch, 3)
    torch.testing.assert_close(got.rec, expected.rec)
    torch.testing.assert_close(got.kl["z1"], expected.kl["z"])
    torch.testing.assert_close(seeded(log_weights, model, batch, 5),
                               seeded(vae.log_weights, batch, 5))
    torch.testing.assert_close(seeded(model.log_marginal, batch, 50),
                               seeded(vae.log_marginal, batch, 50))


@pytest.mark.parametrize("inference", ORDERS)
def test_layer_kls_sum_to_the_total_and_the_metrics_name_each(x, inference):
    model = hvae(latent_dims=(4, 3, 2), inference=inference)
    loss, metrics = seeded(model.loss, Batch(x), Step(0, 1))
    parts = [metrics[f"kl_z{i}"] for i in (1, 2, 3)]
    torch.testing.assert_close(metrics["kl"], sum(parts))
    torch.testing.assert_close(metrics["elbo"], metrics["rec"] - metrics["kl"])
    torch.testing.assert_close(loss, -metrics["elbo"])  # beta 1, no warm-up: the bound itself
    terms = seeded(model.elbo_terms, Batch(x))
    assert [tuple(part.shape) for part in terms.kl.values()] == [(6, 4), (6, 3), (6, 2)]
    assert set(metrics) <= set(model.metric_names)


def test_free_bits_floor_every_dimension_of_every_layer(x):
    # a floor of 10 nats lies above every dimension's KL at initialisation, so each of the
    # 4 + 3 dimensions costs exactly 10 nats and the KL gets no gradient
    loss, metrics = seeded(hvae(free_bits=10.0).loss, Batch(x), Step(0, 1))
    torch.testing.assert_close(loss, -metrics["rec"] + 70.0)
    assert metrics["elbo"] > -loss  # the metrics report the bound, not the floored loss


@pytest.mark.parametrize("inference", ORDERS)
def test_each_analytic_kl_matches_its_monte_carlo_estimate(x, inference):
    # N copies of 3 images: each copy's single-sample KL is an independent draw, so the batch
    # gives a mean and its standard error; both estimators have the same expectation per layer.
    n = 4000
    batch = Batch(x[:3].repeat_interleave(n, 0))
    analytic = hvae(inference=inference, estimator="analytic")
    sampled = hvae(inference=inference, estimator="mc")
    with torch.no_grad():  # strong couplings between the layers, so that a biased KL shows
        for model in (analytic, sampled):
            if model.cells is not None:  # its heads start at zero (q = p): redraw them
                randomise_heads(model, std=0.5)
                continue
            for weight in [*model.up.parameters(), *model.down.parameters()]:
                weight.mul_(4)
    with torch.no_grad():
        a = seeded(analytic.elbo_terms, batch, seed=3)
        m = seeded(sampled.elbo_terms, batch, seed=4)
    for name in ("z1", "z2"):
        ka, km = a.kl[name].sum(-1).view(3, n), m.kl[name].sum(-1).view(3, n)
        se = (ka.var(1) / n + km.var(1) / n).sqrt()
        assert ((ka.mean(1) - km.mean(1)).abs() < 4 * se).all(), name
        assert (km.var(1) > 0).all()
    # the top layer's KL is in closed form, the top-down layers' too: less variance than mc
    assert (a.kl["z2"].sum(-1).var() < m.kl["z2"].sum(-1).var())


@pytest.mark.parametrize("inference", ORDERS)
def test_log_marginal_lies_above_the_elbo(x, inference):
    model = hvae(inference=inference)
    with torch.no_grad():
        terms = seeded(model.elbo_terms, Batch(x), 2000)  # L = 2000: a precise ELBO
        log_px = seeded(model.log_marginal, Batch(x), 2000, seed=5)
        # the standard error of one per-example ELBO estimate, from the spread of log-weights
        elbo_se = seeded(log_weights, model, Batch(x), 2000).std(0) / math.sqrt(2000)
    assert log_px.shape == (6,)
    assert log_px.mean() > terms.elbo.mean() + 4 * elbo_se.mean()
    assert (log_px > terms.elbo - 4 * elbo_se).all()


def linear_gaussian(inference):
    """An hvae with no hidden layers, so that every conditional is linear-Gaussian, and the
    exact marginal p(x) it defines. Bottom-up and ladder: x = A z1 + a + N(0, s^2 I),
    z1 = B z2 + b + N(0, diag v), z2 ~ N(0, I), the variance rows of p(z1|z2) zeroed. Residual
    cells: every branch is one linear map, so the mean of x is affine in (z2, z1), F2 z2 + F1 z1
    + f, and the mean of z1 affine in z2, M z2 + m (the prior's variance rows zeroed)."""
    spec = DataSpec((5,), "real")
    model = hvae(spec=spec, latent_dims=(3, 2), net=MLPConfig(()), layer_hidden=(),
                 likelihood="gaussian-fixed", sigma=0.5, inference=inference)
    log_v = torch.tensor([-1.0, 0.0, 0.5])
    if model.cells is not None:
        randomise_heads(model, std=0.5)
        with torch.no_grad():
            head = model.cells.priors[0][-1]
            head.weight[3:] = 0
            head.bias[3:] = log_v
        z2, z1 = torch.zeros(2), torch.zeros(3)

        def mean_x(z2, z1):
            return model.likelihood(model.cells.generate((), [z1, z2])).mean

        def mean_z1(z2):
            h = model.cells.inject(1, model.cells.initial(()), z2)
            return model.cells.prior(0, h).mean

        with torch.no_grad():
            f, m = mean_x(z2, z1), mean_z1(z2)
        F2, F1 = (j.detach() for j in torch.func.jacrev(mean_x, argnums=(0, 1))(z2, z1))
        M = torch.func.jacrev(mean_z1)(z2).detach()
        mean = F1 @ m + f
        coupling = F2 + F1 @ M
        covariance = (coupling @ coupling.T + F1 @ torch.diag(log_v.exp()) @ F1.T
                      + 0.25 * torch.eye(5))
        return model, MultivariateNormal(mean.detach(), covariance)
    with torch.no_grad():
        head = model.down[0][1].linear
        head.weight[3:] = 0
        head.bias[3:] = log_v
    decoder = model.likelihood_head.linear
    A, a = decoder.weight.detach(), decoder.bias.detach()
    B, b = head.weight[:3].detach(), head.bias[:3].detach()
    v = head.bias[3:].detach().exp()
    mean = A @ b + a
    covariance = A @ (B @ B.T + torch.diag(v)) @ A.T + 0.25 * torch.eye(5)
    return model, MultivariateNormal(mean, covariance)


def posterior_heads(model):
    """The linear layers that give each layer's posterior (its last half: log variances)."""
    if model.cells is not None:
        return [branch[-1] for branch in model.cells.posteriors]
    return [head.linear for head in model.up_heads]


@pytest.mark.parametrize("inference", ORDERS)
def test_importance_sampled_log_px_finds_the_exact_linear_gaussian_marginal(inference):
    model, marginal = linear_gaussian(inference)
    torch.manual_seed(7)
    x = marginal.sample((8,))
    exact = marginal.log_prob(x)
    # IS converges for any proposal; fitting the inference nets (the generative model held
    # fixed), then doubling their variances (the ELBO fits an underdispersed proposal, whose
    # heavy-tailed weights make rare large errors), gives a small standard error at K = 20000
    inference_nets = [*model.encoder.parameters(), *model.up.parameters(),
                      *(p for head in posterior_heads(model) for p in head.parameters())]
    optimizer = torch.optim.Adam(inference_nets, lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        (-model.elbo_terms(Batch(x), 4).elbo.mean()).backward()
        optimizer.step()
    k = 20000
    with torch.no_grad():
        for head in posterior_heads(model):
            head.bias[head.out_features // 2:] += math.log(2)  # log sigma^2
        estimate = seeded(model.log_marginal, Batch(x), k)
        w = seeded(log_weights, model, Batch(x), k, seed=9)
    # delta method: the s.e. of log mean w is the relative s.e. of mean w
    w = (w - w.max(0).values).exp()
    se = w.std(0) / (math.sqrt(k) * w.mean(0))
    assert (se < 0.1).all()  # the proposal is good enough for the comparison to be sharp
    assert ((estimate - exact).abs() < 4 * se).all(), (estimate - exact, se)
    assert (seeded(model.elbo_terms, Batch(x), 100).elbo < exact - 0.05).all()  # not the ELBO


@pytest.mark.parametrize("inference", ORDERS)
def test_iwae_with_one_sample_trains_on_the_estimator_a_elbo(x, inference):
    model = hvae(inference=inference, objective=IWAEConfig(iw_samples=1))
    loss, metrics = seeded(model.loss, Batch(x), Step(0, 1))
    torch.testing.assert_close(loss, -seeded(log_weights, model, Batch(x), 1).mean())
    torch.testing.assert_close(metrics["bound"], -loss.detach())
    loss5, _ = seeded(hvae(inference=inference, objective=IWAEConfig(iw_samples=5)).loss,
                      Batch(x), Step(0, 1))
    torch.testing.assert_close(loss5, -iwae_bound(seeded(log_weights, hvae(inference=inference),
                                                         Batch(x), 5)).mean())


@pytest.mark.parametrize("inference", ORDERS)
def test_hierarchy_gives_each_layer_and_resamples_below_a_kept_layer(x, inference):
    model = hvae(latent_dims=(4, 3, 2), inference=inference)
    assert isinstance(model, Hierarchical)
    if model.cells is not None:  # heads that start at zero would keep every layer at p
        randomise_heads(model)
    with torch.no_grad():
        codes = model.encode_layers(Batch(x))
        assert {k: tuple(v.shape) for k, v in codes.items()} == {
            "z1": (6, 4), "z2": (6, 3), "z3": (6, 2)}
        code = model.encode(Batch(x))
        if model.cells is None:  # the decoder reads z1: the code
            torch.testing.assert_close(code, codes["z1"])
        else:  # the decoder reads every layer: the code joins them, and decodes as a pass
            torch.testing.assert_close(code, torch.cat(list(codes.values()), -1))
            layers = model.layers(x, None)
            torch.testing.assert_close(model.decode(code), model.likelihood(
                decoder_input(model, layers)).mean)
        other = Batch(1 - x)
        for layer in (1, 2, 3):
            images = seeded(model.resample_below, Batch(x), layer, 5)
            assert images.shape == (5, 6, 1, 8, 8)
            assert not torch.allclose(images[0], images[1])  # the resampled layers vary
            same = torch.allclose(images, seeded(model.resample_below, other, layer, 5))
            assert same == (layer == 3)  # below the top a kept layer carries the image
        with pytest.raises(ValueError):
            model.resample_below(Batch(x), 4, 2)


def test_iwae_learning_rate_schedule_has_the_papers_stages():
    ends = [1, 4, 13, 40, 121, 364, 1093]  # passes: stage i lasts 3^i
    for i, end in enumerate(ends):
        assert iwae_learning_rate_factor(end - 0.01) == pytest.approx(10 ** (-i / 7))
        assert iwae_learning_rate_factor(end) == pytest.approx(10 ** (-(i + 1) / 7))
    assert iwae_learning_rate_factor(0) == 1.0
    assert iwae_learning_rate_factor(3280) == pytest.approx(0.1)
    assert iwae_learning_rate_factor(10_000) == pytest.approx(0.1)


@pytest.mark.parametrize("inference", ORDERS)
def test_each_order_trains_on_digits_and_round_trips_its_checkpoint(inference, tmp_path):
    form = {"inference": inference} if inference == "bottom-up" else {
        "inference": "top-down", "posterior": inference}
    config = apply_overrides(Config(), {
        "dataset": "digits", "model": "hvae", "latent_dims": "4,2", "hidden": "32",
        "layer_hidden": "16", "epochs": "3", "batch_size": "50", "is_samples": "8", **form})
    dataset = load_dataset(config.data)
    result = train(config, tmp_path, dataset=dataset, progress=False)
    first, last = result.history[0], result.history[-1]
    assert last["train_loss"] < first["train_loss"]
    assert last["valid_elbo"] > first["valid_elbo"]
    _, loaded, _ = load_model(tmp_path, "last")
    for key, value in result.model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    evaluation = evaluate_model(result.model, dataset.test, EvalConfig(is_samples=4,
                                                                       max_points=100), False)
    code_layers = ("z1", "z2") if inference == "residual" else ("z1",)  # what encode gives
    assert evaluation["active_units"] == sum(evaluation[f"active_units_{n}"] for n in code_layers)
    assert 0 <= evaluation["active_units_z2"] <= 2
    assert evaluation["rate_nats"] == pytest.approx(evaluation["rate_z1_nats"]
                                                    + evaluation["rate_z2_nats"])
    written = {path.name for path in draw_figures(tmp_path, result.model, dataset)}
    assert {"latent_z1.png", "latent_z2.png", "layers.png", "kl_layers.png"} <= written


def test_iwae_table1_configs_build_the_papers_architectures():
    expected = {"vae": ("elbo", 1), "iwae-k5": ("iwae", 5), "iwae-k50": ("iwae", 50)}
    paths = sorted((Path(__file__).parents[1] / "configs" / "iwae-table1").glob("*.toml"))
    assert len(paths) == 2 * len(expected)
    for path in paths:
        objective, layers = path.stem.rsplit("-", 1)
        config = load_config(path).model
        k = config.objective.iw_samples if config.objective.kind == "iwae" else 1
        assert (config.objective.kind, k) == expected[objective]
        dims = {"1layer": (50,), "2layer": (100, 50)}[layers]
        model = build_model(config, DataSpec((1, 28, 28), "binary", 10))
        # 784-200-200 -> z1 (-> 100-100 -> z2), each layer's Gaussian head on its last layer
        assert [m.out_features for m in model.encoder.modules()
                if isinstance(m, torch.nn.Linear)] == [200, 200]
        assert [[m.out_features for m in up.modules() if isinstance(m, torch.nn.Linear)]
                for up in model.up] == [[100, 100]] * (len(dims) - 1)
        assert [head.linear.out_features // 2 for head in model.up_heads] == list(dims)

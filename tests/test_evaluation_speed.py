"""The fast importance-sampled log p(x): the fused Bernoulli log-likelihood, one encoding per
batch, chunking, and bfloat16 evaluation, each against the plain computation it replaces."""

import dataclasses
import warnings

import pytest
import torch

from aevb.config.overrides import apply_overrides
from aevb.config.run import Config, model_config
from aevb.config.schema import EvalConfig
from aevb.data import load_dataset
from aevb.evaluation import evaluate, speed
from aevb.evaluation.evaluate import evaluate_model, log_likelihood
from aevb.evaluation.speed import fast_log_marginal, fast_log_weights, log_likelihood_of
from aevb.inference import objectives
from aevb.inference.objectives import importance_sampled, log_weights
from aevb.models import Batch, DataSpec, Step, build_model
from aevb.nn.heads import BernoulliHead
from aevb.nn.nets import MLPConfig

pytestmark = pytest.mark.usefixtures("validate_distributions")

EVENT = (1, 4, 4)
SPEC = DataSpec((1, 8, 8), "binary")


def binary(*shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=generator) < 0.4).float()


@pytest.mark.parametrize("leading", [(), (7,), (3, 2)])
@pytest.mark.parametrize("scale", [1.0, 30.0])  # logits beyond softplus's threshold of 20 too
def test_fused_bernoulli_log_likelihood_is_the_distributions(leading, scale):
    torch.manual_seed(0)
    head = BernoulliHead(12, EVENT)
    with torch.no_grad():
        head.linear.weight.mul_(scale)
    x = binary(5, *EVENT)
    features = torch.randn(*leading, 5, 12)
    fused = log_likelihood_of(head, x)(features)
    expected = head(features).log_prob(x)
    assert fused.shape == (*leading, 5)
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-4 * scale)
    # a wrong x is scored differently: the test can tell
    assert not torch.allclose(log_likelihood_of(head, 1 - x)(features), expected, atol=1e-2)


def test_fused_bernoulli_in_bfloat16_is_the_distribution_of_the_same_logits():
    # bfloat16 logits: each pixel's term from its own logit, so the rounding errors of the
    # x.l and softplus(l) sums cancel as they do in the distribution's log_prob
    torch.manual_seed(1)
    head = BernoulliHead(12, EVENT)
    with torch.no_grad():
        head.linear.weight.mul_(10)
    x, features = binary(5, *EVENT), torch.randn(6, 5, 12)
    with torch.autocast("cpu", torch.bfloat16):
        fused = log_likelihood_of(head, x)(features)
        expected = head(features).log_prob(x)  # the head's logits, rounded, as float32
    assert fused.dtype == torch.float32
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-4)


def test_per_pixel_bernoulli_head_scores_like_its_distribution():
    head = BernoulliHead(None, EVENT)
    x, logits = binary(5, *EVENT), 4 * torch.randn(3, 5, *EVENT)
    torch.testing.assert_close(log_likelihood_of(head, x)(logits), head(logits).log_prob(x),
                               rtol=1e-5, atol=1e-4)


def small_vae(seed=0, **values):
    torch.manual_seed(seed)
    return build_model(model_config("vae", latent_dim=4, net=MLPConfig((16,)), **values), SPEC)


def old_log_marginal(model, x, samples):
    """The path this replaced: the encoder per chunk, p(x|z) built as a distribution."""
    return importance_sampled(
        lambda k: log_weights(x, model.posterior(x), model.prior(), model.likelihood, k),
        samples, x.numel())


def seeded(fn, *args, seed=3):
    torch.manual_seed(seed)
    return fn(*args)


@pytest.mark.parametrize("chunk", [objectives.ELEMENTS_PER_CHUNK, 64 * 3])
def test_fast_log_marginal_is_the_old_path_on_the_same_draws(monkeypatch, chunk):
    monkeypatch.setattr(objectives, "ELEMENTS_PER_CHUNK", chunk)  # 64 * 3: one per chunk
    model, x = small_vae(), binary(6, *SPEC.event_shape, seed=1)
    with torch.no_grad():
        fast = seeded(fast_log_marginal, model, Batch(x), 40)
        old = seeded(old_log_marginal, model, x, 40)
        other_draws = seeded(fast_log_marginal, model, Batch(x), 40, seed=4)
    torch.testing.assert_close(fast, old, rtol=1e-5, atol=1e-4)
    assert (fast - other_draws).abs().max() > 1e-3  # the draws matter: equality means something


def test_chunking_leaves_the_estimate_unchanged(monkeypatch):
    # one sample of the batch is 16 draws of z: the chunks split the generator's stream
    # at multiples of its blocks of 16, so the draws are the same ones
    model, x = small_vae(), binary(4, *SPEC.event_shape, seed=2)
    estimates = {}
    for chunk in (1 << 30, x.numel() * 7, x.numel()):  # one chunk, chunks of 7, of 1
        monkeypatch.setattr(objectives, "ELEMENTS_PER_CHUNK", chunk)
        with torch.no_grad():
            estimates[chunk] = seeded(fast_log_marginal, model, Batch(x), 30)
    one, *chunked = estimates.values()
    for estimate in chunked:
        torch.testing.assert_close(estimate, one, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def trained():
    """A VAE trained for a few hundred steps on binarized 8x8 digits, and its test points."""
    config = apply_overrides(Config(), {"dataset": "digits", "binarize": "static",
                                        "latent_dim": "4", "hidden": "32",
                                        "activation": "relu"})
    digits = load_dataset(config.data)
    spec = DataSpec(digits.event_shape, "binary")
    torch.manual_seed(0)
    model = build_model(config.model, spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    train_x = digits.train.values()
    for step in range(300):
        index = torch.randint(len(train_x), (64,))
        loss, _ = model.loss(Batch(train_x[index]), Step(step, 300))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), digits.test


def test_fast_log_marginal_lies_above_the_elbo_on_a_trained_model(trained):
    model, test = trained
    x = test.values()[:100]
    with torch.no_grad():
        log_px = seeded(fast_log_marginal, model, Batch(x), 500)
        elbo = seeded(model.elbo_terms, Batch(x), 500).elbo
        old = seeded(old_log_marginal, model, x, 500)
    torch.testing.assert_close(log_px, old, rtol=1e-5, atol=1e-4)
    gap = log_px - elbo  # log p(x) >= ELBO in expectation; here by more than its noise
    assert gap.mean() > 5 * gap.std() / len(gap) ** 0.5


def test_bfloat16_log_px_agrees_with_float32_on_a_trained_model(trained):
    model, test = trained
    batch = Batch(test.values()[:200])
    float32 = seeded(log_likelihood, model, batch, 200)
    bfloat16 = seeded(log_likelihood, model, batch, 200, torch.bfloat16)
    difference = (bfloat16 - float32).abs()
    assert 0 < difference.mean() < evaluate.AGREEMENT_NATS
    config = EvalConfig(is_samples=50, max_points=150, is_precision="bfloat16")
    result = evaluate_model(model, test, config, progress=False)
    assert result["is_precision"] == "bfloat16"
    assert result["bf16_agreement_points"] == 150
    assert 0 < result["bf16_agreement_nats"] < evaluate.AGREEMENT_NATS
    plain = evaluate_model(model, test, EvalConfig(is_samples=50, max_points=150),
                           progress=False)
    assert plain["is_precision"] == "float32" and "bf16_agreement_nats" not in plain
    assert abs(result["log_px_nats"] - plain["log_px_nats"]) < evaluate.AGREEMENT_NATS
    assert result["elbo_nats"] == plain["elbo_nats"]  # the same draws; only log p(x) is bf16


def test_bfloat16_that_disagrees_falls_back_to_float32(trained, monkeypatch):
    model, test = trained
    monkeypatch.setattr(evaluate, "AGREEMENT_NATS", 0.0)  # nothing agrees that closely
    config = EvalConfig(is_samples=20, max_points=60, batch_points=25)
    with pytest.warns(UserWarning, match="evaluating in float32"):
        result = evaluate_model(model, test,
                                dataclasses.replace(config, is_precision="bfloat16"),
                                progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = evaluate_model(model, test, config, progress=False)
    assert result["is_precision"] == "float32" and result["bf16_agreement_nats"] > 0
    assert result["log_px_nats"] == plain["log_px_nats"]


def test_bfloat16_evaluation_writes_its_own_file():
    own = EvalConfig(is_samples=1000)
    assert evaluate.evaluation_file(own, own) == "evaluation.json"
    bf16 = EvalConfig(is_samples=1000, is_precision="bfloat16")
    assert evaluate.evaluation_file(own, bf16) == "evaluation-test-bfloat16.json"


def test_other_heads_keep_their_distribution():
    # a Gaussian head has no fused form: its log-weights are the distribution's, exactly
    model = small_vae(likelihood="gaussian-fixed")
    x = torch.rand(3, *SPEC.event_shape)
    with torch.no_grad():
        torch.testing.assert_close(seeded(fast_log_marginal, model, Batch(x), 10),
                                   seeded(old_log_marginal, model, x, 10), rtol=0, atol=0)


@pytest.mark.parametrize("form", [{"inference": "bottom-up"},
                                  {"inference": "top-down", "posterior": "ladder"},
                                  {"inference": "top-down", "posterior": "residual"}],
                         ids=["bottom-up", "ladder", "residual"])
def test_hierarchical_log_marginal_is_the_old_path_on_the_same_draws(monkeypatch, form):
    monkeypatch.setattr(objectives, "ELEMENTS_PER_CHUNK", 64 * 5 * 4)  # 4 samples per chunk
    torch.manual_seed(0)
    model = build_model(model_config("hvae", latent_dims=(4, 3), net=MLPConfig((16,)),
                                     layer_hidden=(8,), state_dim=12, **form), SPEC)
    x = binary(5, *SPEC.event_shape, seed=3)

    def old(k):  # the encoder per chunk, p(x|·) built as a distribution
        layers, inputs = model._pass(model.encoder(x), k)
        return model.likelihood(inputs).log_prob(x) + model._log_ratio(layers)

    with torch.no_grad():
        fast = seeded(fast_log_marginal, model, Batch(x), 30)
        expected = seeded(importance_sampled, old, 30, x.numel())
    torch.testing.assert_close(fast, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("size", [784, 64, 7])  # groups of 28, of 32, and of 7 (7 is prime)
def test_softplus_sum_is_the_sum_of_softplus(size):
    values = torch.randn(3, 5, size, generator=torch.Generator().manual_seed(size)) * 15
    expected = torch.nn.functional.softplus(values.double()).sum(-1)
    got = speed.softplus_sum(values)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-4)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile's own imports
def test_compiled_softplus_sum_is_the_eager_one():
    values = torch.randn(4, 6, 784, generator=torch.Generator().manual_seed(0)) * 8
    eager = speed.softplus_sum(values)
    with speed.compiled_kernels():
        compiled = speed.softplus_sum(values)
        other_shape = speed.softplus_sum(values[:3])  # dynamic: no recompile needed
    torch.testing.assert_close(compiled, eager, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(other_shape, eager[:3], rtol=1e-6, atol=1e-4)


def test_the_models_own_log_marginal_knows_nothing_of_compiling(monkeypatch):
    # every compiled kernel fails (with a warning, then eager): a model that used one would warn
    def fail(*args, **kwargs):
        raise RuntimeError("no C compiler")

    model, x = small_vae(), binary(6, *SPEC.event_shape, seed=1)
    with torch.no_grad():
        plain = seeded(old_log_marginal, model, x, 40)
        monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fail)
        monkeypatch.setattr(speed, "_compiled_cache", [fail])
        with speed.compiled_kernels(), warnings.catch_warnings():
            warnings.simplefilter("error")
            own = seeded(model.log_marginal, Batch(x), 40)
        torch.testing.assert_close(own, plain, rtol=0, atol=0)
        with speed.compiled_kernels(), pytest.warns(UserWarning, match="torch.compile failed"):
            fast = seeded(fast_log_marginal, model, Batch(x), 40)  # the test can tell
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-4)


def test_a_model_without_the_parts_is_scored_by_its_own_log_marginal():
    # a cvae's q(z|x, c) needs its condition: the fast path leaves it to the model
    torch.manual_seed(0)
    spec = DataSpec((1, 8, 8), "binary", num_classes=3)
    model = build_model(model_config("cvae", latent_dim=4, net=MLPConfig((16,))), spec)
    batch = Batch(binary(5, *SPEC.event_shape, seed=2), torch.tensor([0, 1, 2, 0, 1]))
    assert fast_log_weights(model, batch.x) is None
    with torch.no_grad():
        torch.testing.assert_close(seeded(fast_log_marginal, model, batch, 20),
                                   seeded(model.log_marginal, batch, 20), rtol=0, atol=0)

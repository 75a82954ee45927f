"""The conditional VAE: its objective by hand, the learned prior's KL, log p(x|c) >= ELBO,
class-conditional samples a classifier recognises, the CLI and API, and a user's c vectors."""

import numpy as np
import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

import aevb
from aevb.cli.main import main
from aevb.config.overrides import apply_overrides
from aevb.config.run import Config
from aevb.config.schema import EvalConfig
from aevb.data import load_dataset
from aevb.engine.checkpoint import load_model
from aevb.engine.loop import train
from aevb.errors import ConfigError
from aevb.evaluation.evaluate import evaluate_model
from aevb.models import Batch, Conditional, DataSpec, build_model
from aevb.models.cvae import CVAEConfig
from aevb.nn.nets import ConvNetConfig, MLPConfig
from aevb.reporting.figures import draw_figures

TINY = {"dataset": "digits", "hidden": "64", "latent_dim": "2", "is_samples": "8",
        "device": "cpu", "precision": "float32", "threads": "1"}
SPEC = DataSpec((1, 8, 8), "binary", 10)


def digits_config(model: str, **overrides: str) -> Config:
    return apply_overrides(Config(), {**TINY, "model": model, **overrides})


@pytest.fixture(scope="module")
def digits():
    return load_dataset(digits_config("cvae").data)


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    """A cvae (learned prior) and a vae trained alike on digits: {name: (run_dir, model)}."""
    runs = {}
    for name, extra in (("cvae", {"prior": "learned"}), ("vae", {})):
        run_dir = tmp_path_factory.mktemp(name)
        result = train(digits_config(name, epochs="40", **extra), run_dir, dataset=digits,
                       progress=False)
        runs[name] = (run_dir, result.model.eval())
    return runs


def _batch(digits, n=32):
    index = torch.arange(n)
    return Batch(digits.train.batch(index), digits.train.y[index], index)


@pytest.mark.usefixtures("validate_distributions")
def test_standard_prior_gives_the_plain_cvae_objective(digits):
    torch.manual_seed(0)
    model = build_model(CVAEConfig(latent_dim=3, samples=4), SPEC)
    batch = _batch(digits)
    torch.manual_seed(1)
    terms = model.elbo_terms(batch, 4)
    # by hand: E_q[log p(x|z,c)] with the same 4 draws, minus KL(q(z|x,c) || N(0, I))
    torch.manual_seed(1)
    c = torch.nn.functional.one_hot(batch.y, 10).float()
    q = model.posterior(batch.x, c)
    z = q.rsample((4,))
    rec = model.likelihood(z, c).log_prob(batch.x).mean(0)
    kl = kl_divergence(q, Independent(Normal(torch.zeros(3), torch.ones(3)), 1))
    torch.testing.assert_close(terms.rec, rec)
    torch.testing.assert_close(terms.elbo, rec - kl)
    # the condition matters: another label gives another bound
    other = model.elbo_terms(batch._replace(y=(batch.y + 1) % 10), 4)
    assert not torch.allclose(other.rec, terms.rec)


@pytest.mark.usefixtures("validate_distributions")
def test_learned_prior_kl_equals_its_monte_carlo_estimate(digits):
    torch.manual_seed(0)
    model = build_model(CVAEConfig(latent_dim=3, prior="learned"), SPEC)
    with torch.no_grad():  # move the prior off its N(0, I) start
        for p in model.learned_prior.parameters():
            p.normal_(0, 0.5)
    batch = _batch(digits, 8)
    with torch.no_grad():
        kl = model.elbo_terms(batch).kl["z"].sum(-1)  # analytic, (B,)
        c = model.condition(batch)
        q, p = model.posterior(batch.x, c), model.prior(c)
        assert not torch.allclose(p.base_dist.loc, torch.zeros_like(p.base_dist.loc))
        z = q.sample((20_000,))
        draws = q.log_prob(z) - p.log_prob(z)  # (N, B)
    estimate, se = draws.mean(0), draws.std(0) / draws.shape[0] ** 0.5
    assert ((estimate - kl).abs() < 4 * se + 1e-4).all(), (estimate, kl, se)
    assert (kl > 0.1).all()


def test_condition_comes_from_c_else_y_else_is_an_error(digits):
    model = build_model(CVAEConfig(latent_dim=2), DataSpec((1, 8, 8), "binary", 10, 3))
    assert model.condition_dim == 3 and model.classes is None
    x = digits.train.values()[:4]
    c = torch.rand(4, 3)
    torch.testing.assert_close(model.condition(Batch(x, torch.zeros(4).long(), None, c)), c)
    with pytest.raises(ConfigError, match="not on class labels"):
        model.condition_of(torch.tensor([1]))
    labelled = build_model(CVAEConfig(latent_dim=2), SPEC)
    assert isinstance(labelled, Conditional) and labelled.classes == 10
    assert labelled.condition(Batch(x, torch.tensor([0, 3, 9, 3]))).argmax(1).tolist() == [
        0, 3, 9, 3]
    with pytest.raises(ConfigError, match="needs a condition"):
        build_model(CVAEConfig(), DataSpec((1, 8, 8), "binary"))


def test_decode_needs_its_condition_and_decodes_at_the_one_given():
    """c = 0 is no condition the model was trained on: without one, decode is an error."""
    model = build_model(CVAEConfig(latent_dim=2, net=MLPConfig((8,))), SPEC).eval()
    z = torch.randn(4, 2)
    with pytest.raises(ConfigError, match="decodes z given a condition"):
        model.decode(z)
    c = model.condition_of(torch.tensor([0, 3, 9, 3]))
    torch.testing.assert_close(model.decode(z, c), model.likelihood(z, c).mean)


def test_class_samples_are_recognised_by_a_classifier(trained, digits):
    from sklearn.linear_model import LogisticRegression

    x, y = digits.train.values().flatten(1).numpy(), digits.train.y.numpy()
    classifier = LogisticRegression(max_iter=2000).fit(x, y)
    labels = torch.arange(10).repeat_interleave(50)
    torch.manual_seed(0)
    with torch.no_grad():
        cvae = trained["cvae"][1]
        conditional = cvae.sample(len(labels), cvae.condition_of(labels))
        unconditional = trained["vae"][1].sample(len(labels))
    rate = {name: float((classifier.predict(s.flatten(1).numpy()) == labels.numpy()).mean())
            for name, s in (("cvae", conditional), ("vae", unconditional))}
    print(f"classifier accuracy on samples of the given label: {rate}")
    assert rate["cvae"] > 0.8 and rate["cvae"] > rate["vae"] + 0.3, rate


def test_log_px_given_c_is_above_the_elbo(trained, digits):
    model = trained["cvae"][1]
    result = evaluate_model(model, digits.test, EvalConfig(is_samples=100), progress=False)
    assert result["log_px_nats"] > result["elbo_nats"]
    # through the API: log p(x|y) is higher with the true labels than with wrong ones
    fitted = aevb.load(trained["cvae"][0])
    x, y = digits.test.values().numpy(), digits.test.y.numpy()
    right = fitted.log_likelihood(x, k=20, y=y).mean()
    wrong = fitted.log_likelihood(x, k=20, y=(y + 1) % 10).mean()
    print(f"log p(x|y) true labels {right:.2f}, shifted labels {wrong:.2f}")
    assert right > wrong + 2, (right, wrong)


def test_figures_sample_cli_and_checkpoint(trained, digits, tmp_path, capsys):
    run_dir, model = trained["cvae"]
    written = {path.name for path in draw_figures(run_dir, model, digits)}
    assert {"samples_by_class.png", "analogies.png", "manifold_by_class.png"} <= written
    assert "manifold.png" not in written  # a conditional manifold needs its class
    out = tmp_path / "threes.npy"
    assert main(["sample", str(run_dir), "--label", "3", "--n", "6", "--out", str(out)]) == 0
    assert np.load(out).shape == (6, 1, 8, 8)
    assert main(["sample", str(run_dir), "--label", "10", "--out", str(out)]) == 2
    assert main(["sample", str(trained["vae"][0]), "--label", "3", "--out", str(out)]) == 2
    assert "not conditioned on class labels" in capsys.readouterr().err
    _, loaded, _ = load_model(run_dir, "best")
    assert loaded.data.num_classes == 10 and loaded.classes == 10


def test_user_npz_with_c_vectors_trains(digits, tmp_path):
    rng = np.random.default_rng(0)
    splits = {"train": digits.train, "valid": digits.valid, "test": digits.test}
    arrays = {}
    for s, split in splits.items():
        arrays[f"x_{s}"] = split.values().numpy()[:200]
        # a 3-vector: the label's parity and size, and noise
        y = split.y.numpy()[:200]
        arrays[f"c_{s}"] = np.stack([y % 2, y / 9, rng.normal(size=len(y))], 1)
    path = tmp_path / "conditioned.npz"
    np.savez(path, **arrays)
    config = digits_config("cvae", dataset=str(path), epochs="2", binarize="static")
    result = train(config, tmp_path / "run", progress=False)
    assert result.dataset.condition_dim == 3 and result.model.condition_dim == 3
    _, loaded, _ = load_model(tmp_path / "run", "last")
    assert loaded.data.condition_dim == 3
    with torch.no_grad():
        assert loaded.sample(4, torch.tensor([1.0, 0.5, 0.0])).shape == (4, 1, 8, 8)


def test_api_fits_with_labels_or_vectors(digits):
    x, y = digits.train.values()[:300].numpy(), digits.train.y[:300].numpy()
    small = {"hidden": (32,), "latent_dim": 2, "epochs": 2, "binarize": "static",
             "progress": False}
    fitted = aevb.fit(x, y, model="cvae", **small)
    threes = fitted.sample(5, seed=0, label=3)
    assert threes.shape == (5, 1, 8, 8)
    with pytest.raises(aevb.AevbError, match="no class of this model"):
        fitted.sample(5, label=12)
    c = np.stack([y % 2, y / 9], 1).astype(np.float32)
    by_vectors = aevb.fit(x, c=c, model="cvae", **small)
    assert by_vectors.model.condition_dim == 2
    with pytest.raises(aevb.AevbError, match="not conditioned on class labels"):
        by_vectors.sample(2, label=1)


@pytest.mark.usefixtures("validate_distributions")
def test_training_options_act_on_the_kl(digits):
    from aevb.models import Step

    batch = _batch(digits)
    torch.manual_seed(0)
    model = build_model(CVAEConfig(latent_dim=3, kl_warmup=0.5, prior="learned"), SPEC)
    torch.manual_seed(1)
    loss, metrics = model.loss(batch, Step(0, 100))  # warm-up weight 0: the loss is -rec
    torch.testing.assert_close(loss, -metrics["rec"])
    assert metrics["kl_weight"] == 0 and metrics["kl"] > 0
    floored = build_model(CVAEConfig(latent_dim=3, free_bits=5.0), SPEC)
    torch.manual_seed(1)
    loss, metrics = floored.loss(batch, Step(0, 100))  # every dimension's KL costs 5 nats
    torch.testing.assert_close(loss, -metrics["rec"] + 15.0)
    sampled = build_model(CVAEConfig(latent_dim=3, estimator="mc", samples=3), SPEC)
    terms = sampled.elbo_terms(batch, 3)
    assert terms.kl["z"].shape == (32, 3) and not torch.allclose(
        terms.kl["z"], sampled.elbo_terms(batch, 3).kl["z"])


def test_net_conv_gives_a_conditional_conv_vae(digits, tmp_path):
    config = apply_overrides(digits_config("cvae"), {"net": "conv", "channels": "8,16",
                                                     "epochs": "3"})
    assert config.model.net == ConvNetConfig((8, 16), "tanh")
    result = train(config, tmp_path / "conv-cvae", dataset=digits, progress=False)
    assert any(isinstance(m, torch.nn.PixelShuffle) for m in result.model.modules())
    elbos = [row["valid_elbo"] for row in result.history]
    assert elbos[-1] > elbos[0]
    model = result.model.eval()
    with torch.no_grad():
        three = model.condition_of(torch.tensor([3]))
        assert model.sample(5, three).shape == (5, 1, 8, 8)
        batch = _batch(digits, 6)
        assert model.log_marginal(batch, 7).shape == (6,)
    # its config round-trips through the run's TOML as a conv net
    _, loaded, _ = load_model(tmp_path / "conv-cvae")
    assert loaded.config.net == ConvNetConfig((8, 16), "tanh")
    # the plain vae has one kind of net: a conv VAE is another model
    with pytest.raises(ConfigError, match="conv-vae"):
        apply_overrides(Config(), {"net": "conv"})
    assert apply_overrides(digits_config("cvae"), {"net": "mlp"}).model.net == MLPConfig()

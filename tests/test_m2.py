"""M2 (Kingma et al. 2014): its unlabelled bound by hand, the labelled case, the labelled subset
of the data, learning to classify from 100 labels, and the CLI."""

import json
import math

import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from aevb.cli import main
from aevb.config import Config, apply_overrides
from aevb.data import UNLABELLED, load_dataset
from aevb.errors import ConfigError, DataError
from aevb.evaluate import evaluate_model
from aevb.models import Batch, Classifier, DataSpec, Step, build_model
from aevb.models.m2 import M2Config
from aevb.nets import MLPConfig
from aevb.training import split_batch, train

TINY = {"dataset": "digits", "model": "m2", "hidden": "64", "latent_dim": "4",
        "is_samples": "8", "device": "cpu", "precision": "float32", "threads": "1"}
SPEC = DataSpec((1, 8, 8), "binary", 10)

pytestmark = pytest.mark.usefixtures("validate_distributions")


def digits_config(**overrides: str) -> Config:
    return apply_overrides(Config(), {**TINY, **overrides})


@pytest.fixture(scope="module")
def digits():
    return load_dataset(digits_config().data)


def _tiny_model(**values):
    torch.manual_seed(0)
    return build_model(M2Config(latent_dim=3, net=MLPConfig(hidden=(16,)), **values), SPEC)


def test_unlabelled_bound_is_the_sum_over_classes_plus_the_entropy(digits):
    model = _tiny_model()
    x = digits.train.batch(torch.arange(6))
    unlabelled = Batch(x, torch.full((6,), UNLABELLED))
    # samples=1 and the analytic KL: the only randomness is z, drawn per class in class order
    torch.manual_seed(1)
    loss, metrics = model.loss(unlabelled, Step(0, 1))
    torch.manual_seed(1)
    eps = torch.randn(10, 6, 3)  # the draws the batched rsample made, in the same order
    q_y = Categorical(logits=model.classifier(x))
    expected = q_y.entropy()
    for k in range(10):
        c = model.condition_of(torch.full((6,), k))
        posterior = model.cvae.posterior(x, c)  # one class at a time, through the cvae
        code = posterior.base_dist.loc + posterior.base_dist.scale * eps[k]
        rec = model.cvae.likelihood(code[None], c).log_prob(x)[0]
        kl = kl_divergence(posterior, model.cvae.prior(c))
        expected = expected + q_y.probs[:, k] * (rec - kl - math.log(10))
    torch.testing.assert_close(metrics["marginal_elbo"], expected.mean().detach())
    torch.testing.assert_close(loss, -expected.mean())
    torch.testing.assert_close(metrics["elbo"], metrics["marginal_elbo"])
    # the same bound through the Likelihood ability, its parts named
    torch.manual_seed(1)
    terms = model.elbo_terms(Batch(x), 1)
    assert set(terms.kl) == {"z", "y"}
    torch.testing.assert_close(terms.elbo, expected.detach(), atol=1e-4, rtol=1e-5)


def test_all_labelled_gives_the_labelled_objective(digits):
    model = _tiny_model(alpha=2.0)
    x, y = digits.train.batch(torch.arange(8)), digits.train.y[:8]
    torch.manual_seed(1)
    loss, metrics = model.loss(Batch(x, y), Step(0, 1))
    torch.manual_seed(1)
    bound = model.class_terms(x).elbo - math.log(10)  # (C, B), the same draws
    joint = bound[y, torch.arange(8)]
    log_q = Categorical(logits=model.classifier(x)).log_prob(y)
    torch.testing.assert_close(loss, -(joint + 2.0 * log_q).mean())
    torch.testing.assert_close(metrics["elbo"], joint.mean().detach())
    accuracy = (model.classify(Batch(x)).argmax(-1) == y).float().mean()
    torch.testing.assert_close(metrics["accuracy"], accuracy)


def test_labelled_keeps_n_balanced_labels_chosen_by_the_split_seed(digits):
    def labels(n: int, seed: int = 0) -> torch.Tensor:
        y = load_dataset(digits_config(labelled=str(n), split_seed=str(seed)).data).train.y
        assert y is not None
        return y

    kept = labels(100)
    known = kept != UNLABELLED
    assert known.sum() == 100
    assert torch.bincount(kept[known], minlength=10).tolist() == [10] * 10
    assert torch.equal(kept[known], digits.train.y[known])  # true labels where kept
    assert torch.equal(labels(100), kept)
    assert not torch.equal(labels(100, seed=1), kept)
    assert sorted(torch.bincount(labels(25)[labels(25) >= 0]).tolist()) == [2] * 5 + [3] * 5
    every = labels(len(digits.train) - 5)  # nearly all: a class must not run short
    assert (every != UNLABELLED).sum() == len(digits.train) - 5
    with pytest.raises(DataError, match="labelled"):
        labels(len(digits.train) + 1)
    with pytest.raises(ConfigError):
        digits_config(labelled="0")
    # valid and test keep every label
    data = load_dataset(digits_config(labelled="100").data)
    assert data.test.y is not None and (data.test.y >= 0).all()


def test_minibatches_of_a_random_order_mix_labelled_and_unlabelled():
    """The design: no oversampling; the loop's random order spreads the N labelled examples,
    so a batch of M holds M N / n of them on average (here 100 * 100 / 1297 ≈ 7.7)."""
    train_split = load_dataset(digits_config(labelled="100").data).train
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(train_split), generator=generator)
    counts = [int((split_batch(train_split, order[s : s + 100]).y >= 0).sum())
              for s in range(0, 1200, 100)]
    assert all(0 < c < 100 for c in counts), counts
    assert 4 < sum(counts) / len(counts) < 12


def test_m2_learns_to_classify_from_100_labels(tmp_path):
    config = digits_config(labelled="100", epochs="60", alpha="10", latent_dim="8")
    data = load_dataset(config.data)
    result = train(config, tmp_path, dataset=data, progress=False)
    model = result.model.eval()
    assert isinstance(model, Classifier)
    evaluation = evaluate_model(model, data.test, config.eval, progress=False)
    # chance is 0.9; 100 labels and 1197 unlabelled digits give ~0.2 (0.20-0.21 over seeds 0-2)
    assert evaluation["classification_error"] < 0.3, evaluation["classification_error"]
    assert evaluation["log_px_nats"] >= evaluation["elbo_nats"] - 1.0
    assert evaluation["rate_y_nats"] >= 0


def test_cli_trains_m2_and_writes_the_error_and_the_analogies(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--model", "m2", "--labelled", "100", "--dataset", "digits",
                 "--epochs", "2", "--hidden", "16", "--latent_dim", "2", "--is_samples", "4",
                 "--out", str(out), "--quiet"]) == 0
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert 0 <= evaluation["classification_error"] <= 1
    for name in ("analogies.png", "samples_by_class.png", "report.md"):
        assert (out / name).stat().st_size > 0, name
    assert "classification error" in (out / "report.md").read_text()

"""M2 (Kingma et al. 2014): its unlabelled bound by hand, the labelled case, the labelled subset
of the data, learning to classify from 100 labels, and the CLI."""

import json
import math
from dataclasses import replace

import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from aevb.cli.main import main
from aevb.config.overrides import apply_overrides
from aevb.config.run import Config, model_config
from aevb.data import load_dataset
from aevb.data.splits import UNLABELLED
from aevb.engine.batches import split_batch
from aevb.engine.checkpoint import load_model
from aevb.engine.loop import train
from aevb.errors import ConfigError, DataError
from aevb.evaluation.evaluate import evaluate_model
from aevb.models import Batch, Classifier, DataSpec, Step, build_model
from aevb.models.m2 import M2Config
from aevb.nn.nets import MLPConfig

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


@pytest.mark.parametrize("label_input", [False, True])
def test_unlabelled_bound_is_the_sum_over_classes_plus_the_entropy(digits, label_input):
    """By hand, one class at a time; with ``label_input`` y also joins the encoder's first
    layer (its vectors made non-zero here, as training makes them)."""
    model = _tiny_model(label_input=label_input)
    if label_input:
        with torch.no_grad():
            model.label_embedding.normal_()
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
        posterior = model.posterior(x, torch.full((6,), k))  # one class at a time
        if not label_input:  # the cvae's own q(z|x,c)
            torch.testing.assert_close(posterior.mean, model.cvae.posterior(x, c).mean)
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


def test_splits_without_hidden_labels_keep_the_plain_random_order(digits):
    """Every run without hidden labels draws the order it always drew (bit-identical runs)."""
    every = load_dataset(digits_config(labelled=str(len(digits.train))).data).train
    for split in (digits.train, every, digits.valid):
        order = split.epoch_order(torch.Generator().manual_seed(3), 100)
        assert torch.equal(order, torch.randperm(len(split), generator=torch.Generator()
                                                 .manual_seed(3)))
        assert split.steps_per_epoch(100) == math.ceil(len(split) / 100)


def test_an_epoch_order_puts_m_labelled_examples_in_every_minibatch():
    train_split = load_dataset(digits_config(labelled="50", labelled_per_batch="5").data).train
    assert train_split.y is not None
    order = train_split.epoch_order(torch.Generator().manual_seed(0), 20)
    batches = order.split(20)
    assert len(batches) == train_split.steps_per_epoch(20) == math.ceil(1247 / 15)
    assert all(int((train_split.y[b] >= 0).sum()) == 5 for b in batches)
    unlabelled = order[train_split.y[order] < 0]
    assert torch.equal(unlabelled.sort().values, torch.nonzero(train_split.y < 0).flatten())
    with pytest.raises(ConfigError, match="labelled_per_batch"):
        train_split.epoch_order(torch.Generator(), 5)  # m = 5 leaves no unlabelled place


def test_every_minibatch_of_an_m2_run_holds_m_labelled_examples(tmp_path, monkeypatch):
    """M = 100, 50 of 1297 digits labelled: m = 10 (at least M / 10), 14 batches an epoch,
    each unlabelled digit once and each labelled one 140 / 50 = 2.8 times (2 or 3)."""
    seen: list[torch.Tensor] = []

    def spy(split, index, generator=None):
        if generator is not None:  # the training loop's batches, not validation's
            seen.append(index.clone())
        return split_batch(split, index, generator)

    monkeypatch.setattr("aevb.engine.loop.split_batch", spy)
    config = digits_config(labelled="50", epochs="2", hidden="16", latent_dim="2")
    result = train(config, tmp_path, progress=False)
    y = result.dataset.train.y
    assert y is not None and len(seen) == 28 and result.history[-1]["step"] == 28
    assert [int((y[index] >= 0).sum()) for index in seen] == [10] * 28
    for epoch in (seen[:14], seen[14:]):
        counts = torch.bincount(torch.cat(epoch), minlength=len(y))
        assert (counts[y < 0] == 1).all()
        assert set(counts[y >= 0].tolist()) == {2, 3}
    assert not torch.equal(torch.cat(seen[:14]), torch.cat(seen[14:]))


def test_an_m2_run_with_labelled_minibatches_resumes_exactly(tmp_path):
    config = digits_config(labelled="50", hidden="16", latent_dim="2", epochs="3")
    straight = train(config, tmp_path / "straight", progress=False)
    train(digits_config(labelled="50", hidden="16", latent_dim="2", epochs="1"),
          tmp_path / "split", progress=False)
    resumed = train(config, tmp_path / "split", resume=True, progress=False)
    for (name, a), (_, b) in zip(straight.model.state_dict().items(),
                                 resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in straight.history]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in resumed.history]


def test_m1_plus_m2_trains_on_the_codes_of_a_vae(tmp_path, capsys):
    vae = ["--dataset", "digits", "--hidden", "16", "--latent_dim", "4", "--epochs", "2",
           "--is_samples", "4", "--threads", "1", "--quiet"]
    assert main(["train", *vae, "--out", str(tmp_path / "vae")]) == 0
    out = tmp_path / "m2"
    # relative to the run directory first, like a data file
    assert main(["train", *vae, "--model", "m2", "--labelled", "50", "--features", "../vae",
                 "--likelihood", "gaussian-learned", "--out", str(out)]) == 0
    assert "classification error" in capsys.readouterr().out
    trained = json.loads((out / "evaluation.json").read_text())
    assert 0 <= trained["classification_error"] <= 1
    assert "latent.png" in {p.name for p in out.iterdir()}  # codes are no images: no grids
    assert not (out / "samples.png").exists()
    _, model, _ = load_model(out)
    assert model.data.event_shape == (4,) and model.data.kind == "real"
    assert main(["evaluate", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["classification_error"] == trained["classification_error"]
    assert again["log_px_nats"] == trained["log_px_nats"]
    assert main(["evaluate", str(out), "--sample-quality"]) != 0
    assert "compares images" in capsys.readouterr().err


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


def test_decode_needs_its_label():
    model = build_model(model_config("m2", latent_dim=2, net=MLPConfig((8,))),
                        DataSpec((1, 8, 8), "binary", 10))
    with pytest.raises(ConfigError, match="decodes z given a condition"):
        model.decode(torch.zeros(3, 2))
    assert model.decode(torch.zeros(3, 2), model.condition_of(torch.arange(3))).shape == (
        3, 1, 8, 8)


def test_m2_takes_the_bound_keys_but_trains_the_bound_itself():
    assert model_config("m2", likelihood="gaussian-fixed", sigma=0.5).sigma == 0.5
    for values in ({"beta": 2.0}, {"kl_warmup": 0.1}, {"free_bits": 0.5}):
        with pytest.raises(ConfigError, match="eqs. 7 and 9"):
            model_config("m2", **values)


def test_the_label_seed_draws_the_labelled_subset_alone():
    def data(**values: str):
        return load_dataset(digits_config(labelled="100", **values).data)

    base, again = data(), data(label_seed="0")  # unset: the split seed, as before the key
    assert base.train.y is not None and again.train.y is not None
    assert torch.equal(base.train.y, again.train.y)
    other = data(label_seed="1")
    assert other.train.y is not None
    assert not torch.equal(other.train.y, base.train.y)
    assert int((other.train.y >= 0).sum()) == 100
    assert torch.bincount(other.train.y[other.train.y >= 0]).tolist() == [10] * 10
    for split in ("train", "valid", "test"):  # the same examples, the same fixed samples
        assert torch.equal(getattr(other, split).raw, getattr(base, split).raw)
    assert other.test.y is not None and base.test.y is not None
    assert torch.equal(other.test.y, base.test.y)


def test_fewer_labels_than_classes_is_one_clear_error():
    with pytest.raises(DataError, match="at least one per class"):
        load_dataset(digits_config(labelled="9").data)
    assert load_dataset(digits_config(labelled="10").data).train.y is not None


def _vae_run(tmp_path, name="vae", model="vae"):
    out = tmp_path / name
    assert main(["train", "--dataset", "digits", "--model", model, "--hidden", "16",
                 "--latent_dim", "6", "--epochs", "1", "--threads", "1", "--quiet", "--no-eval",
                 "--out", str(out)]) == 0
    return out


def test_m1_plus_m2_can_draw_its_codes_from_the_posterior(tmp_path):
    """features_sample: the training split keeps q(z|x)'s standard deviations and every batch
    is a fresh draw of N(mean, std²); valid and test stay the means. features_min_std keeps
    the dimensions whose training means vary by more than it, in all three splits alike."""
    from aevb.engine.features import load_run_data

    run = _vae_run(tmp_path)
    config = digits_config(labelled="100", features=str(run)).data
    means = load_run_data(config)
    drawn = load_run_data(replace(config, features_sample=True))
    assert means.train.spread is None and drawn.valid.spread is None and drawn.test.spread is None
    assert torch.equal(drawn.train.raw, means.train.raw)
    _, vae, _ = load_model(run)
    x = load_dataset(replace(config, features=None, binarize="none")).train.values()
    q = vae.posterior(x)
    assert drawn.train.spread is not None
    torch.testing.assert_close(drawn.train.spread, q.stddev)
    index = torch.arange(len(drawn.train))
    first, second = (drawn.train.batch(index, torch.Generator().manual_seed(s)) for s in (0, 1))
    assert not torch.equal(first, second)
    z = (first - q.mean) / q.stddev  # standardised draws: N(0, 1) over 1297 x 6 values
    assert abs(z.mean().item()) < 0.05 and abs(z.std().item() - 1) < 0.05
    assert torch.equal(drawn.valid.raw, means.valid.raw)

    std = means.train.raw.std(0)
    threshold = float(std.sort().values[2])  # keep the three that vary most
    kept = load_run_data(replace(config, features_sample=True, features_min_std=threshold))
    keep = std > threshold
    assert kept.event_shape == (3,) and kept.train.spread is not None
    assert torch.equal(kept.train.raw, means.train.raw[:, keep])
    assert torch.equal(kept.test.raw, means.test.raw[:, keep])
    assert torch.equal(kept.train.spread, drawn.train.spread[:, keep])
    with pytest.raises(DataError, match="no code dimension"):
        load_run_data(replace(config, features_min_std=1e6))


def test_m1_plus_m2_trains_on_drawn_codes_and_resumes_exactly(tmp_path):
    run = _vae_run(tmp_path)
    keys = {"labelled": "50", "features": str(run), "features_sample": "true",
            "likelihood": "gaussian-learned", "hidden": "16", "latent_dim": "2"}
    straight = train(digits_config(**keys, epochs="2"), tmp_path / "straight", progress=False)
    train(digits_config(**keys, epochs="1"), tmp_path / "split", progress=False)
    resumed = train(digits_config(**keys, epochs="2"), tmp_path / "split", resume=True,
                    progress=False)
    for (name, a), (_, b) in zip(straight.model.state_dict().items(),
                                 resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_bad_feature_runs_are_one_clear_error(tmp_path):
    from aevb.engine.features import load_run_data
    from aevb.errors import AevbError

    config = digits_config(labelled="100").data
    with pytest.raises(AevbError, match="no run directory"):
        load_run_data(replace(config, features=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(AevbError, match="empty"):
        load_run_data(replace(config, features=str(tmp_path / "empty")))
    ae = _vae_run(tmp_path, "ae", "ae")  # codes, but no posterior to draw them from
    assert load_run_data(replace(config, features=str(ae))).event_shape == (6,)
    with pytest.raises(ConfigError, match="no posterior"):
        load_run_data(replace(config, features=str(ae), features_sample=True))
    with pytest.raises(ConfigError, match="need data.features"):
        load_run_data(replace(config, features_sample=True))


def test_the_test_curve_is_logged_every_epoch_and_never_chooses_the_best(tmp_path):
    from aevb.reporting.figures import read_history

    keys = {"labelled": "100", "hidden": "16", "latent_dim": "2", "epochs": "2"}
    plain = train(digits_config(**keys), tmp_path / "plain", progress=False)
    traced = train(digits_config(**keys, test_curve="true"), tmp_path / "traced", progress=False)
    rows = read_history(tmp_path / "traced")
    assert len(rows) == 2 and all(0 <= float(r["test_accuracy"]) <= 1 for r in rows)
    assert "test_accuracy" not in read_history(tmp_path / "plain")[0]
    for a, b in zip(plain.history, traced.history, strict=True):  # the same training
        assert {k: v for k, v in a.items() if k != "seconds"} == {
            k: v for k, v in b.items() if k != "seconds" and not k.startswith("test_")}
    # the test split scored as evaluation scores it: accuracy = 1 - classification error
    model = traced.model.eval()
    evaluation = evaluate_model(model, traced.dataset.test, digits_config().eval, progress=False)
    assert rows[-1]["test_accuracy"] == pytest.approx(1 - evaluation["classification_error"],
                                                      abs=1e-6)


@pytest.mark.parametrize(("options", "message"), [
    (["--labelled", "5000"], "must be in 1..1297"),
    (["--labelled", "0"], "labelled"),
    (["--labelled", "7"], "at least one per class"),
    (["--labelled", "100", "--features", "no-such-run"], "no run directory"),
])
def test_bad_semi_supervised_input_is_one_line_on_the_command_line(tmp_path, capsys, options,
                                                                   message):
    code = main(["train", "--model", "m2", "--dataset", "digits", "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "run"), *options])
    err = capsys.readouterr().err
    assert code != 0 and message in err, err
    assert "Traceback" not in err


def test_labels_asked_of_data_without_them_is_one_clear_error(tmp_path):
    import numpy as np

    path = tmp_path / "codes.npy"
    np.save(path, np.random.default_rng(0).random((200, 8), dtype=np.float32))
    with pytest.raises(DataError, match="needs labels"):
        load_dataset(replace(digits_config().data, name=str(path), binarize="none",
                             labelled=10))


def test_the_defaults_classify_the_digits_from_100_labels(tmp_path):
    """m2's defaults (its MNIST settings), 100 labels of the 8x8 digits, 20 epochs, seed 0:
    25.2 % test error on the 250 test digits (25.2, 27.2, 21.6 % for seeds 0, 1, 2; about 30 s
    on one thread), docs/semi-supervised-mnist.md. The bound is that figure plus about three
    standard errors of a 250-point error rate (2.7 points each); chance is 90 %."""
    config = apply_overrides(Config(), {"dataset": "digits", "model": "m2", "labelled": "100",
                                        "precision": "float32", "threads": "1", "device": "cpu",
                                        "is_samples": "8"})
    assert config.train.epochs == 20 and config.model == M2Config()  # the defaults themselves
    data = load_dataset(config.data)
    model = train(config, tmp_path, dataset=data, progress=False).model.eval()
    evaluation = evaluate_model(model, data.test, config.eval, progress=False)
    assert evaluation["classification_error"] < 0.33, evaluation["classification_error"]

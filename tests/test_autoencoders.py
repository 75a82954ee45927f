"""The autoencoder family against known answers: PCA, finite differences, hand-computed
penalties, corruption statistics, and the stacked autoencoder's phases."""

import math

import numpy as np
import pytest
import torch
from scipy.linalg import subspace_angles
from sklearn.decomposition import PCA as SklearnPCA

from aevb.config.overrides import apply_overrides
from aevb.config.run import Config
from aevb.data import load_dataset
from aevb.engine.loop import train
from aevb.errors import ConfigError
from aevb.evaluation.evaluate import evaluate_run
from aevb.inference.objectives import (
    elbo_terms,
    jacobian_frobenius,
    kl_sparsity,
    l1_sparsity,
    reconstruction_loss,
    sigmoid_jacobian_frobenius,
)
from aevb.models import Batch, DataSpec, Step, build_model
from aevb.nn.corruption import Corruption, NoiseConfig, corrupt

DIGITS = DataSpec((1, 8, 8), "unit", 10)


def model_config(name: str, **values):
    return apply_overrides(Config(), {"model": name, **values}).model


@pytest.fixture(scope="module")
def digits():
    return load_dataset(apply_overrides(Config(), {"dataset": "digits", "binarize": "none"}).data)


# ---------------------------------------------------------------------------------------------
# linear autoencoder and PCA


def sklearn_reconstruction(pca: SklearnPCA, x: np.ndarray) -> np.ndarray:
    return pca.inverse_transform(pca.transform(x))


def test_pca_model_equals_sklearn(digits):
    model = build_model(model_config(name="pca", latent_dim=6), DIGITS)
    model.fit_data(digits.train.values())
    train_x = digits.train.values().flatten(1).numpy()
    test_x = digits.test.values().flatten(1).numpy()
    reference = SklearnPCA(6).fit(train_x)
    with torch.no_grad():
        ours = model.reconstruct(Batch(digits.test.values())).flatten(1).numpy()
    np.testing.assert_allclose(ours, sklearn_reconstruction(reference, test_x), atol=1e-5)
    assert np.degrees(subspace_angles(model.components.T.numpy(), reference.components_.T)).max() < 1e-3
    np.testing.assert_allclose(model.explained_variance.numpy(), reference.explained_variance_,
                               rtol=1e-5)
    with pytest.raises(ConfigError, match="model 'pca' has the keys name, latent_dim "):
        model_config(name="pca", reconstruction="bce")  # pca minimises squared error


@pytest.fixture
def one_thread():
    # 3000 steps of (1297 x 64) @ (64 x 4): thread hand-offs would cost more than the work.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_linear_autoencoder_recovers_the_pca_subspace(digits, one_thread):
    d = 4  # eigenvalues 0.39 | 0.27 around the cut: a clear gap, so the subspace is well defined
    torch.manual_seed(0)
    model = build_model(model_config(name="linear-ae", latent_dim=d, hidden="[]"), DIGITS)
    assert model.reconstruction == "mse"
    assert all(not isinstance(m, torch.nn.Tanh) for m in model.modules())  # identity throughout
    x = digits.train.values()
    steps = 3000
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for step in range(steps):  # full-batch: the linear AE's optimum, not SGD noise, is tested
        loss, _ = model.loss(Batch(x), Step(step, steps))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    reference = SklearnPCA(d).fit(x.flatten(1).numpy())
    decoder_columns = model.decoder[1].weight.detach().numpy()  # (64, d)
    angles = np.degrees(subspace_angles(decoder_columns, reference.components_.T))
    assert angles.max() < 1.0, angles
    test_x = digits.test.values().flatten(1).numpy()
    pca_error = ((sklearn_reconstruction(reference, test_x) - test_x) ** 2).sum(1).mean()
    with torch.no_grad():
        ae_error = (model.reconstruct(Batch(digits.test.values())) - digits.test.values()).pow(2).sum((1, 2, 3)
                                                                                    ).mean()
    assert abs(ae_error.item() - pca_error) <= 0.01 * pca_error  # on test data PCA is no bound
    # An untrained linear AE is far from PCA: the test can fail.
    fresh = build_model(model_config(name="linear-ae", latent_dim=d, hidden="[]"), DIGITS)
    angles = subspace_angles(fresh.decoder[1].weight.detach().numpy(), reference.components_.T)
    assert np.degrees(angles).max() > 10


def test_linear_autoencoder_has_no_nonlinearity_or_cross_entropy_to_choose():
    for key in ("reconstruction", "activation"):
        with pytest.raises(ConfigError, match=f"unknown config key '{key}'.*model 'linear-ae'"):
            model_config(name="linear-ae", **{key: "bce" if key == "reconstruction" else "tanh"})


# ---------------------------------------------------------------------------------------------
# penalties


def finite_difference_frobenius(f, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """||df/dx||_F^2 per example by central differences, one input coordinate at a time."""
    n, features = x.shape
    steps = eps * torch.eye(features, dtype=x.dtype)
    plus = f((x[:, None, :] + steps).reshape(-1, features)).reshape(n, features, -1)
    minus = f((x[:, None, :] - steps).reshape(-1, features)).reshape(n, features, -1)
    return ((plus - minus) / (2 * eps)).pow(2).sum((1, 2))


@pytest.mark.parametrize("hidden", ["[]", "12,7"])
def test_contractive_penalty_matches_finite_differences(hidden):
    torch.manual_seed(0)
    config = model_config(name="contractive-ae", hidden=hidden, latent_dim=5,
                          contractive_weight=0.3)
    model = build_model(config, DataSpec((10,), "unit")).double()
    x = torch.rand(6, 10, dtype=torch.float64)
    code = model.code(x)
    reference = finite_difference_frobenius(model.encoder, x)
    exact = jacobian_frobenius(model.encoder, x)
    torch.testing.assert_close(exact, reference, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(model.penalty(x, code), 0.3 * reference.mean(), rtol=1e-6, atol=0)
    if not hidden:  # the closed form of one sigmoid layer agrees with autograd
        closed = sigmoid_jacobian_frobenius(code, model.encoder[1].weight)
        torch.testing.assert_close(closed, exact)
    # and the penalty trains: its gradient reaches the encoder's first layer
    model.penalty(x, model.code(x)).backward()
    first = next(iter(model.encoder.parameters()))
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_sparsity_penalties_by_hand():
    code = torch.tensor([[0.1, 0.5], [0.3, 0.7]])
    torch.testing.assert_close(l1_sparsity(code), torch.tensor([0.6, 1.0]))
    torch.testing.assert_close(l1_sparsity(-code), torch.tensor([0.6, 1.0]))
    # mean activations 0.2 and 0.6; KL(0.2 || 0.2) = 0, KL(0.2 || 0.6) by hand:
    by_hand = 0.2 * math.log(0.2 / 0.6) + 0.8 * math.log(0.8 / 0.4)
    torch.testing.assert_close(kl_sparsity(code, 0.2), torch.tensor(by_hand))
    assert kl_sparsity(torch.full((3, 4), 0.05), 0.05).abs() < 1e-6
    assert torch.isfinite(kl_sparsity(torch.zeros(3, 4), 0.05))  # dead units: large, finite


@pytest.mark.parametrize("sparsity", ["l1", "kl"])
def test_sparse_autoencoder_adds_its_weighted_penalty(sparsity):
    torch.manual_seed(0)
    config = model_config(name="sparse-ae", hidden="16", latent_dim=4, sparsity=sparsity,
                          sparsity_weight=0.7, sparsity_target=0.1)
    model = build_model(config, DIGITS)
    x = torch.rand(5, 1, 8, 8)
    loss, metrics = model.loss(Batch(x), Step(0, 1))
    code = model.encode(Batch(x))
    assert ((code > 0) & (code < 1)).all()  # sigmoid code units
    penalty = l1_sparsity(code).mean() if sparsity == "l1" else kl_sparsity(code, 0.1)
    torch.testing.assert_close(metrics["penalty"], 0.7 * penalty.detach())
    rec = reconstruction_loss(model.decoder_output(code), x, "bce").mean()
    torch.testing.assert_close(loss, rec + 0.7 * penalty)


def test_reconstruction_losses_by_hand():
    logits = torch.tensor([[0.0, 2.0]])
    x = torch.tensor([[1.0, 0.5]])
    by_hand = math.log(2) + (0.5 * math.log(1 + math.exp(-2)) + 0.5 * math.log(1 + math.exp(2)))
    torch.testing.assert_close(reconstruction_loss(logits, x, "bce"), torch.tensor([by_hand]))
    torch.testing.assert_close(reconstruction_loss(logits, x, "mse"), torch.tensor([1 + 2.25]))
    with pytest.raises(ConfigError, match="real-valued"):
        build_model(model_config(name="ae", reconstruction="bce"), DataSpec((4,), "real"))
    assert build_model(model_config(name="ae"), DataSpec((4,), "real")).reconstruction == "mse"


# ---------------------------------------------------------------------------------------------
# corruption


def test_masking_noise_statistics():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(400, 250) + 0.1  # no zeros before masking
    noisy = corrupt(x, "masking", 0.3, generator)
    masked = noisy == 0
    n = x.numel()
    assert abs(masked.float().mean().item() - 0.3) < 4 * math.sqrt(0.3 * 0.7 / n)
    assert torch.equal(noisy[~masked], x[~masked])


def test_gaussian_noise_statistics():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(400, 250)
    noise = corrupt(x, "gaussian", 0.2, generator) - x
    n = x.numel()
    assert abs(noise.mean().item()) < 4 * 0.2 / math.sqrt(n)
    assert abs(noise.std().item() - 0.2) < 4 * 0.2 / math.sqrt(2 * n)


def test_salt_and_pepper_statistics():
    generator = torch.Generator().manual_seed(0)
    x = torch.full((400, 250), 0.5)
    noisy = corrupt(x, "salt-pepper", 0.4, generator)
    hit = noisy != 0.5
    n = x.numel()
    assert abs(hit.float().mean().item() - 0.4) < 4 * math.sqrt(0.4 * 0.6 / n)
    salted = (noisy[hit] == 1).float().mean().item()
    assert abs(salted - 0.5) < 4 * math.sqrt(0.25 / hit.sum().item())
    assert set(noisy[hit].unique().tolist()) == {0.0, 1.0}


def test_noise_choices_and_errors():
    x = torch.rand(3, 4)
    assert corrupt(x, "none", 0.5) is x
    assert model_config(name="denoising-ae").corruption == NoiseConfig("masking", 0.25)
    assert model_config(name="ae").corruption == NoiseConfig("none", 0.25)
    with pytest.raises(ConfigError, match="salt-pepper"):
        Corruption(NoiseConfig("salt-pepper"), "real")
    with pytest.raises(ConfigError, match="denoising-ae needs"):
        build_model(model_config(name="denoising-ae", noise="none"), DIGITS)
    with pytest.raises(ConfigError, match="fraction"):
        model_config(name="vae", noise="masking", noise_level=1.5)


def test_denoising_encodes_the_corrupted_input_and_scores_the_clean_one():
    torch.manual_seed(0)
    model = build_model(model_config(name="denoising-ae", hidden="16", latent_dim=3,
                                     noise_level=1.0), DIGITS)
    assert model.corruption.noise == "masking"
    x = torch.rand(5, 1, 8, 8)
    loss, _ = model.loss(Batch(x), Step(0, 1))
    # everything masked: the encoder sees zeros, the loss still compares with the clean x
    expected = reconstruction_loss(model.decoder_output(model.code(torch.zeros_like(x))), x, "bce")
    torch.testing.assert_close(loss, expected.mean())


def test_vae_denoising_option():
    config = model_config(name="vae", hidden="16", latent_dim=3, noise="masking", noise_level=1.0,
                          likelihood="continuous-bernoulli")
    model = build_model(config, DIGITS)
    assert model.corruption.noise == "masking"
    x = torch.rand(5, 1, 8, 8)
    torch.manual_seed(1)
    loss, _ = model.loss(Batch(x), Step(0, 1))
    torch.manual_seed(1)
    torch.rand(x.shape)  # the draw masking makes
    terms = elbo_terms(x, model.posterior(torch.zeros_like(x)), model.prior(), model.likelihood)
    torch.testing.assert_close(loss, -terms.elbo.mean())
    plain = build_model(model_config(name="vae", hidden="16", latent_dim=3,
                                     likelihood="continuous-bernoulli"), DIGITS)
    assert not plain.corruption.active


# ---------------------------------------------------------------------------------------------
# the stacked autoencoder


def test_stacked_phases_train_one_layer_at_a_time():
    torch.manual_seed(0)
    model = build_model(model_config(name="stacked-ae", hidden="16", latent_dim=4,
                                     pretrain_steps=3), DIGITS)
    assert [model.layer_of(s) for s in range(8)] == [1, 1, 1, 2, 2, 2, 0, 0]
    x = torch.rand(8, 1, 8, 8)
    for step, trained in [(0, {0}), (4, {1}), (6, {0, 1})]:
        model.zero_grad(set_to_none=True)
        loss, metrics = model.loss(Batch(x), Step(step, 8))
        loss.backward()
        with_grad = {k for k in range(2) if model.encoders[k][0].weight.grad is not None}
        assert with_grad == trained, step
        assert {k for k in range(2) if model.decoders[k][0].weight.grad is not None} == trained
        assert metrics["pretrain_layer"].item() == model.layer_of(step)
        stack = reconstruction_loss(model._decoder_output(model.encode(Batch(x))), x, "bce").mean()
        torch.testing.assert_close(metrics["loss"], stack.detach())
    # validation (eval mode) reports the phase of the step it is told, as training does
    model.eval()
    assert [model.loss(Batch(x), Step(s, 8))[1]["pretrain_layer"].item() for s in (2, 3, 6)
            ] == [1, 2, 0]


def test_stacked_training_shows_both_phases(digits, tmp_path):
    from aevb.reporting.report import write_report

    config = apply_overrides(Config(), {"dataset": "digits", "binarize": "none",
                                        "model": "stacked-ae", "hidden": "32", "latent_dim": "4",
                                        "pretrain_steps": "13", "epochs": "4"})
    result = train(config, tmp_path / "run", progress=False, dataset=digits)
    # 1297 examples in minibatches of 100: 13 steps an epoch, one epoch per pretraining phase
    assert [row["valid_pretrain_layer"] for row in result.history] == [1, 2, 0, 0]
    assert result.history[-1]["valid_loss"] < result.history[0]["valid_loss"]
    # evaluation scores the model's own metrics at the step of its checkpoint: fine-tuning
    evaluation = evaluate_run(tmp_path / "run", progress=False, dataset=digits)
    assert evaluation["test_pretrain_layer"] == 0
    assert evaluation["test_loss"] == pytest.approx(evaluation["test_phase_loss"])
    report = write_report(tmp_path / "run").read_text()
    assert "| layer pretrained (0: fine-tuning) | 0 | 0 |" in report
    assert "| `pretrain_steps` | 13 |" in report
    assert "ELBO (nats)" not in report and "`likelihood`" not in report


# ---------------------------------------------------------------------------------------------
# the convolutional autoencoder


def test_conv_autoencoder_shapes_and_errors():
    model = build_model(model_config(name="conv-ae", channels="4,8", latent_dim=3),
                        DataSpec((1, 28, 28), "unit"))
    x = torch.rand(2, 1, 28, 28)
    assert model.encode(Batch(x)).shape == (2, 3)
    out = model.reconstruct(Batch(x))
    assert out.shape == x.shape and ((out > 0) & (out < 1)).all()
    assert any(isinstance(m, torch.nn.PixelShuffle) for m in model.modules())
    with pytest.raises(ConfigError, match="divisible by 8"):
        build_model(model_config(name="conv-ae", channels="4,8,16"), DataSpec((1, 28, 28), "unit"))
    with pytest.raises(ConfigError, match="images"):
        build_model(model_config(name="conv-ae"), DataSpec((64,), "unit"))


def test_stacked_denoising_resume_equals_an_uninterrupted_run(digits, tmp_path):
    config = apply_overrides(Config(), {"dataset": "digits", "binarize": "none",
                                        "model": "stacked-ae", "hidden": "16", "latent_dim": "3",
                                        "pretrain_steps": "10", "noise": "gaussian",
                                        "noise_level": "0.1", "epochs": "3"})
    straight = train(config, tmp_path / "straight", progress=False, dataset=digits)
    train(apply_overrides(config, {"epochs": "1"}), tmp_path / "split", progress=False,
          dataset=digits)
    resumed = train(config, tmp_path / "split", resume=True, progress=False, dataset=digits)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    # 39 steps: past both 10-step pretraining phases
    assert resumed.history[-1]["valid_pretrain_layer"] == 0


def test_pictures_of_a_model_without_parameters(digits, tmp_path):
    from aevb.reporting.figures import draw_figures

    model = build_model(model_config(name="pca", latent_dim=2), DIGITS)
    model.fit_data(digits.train.values())
    assert not list(model.parameters())
    written = {p.name for p in draw_figures(tmp_path, model, digits)}
    assert written == {"reconstructions.png", "latent.png"}

"""Wasserstein autoencoders: the MMD U-statistic and the sliced distance pinned against exact
values, the Gaussian-encoder option, and WAE-MMD from the command line."""

import json
import math

import pytest
import scipy.stats
import torch

from aevb.cli.main import main
from aevb.config.overrides import apply_overrides
from aevb.config.run import Config
from aevb.data import load_dataset
from aevb.inference.objectives import imq_kernel, mmd_u_statistic, rbf_kernel, sliced_wasserstein
from aevb.models import Batch, DataSpec, Step, build_model


def _gaussians(n, shift, dim=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    y = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    y[:, 0] += shift
    return x, y


@pytest.mark.parametrize("kernel", [imq_kernel, rbf_kernel])
def test_mmd_is_near_zero_for_one_distribution_and_grows_with_the_shift(kernel):
    values = [mmd_u_statistic(*_gaussians(400, shift), kernel).item() for shift in (0, .5, 1, 2)]
    assert abs(values[0]) < 0.01
    assert values == sorted(values) and values[1] > 0.02


def test_the_mmd_u_statistic_is_unbiased():
    # Rbf kernel exp(-|u|^2 / C), C = 2 d, between N(0, I) and N(m, I) in d = 2: x - y is
    # N(-m, 2I), and E exp(-W^2 / C) = (1 + 4/C)^(-1/2) exp(-mu^2 / (C + 4)) per dimension for
    # W ~ N(mu, 2), so MMD^2 = 2 (1 + 4/C)^(-d/2) (1 - exp(-|m|^2 / (C + 4))) = 1 - exp(-1/8).
    dim, c, draws, n = 2, 4.0, 2000, 20
    population = 2 * (1 + 4 / c) ** (-dim / 2) * (1 - math.exp(-1 / (c + 4)))
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(draws, n, dim, generator=generator, dtype=torch.float64)
    y = torch.randn(draws, n, dim, generator=generator, dtype=torch.float64) + torch.tensor(
        [1.0, 0.0], dtype=torch.float64)
    unbiased = torch.stack([mmd_u_statistic(a, b, rbf_kernel) for a, b in zip(x, y, strict=True)])
    se = unbiased.std().item() / math.sqrt(draws)
    assert abs(unbiased.mean().item() - population) < 4 * se
    # the test can fail: the V-statistic (diagonals kept) is biased upwards by about 2(1 - E k)/n
    biased = torch.stack([rbf_kernel(a, a).mean() + rbf_kernel(b, b).mean()
                          - 2 * rbf_kernel(a, b).mean() for a, b in zip(x, y, strict=True)])
    assert biased.mean().item() - population > 8 * se
    # with one distribution the population value is 0, for either kernel
    for kernel in (imq_kernel, rbf_kernel):
        same = torch.stack([mmd_u_statistic(a, b - torch.tensor([1.0, 0.0], dtype=b.dtype),
                                            kernel) for a, b in zip(x, y, strict=True)])
        assert abs(same.mean().item()) < 4 * same.std().item() / math.sqrt(draws)


def test_sliced_wasserstein_in_one_dimension_is_the_exact_distance():
    x, y = _gaussians(300, 0.7, dim=1)
    w1 = scipy.stats.wasserstein_distance(x[:, 0].numpy(), y[:, 0].numpy())
    assert sliced_wasserstein(x, y, 5, p=1).item() == pytest.approx(w1, rel=1e-9)
    w2 = (x[:, 0].sort().values - y[:, 0].sort().values).pow(2).mean().sqrt().item()
    assert sliced_wasserstein(x, y, 3, p=2).item() == pytest.approx(w2, rel=1e-9)
    assert sliced_wasserstein(x, x.flip(0), 3).item() == 0


def test_sliced_wasserstein_is_invariant_to_rotating_both_samples():
    x, y = _gaussians(200, 1.0, dim=3)
    generator = torch.Generator().manual_seed(2)
    rotation, _ = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    theta = torch.randn(3, 16, generator=generator, dtype=torch.float64)
    value = sliced_wasserstein(x, y, theta).item()
    # the same directions rotated along: exactly the same projections
    assert sliced_wasserstein(x @ rotation.T, y @ rotation.T, rotation @ theta).item() == \
        pytest.approx(value, rel=1e-9)
    # fresh uniform directions: equal in expectation; 4000 directions give about 1% error
    many = [sliced_wasserstein(a, b, 4000, p=1, generator=torch.Generator().manual_seed(s))
            for s, (a, b) in enumerate([(x, y), (x @ rotation.T, y @ rotation.T)])]
    assert many[0].item() == pytest.approx(many[1].item(), rel=0.03)
    # and it sees the shift: about |m| E|theta_1| = 1/2 for p = 1 in 3-D
    assert 0.35 < many[0].item() < 0.65


def _digits_model(name, **overrides):
    config = apply_overrides(Config(), {"dataset": "digits", "model": name, "hidden": "16",
                                        "latent_dim": "2", **overrides})
    return build_model(config.model, DataSpec((1, 8, 8), "binary"))


@pytest.fixture(scope="module")
def digits_batch():
    data = load_dataset(apply_overrides(Config(), {"dataset": "digits"}).data)
    return Batch(data.train.batch(torch.arange(64)))


@pytest.mark.parametrize("name", ["wae-mmd", "swae"])
def test_a_gaussian_encoder_samples_codes_to_train_and_encodes_its_mean(name, digits_batch):
    torch.manual_seed(0)
    model = _digits_model(name, encoder="gaussian")
    batch = digits_batch
    assert torch.equal(model.encode(batch), model.encode(batch))
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    losses = []
    for step in range(60):
        loss, metrics = model.loss(batch, Step(step, 60))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert set(metrics) == set(model.metric_names)
    assert sum(losses[-5:]) < 0.9 * sum(losses[:5])
    assert model.code_head.linear.weight.grad.abs().sum() > 0  # the variances learn too


def test_lambda_weights_the_distance(digits_batch):
    torch.manual_seed(0)
    model = _digits_model("wae-mmd", **{"lambda": "0"})
    loss, metrics = model.loss(digits_batch, Step(0, 1))
    assert loss.item() == pytest.approx(metrics["rec_loss"].item()) and metrics["mmd"] != 0


def test_wae_mmd_from_the_command_line(tmp_path):
    out = tmp_path / "wae"
    assert main(["train", "--model", "wae-mmd", "--kernel", "rbf", "--lambda", "10",
                 "--dataset", "digits", "--hidden", "16", "--latent_dim", "2", "--epochs", "1",
                 "--quiet", "--out", str(out)]) == 0
    assert (out / "samples.png").stat().st_size > 0
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert {"test_mmd", "test_rec_loss", "test_loss", "recon_error_per_image"} <= set(evaluation)
    assert "elbo_nats" not in evaluation and abs(evaluation["test_mmd"]) < 1
    assert "test_mmd" in (out / "report.md").read_text()
    config = (out / "config.toml").read_text()
    assert 'kernel = "rbf"' in config and "lambda_ = 10.0" in config

"""The convolutional VAE: the VAE's objectives on conv nets, for any image size and channel
count, every likelihood, and K samples folded into the decoder's batch and back."""

import numpy as np
import pytest
import torch

from aevb.cli.main import main
from aevb.config.overrides import apply_overrides
from aevb.config.run import Config, model_config
from aevb.data import load_dataset
from aevb.engine.loop import make_optimizer
from aevb.models import Batch, DataSpec, Step, build_model
from aevb.nn.nets import ConvNetConfig, MLPConfig

pytestmark = pytest.mark.usefixtures("validate_distributions")

LATENT = 3
KINDS = {"bernoulli": "binary", "continuous-bernoulli": "unit", "gaussian-fixed": "real",
         "gaussian-learned": "real", "gaussian-pixel": "real"}


def conv_vae(shape, likelihood="bernoulli", **values):
    torch.manual_seed(0)
    config = model_config("conv-vae", latent_dim=LATENT, net=ConvNetConfig((4, 8), "relu"),
                          likelihood=likelihood, **values)
    return build_model(config, DataSpec(shape, KINDS[likelihood]))


def data_for(shape, likelihood, n=5):
    x = torch.rand(n, *shape, generator=torch.Generator().manual_seed(1))
    return x.round() if KINDS[likelihood] == "binary" else x


@pytest.fixture(scope="module")
def digits():
    return load_dataset(apply_overrides(Config(), {"dataset": "digits"}).data)


@pytest.mark.parametrize("likelihood", sorted(KINDS))
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 27, 31)])
@torch.no_grad()
def test_every_likelihood_and_image_size_gives_the_right_shapes(shape, likelihood):
    model = conv_vae(shape, likelihood).eval()
    x = data_for(shape, likelihood)
    batch = Batch(x)
    assert model.encode(batch).shape == (5, LATENT)
    assert model.reconstruct(batch).shape == x.shape
    assert model.decode(torch.randn(2, 7, LATENT)).shape == (2, 7, *shape)
    assert model.sample(3).shape == (3, *shape)
    p = model.likelihood(torch.randn(4, 5, LATENT))  # K samples of B codes
    assert (p.batch_shape, p.event_shape) == ((4, 5), shape)
    assert p.log_prob(x).shape == (4, 5)
    terms = model.elbo_terms(batch, samples=4)
    assert terms.rec.shape == (5,) and terms.kl["z"].shape == (5, LATENT)
    log_px = model.log_marginal(batch, 6)
    assert log_px.shape == (5,) and torch.isfinite(log_px).all()


def test_k_samples_decode_as_each_sample_alone():
    model = conv_vae((3, 9, 6), "gaussian-pixel").eval()
    x = data_for((3, 9, 6), "gaussian-pixel")
    z = torch.randn(4, 5, LATENT, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        folded = model.likelihood(z)
        alone = [model.likelihood(z_k) for z_k in z]
    torch.testing.assert_close(folded.mean, torch.stack([p.mean for p in alone]))
    torch.testing.assert_close(folded.stddev, torch.stack([p.stddev for p in alone]))
    torch.testing.assert_close(folded.log_prob(x), torch.stack([p.log_prob(x) for p in alone]))
    # and the samples differ from each other, so a mixed-up fold could not pass
    assert not torch.allclose(folded.mean[0], folded.mean[1])


def test_parameters_stay_float32_under_bfloat16_autocast():
    model = conv_vae((1, 8, 8), "gaussian-pixel")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p = model.likelihood(torch.randn(2, 3, LATENT))
        q = model.posterior(data_for((1, 8, 8), "gaussian-pixel"))
    assert p.mean.dtype == p.stddev.dtype == q.mean.dtype == torch.float32


def test_it_trains_on_digits_and_log_px_lies_above_the_elbo(digits):
    model = conv_vae(digits.event_shape)
    index = torch.arange(64)
    batch = Batch(digits.train.batch(index), digits.train.y[index], index)
    assert set(torch.unique(batch.x).tolist()) <= {0.0, 1.0}
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(40):
        loss, metrics = model.loss(batch, Step(step, 40))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5
    model.eval()
    torch.manual_seed(3)
    with torch.no_grad():
        elbo = model.elbo_terms(batch, samples=100).elbo.mean()
        log_px = model.log_marginal(batch, 100).mean()
    assert log_px > elbo


@pytest.mark.parametrize("overrides", [
    {"objective": "iwae", "iw_samples": "4"},
    {"kl_warmup": "0.5", "beta": "2"},
    {"free_bits": "0.5", "samples": "2", "estimator": "mc"},
    {"noise": "masking", "noise_level": "0.3"},
], ids=["iwae", "warmup-beta", "free-bits-mc", "corruption"])
def test_it_trains_with_every_vae_objective(overrides, digits):
    config = apply_overrides(Config(), {"dataset": "digits", "model": "conv-vae",
                                        "latent_dim": str(LATENT), "net.channels": "4,8",
                                        **overrides})
    torch.manual_seed(0)
    model = build_model(config.model, DataSpec(digits.event_shape, "binary"))
    assert model.corruption.active == ("noise" in overrides)
    optimizer = make_optimizer(config.train, list(model.parameters()))
    batch = Batch(digits.train.batch(torch.arange(32)))
    for step in range(3):
        loss, metrics = model.loss(batch, Step(step, 10))
        assert torch.isfinite(loss) and {"loss", "elbo", "rec", "kl"} <= set(metrics)
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())
        optimizer.step()


def test_the_mlp_vae_keeps_its_parameter_names():
    model = build_model(model_config("vae", latent_dim=2, net=MLPConfig((16,))),
                        DataSpec((1, 8, 8), "binary"))
    assert sorted(model.state_dict()) == [
        "decoder.0.bias", "decoder.0.weight", "encoder.1.0.bias", "encoder.1.0.weight",
        "likelihood_head.linear.bias", "likelihood_head.linear.weight",
        "posterior_head.linear.bias", "posterior_head.linear.weight",
    ]


def test_three_channel_run_from_the_cli_draws_its_figures(tmp_path, capsys):
    npz = tmp_path / "colour.npz"
    x = np.random.default_rng(0).random((40, 3, 12, 10), dtype=np.float32)
    np.savez(npz, x=x)
    out = tmp_path / "run"
    assert main(["train", "--model", "conv-vae", "--dataset", str(npz), "--binarize", "none",
                 "--likelihood", "continuous-bernoulli", "--net.channels", "4,8", "--latent_dim", "2",
                 "--is_samples", "4", "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    for name in ("samples.png", "reconstructions.png"):
        assert (out / name).stat().st_size > 0, name


def test_the_python_api_fits_a_conv_vae_on_colour_arrays():
    import aevb

    generator = np.random.default_rng(0)
    x = generator.random((60, 3, 9, 7)).astype(np.float32)  # odd sizes, RGB, grey levels
    fitted = aevb.fit(x, model="conv-vae", channels=(4,), latent_dim=2, epochs=1,
                      binarize="none", progress=False)
    assert fitted.config.model.likelihood == "continuous-bernoulli"  # kept grey: its likelihood
    assert fitted.reconstruct(x[:5]).shape == (5, 3, 9, 7)
    assert fitted.sample(4).shape == (4, 3, 9, 7)
    assert np.isfinite(fitted.log_likelihood(x[:5], k=8)).all()

"""The paper's Frey Face decoder ("gaussian-sigmoid") and its N(0, 0.01^2) initialisation."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.distributions import Normal

from aevb.config.run import load_config, save_config
from aevb.errors import ConfigError
from aevb.nn.heads import LIKELIHOODS, GaussianHead, decoder_head
from aevb.nn.nets import ConvNetConfig, MLPConfig, conv_decoder, init_normal_, mlp

pytestmark = pytest.mark.usefixtures("validate_distributions")

SHAPE = (1, 4, 3)


@pytest.mark.parametrize("kind", ["unit", "real"])
def test_gaussian_sigmoid_is_the_pixel_gaussian_with_sigmoid_means(kind):
    torch.manual_seed(0)
    head = decoder_head("gaussian-sigmoid", 5, SHAPE, kind, min_sigma=1e-3)
    assert isinstance(head, GaussianHead) and head.params_per_value == 2
    features = 3 * torch.randn(7, 2, 5)  # large, so that some sigmoids saturate towards 0 or 1
    p = head(features)
    assert p.batch_shape == (7, 2) and p.event_shape == SHAPE
    assert ((p.mean > 0) & (p.mean < 1)).all()
    a, b = head.linear(features).chunk(2, dim=-1)  # the head's two outputs per pixel
    expected = Normal(torch.sigmoid(a), 1e-3 + torch.exp(b / 2))
    x = torch.rand(7, 2, *SHAPE)
    assert torch.allclose(p.log_prob(x), expected.log_prob(x.flatten(-3)).sum(-1), atol=1e-5)
    assert "Frey Face" in LIKELIHOODS["gaussian-sigmoid"]


def test_gaussian_sigmoid_per_value_head_for_conv_decoders():
    head = decoder_head("gaussian-sigmoid", None, SHAPE, "unit")
    maps = torch.randn(6, 2, 4, 3)  # (B, 2C, H, W): C means' logits, then C log-variances
    p = head(maps)
    assert torch.allclose(p.mean, torch.sigmoid(maps[:, :1]))
    assert torch.allclose(p.stddev, 1e-3 + torch.exp(maps[:, 1:] / 2))


def test_other_gaussians_keep_identity_means():
    torch.manual_seed(0)
    head = decoder_head("gaussian-pixel", 5, SHAPE, "real")
    features = torch.randn(4, 5)
    a, _ = head.linear(features).chunk(2, dim=-1)
    assert torch.equal(head(features).mean, a.reshape(4, *SHAPE))


def test_init_normal_draws_every_layer_from_n_0_std():
    torch.manual_seed(0)
    net = nn.Sequential(mlp([300, 200, 100], "tanh"),
                        conv_decoder(100, (1, 8, 8), 2, ConvNetConfig((8, 16), "tanh")))
    init_normal_(net, 0.01)
    params = torch.cat([p.flatten() for p in net.parameters()])
    n = params.numel()
    assert n > 80_000
    # sampling error of the std of n normals: 0.01 / sqrt(2n); of the mean: 0.01 / sqrt(n)
    assert abs(params.std().item() - 0.01) < 5 * 0.01 / (2 * n) ** 0.5
    assert abs(params.mean().item()) < 5 * 0.01 / n**0.5
    for layer in net.modules():  # every layer, biases included, not only the bulk of weights
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            for p in layer.parameters(recurse=False):
                assert 0.005 < p.std().item() < 0.02, layer
    torch.manual_seed(0)
    again = nn.Sequential(mlp([300, 200, 100], "tanh"),
                          conv_decoder(100, (1, 8, 8), 2, ConvNetConfig((8, 16), "tanh")))
    init_normal_(again, 0.01)
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), again.parameters(),
                                                 strict=True))  # the global RNG's seed decides


def test_init_normal_leaves_other_parameters_alone():
    head = GaussianHead(4, SHAPE, "learned", sigma=0.5, min_sigma=1e-3)
    init_normal_(head, 0.01)
    assert head.log_sigma.item() == pytest.approx(torch.tensor(0.5).log().item())
    assert head.linear is not None and head.linear.weight.abs().max() < 0.1


def test_init_std_config_default_and_validation(tmp_path):
    assert MLPConfig().init_std is None
    assert MLPConfig(init_std=0.01).init_std == 0.01
    for bad in (0.0, -0.01):
        with pytest.raises(ConfigError, match="net.init_std must be positive"):
            MLPConfig(init_std=bad)
    path = tmp_path / "run.toml"
    path.write_text('[model]\nname = "vae"\n[model.net]\nhidden = [16]\ninit_std = 0.01\n')
    with_init = load_config(path)
    assert with_init.model.net.init_std == 0.01
    path.write_text('[model]\nname = "vae"\n[model.net]\nhidden = [16]\n')
    assert load_config(path).model.net.init_std is None  # old configs load unchanged
    for config in (with_init, load_config(path)):  # None is left out of the TOML, 0.01 kept
        save_config(config, tmp_path / "saved.toml")
        assert load_config(tmp_path / "saved.toml") == config

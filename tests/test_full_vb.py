"""Kingma & Welling's appendix F (a posterior over the decoder's weights) as the vae's
``full_vb`` option, and the paper's N(0, 0.01²) initialisation (``net.init_std``)."""

import pytest
import torch
from torch import nn

from aevb.config.overrides import apply_overrides
from aevb.config.run import Config, model_config
from aevb.engine.checkpoint import load_model
from aevb.engine.loop import train
from aevb.errors import ConfigError
from aevb.models import Batch, DataSpec, Step, build_model
from aevb.nn.bayes import BayesianLinear, parameter_kl
from aevb.nn.nets import MLPConfig

SPEC = DataSpec((6,), "binary", train_size=50)


def test_full_vb_samples_the_decoder_and_pays_its_weights_kl_per_example() -> None:
    torch.manual_seed(0)
    model = build_model(model_config("vae", latent_dim=2, net=MLPConfig((8,)), full_vb=True), SPEC)
    bayesian = [m for m in model.modules() if isinstance(m, BayesianLinear)]
    assert len(bayesian) == 2  # the decoder's hidden layer and the likelihood head
    assert not any(isinstance(m, nn.Linear) for m in model.decoder.modules())
    x = (torch.rand(10, 6) < 0.5).float()
    model.train()
    torch.manual_seed(1)
    loss, metrics = model.loss(Batch(x), Step(0, 1))
    expected = (parameter_kl(model.decoder) + parameter_kl(model.likelihood_head)) / 50
    assert torch.allclose(metrics["kl_weights"], expected)
    torch.manual_seed(1)
    model.config = model_config("vae", latent_dim=2, net=MLPConfig((8,)), full_vb=False)
    plain, _ = model.loss(Batch(x), Step(0, 1))  # the same draws without the weights' KL
    assert torch.allclose(loss, plain + expected)
    z = torch.randn(4, 2)
    model.eval()  # the mean decoder: deterministic
    assert torch.equal(model.decode(z), model.decode(z))
    model.train()  # one weight draw per call
    assert not torch.equal(model.decode(z), model.decode(z))


def test_full_vb_is_refused_where_it_has_no_meaning() -> None:
    with pytest.raises(ConfigError, match="training set's size"):
        build_model(model_config("vae", full_vb=True), DataSpec((6,), "binary"))
    with pytest.raises(ConfigError, match="objective elbo or iwae"):
        model_config("vae", full_vb=True, objective="wake-sleep")


def test_full_vb_trains_and_its_checkpoint_round_trips(tmp_path) -> None:
    config = apply_overrides(Config(), {
        "dataset": "digits", "latent_dim": "2", "hidden": "16", "full_vb": "true",
        "epochs": "2", "precision": "float32", "threads": "1"})
    result = train(config, tmp_path / "run", progress=False)
    first, last = result.history[0], result.history[-1]
    assert last["train_loss"] < first["train_loss"]
    assert 0 < last["train_kl_weights"] < 10
    _, model, _ = load_model(tmp_path / "run", "last")
    x = result.dataset.test.values()[:20]
    torch.manual_seed(0)
    reloaded = model.elbo_terms(Batch(x), 1).elbo
    result.model.eval()
    torch.manual_seed(0)
    assert torch.allclose(result.model.elbo_terms(Batch(x), 1).elbo, reloaded)


def test_init_std_draws_every_weight_of_every_model_from_the_papers_normal() -> None:
    for name, values in (("vae", {}), ("vae", {"full_vb": True}), ("ae", {}), ("hvae", {})):
        torch.manual_seed(0)
        model = build_model(
            model_config(name, net=MLPConfig((64,), init_std=0.01), **values),
            DataSpec((1, 8, 8), "binary", train_size=100))
        weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
        weights += [m.weight_mu for m in model.modules() if isinstance(m, BayesianLinear)]
        values_all = torch.cat([w.detach().flatten() for w in weights])
        assert values_all.numel() > 1000
        # std of n draws from N(0, 0.01²) has a standard error of 0.01 / sqrt(2n)
        assert abs(values_all.std().item() - 0.01) < 5 * 0.01 / (2 * values_all.numel()) ** 0.5
        torch.manual_seed(0)
        default = build_model(model_config(name, net=MLPConfig((64,)), **values),
                              DataSpec((1, 8, 8), "binary", train_size=100))
        first = next(m.weight for m in default.modules() if isinstance(m, nn.Linear))
        assert first.std().item() > 0.05  # PyTorch's default is 1/sqrt(fan_in)-scaled: not it

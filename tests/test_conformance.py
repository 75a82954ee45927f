"""One suite over every registered model: it builds from its own config, keeps the contract and
each ability it declares, learns, and round-trips a checkpoint."""

import dataclasses

import pytest
import torch

from aevb.config.overrides import apply_overrides
from aevb.config.run import Config, config_keys, model_keys
from aevb.data import load_dataset
from aevb.engine.checkpoint import load_model
from aevb.engine.loop import make_optimizer, train
from aevb.errors import ConfigError
from aevb.models import (
    MODELS,
    Batch,
    ClosedForm,
    Conditional,
    Corrupting,
    DataSpec,
    Encoder,
    Generative,
    Likelihood,
    Posterior,
    Step,
    build_model,
)

# Settings a model needs beyond the small defaults below. The stacked autoencoder pretrains
# each of its 2 layers for 10 steps, so the 60 steps below and the 2 epochs of 13 steps in
# training both pass through every phase.
EXTRA: dict[str, dict[str, str]] = {
    "stacked-ae": {"pretrain_steps": "10"},
    "conv-ae": {"channels": "8,16"},
    "conv-vae": {"net.channels": "8,16"},
    "hvae": {"latent_dims": "4,3", "layer_hidden": "16"},
}
VARIANTS: dict[str, dict[str, str]] = {
    "hvae[ladder]": {"inference": "top-down", "posterior": "ladder"},
    "hvae[residual]": {"inference": "top-down", "latent_dims": "4,3,2", "state_dim": "16",
                       "weight_norm": "true"},
    "hvae[conv]": {"inference": "top-down", "net": "conv", "net.channels": "8,16",
                   "net.activation": "relu"},
}
"""Configurations of a model that build other networks, checked as models of their own."""
CASES = sorted([*MODELS, *VARIANTS])
STEPS = 60


def config_for(case: str) -> Config:
    name = case.split("[")[0]
    keys = config_keys(MODELS[name].config_class)
    overrides = {"dataset": "digits", "model": name, "epochs": "2", "is_samples": "8"}
    if "latent_dim" in keys:  # a hierarchical model sizes its layers in EXTRA instead
        overrides["latent_dim"] = "4"
    overrides.update(EXTRA.get(name, {}))
    overrides.update(VARIANTS.get(case, {}))
    if any(key.endswith("hidden") for key in keys) and "net" not in VARIANTS.get(case, {}):
        overrides["hidden"] = "32"
    return apply_overrides(Config(), overrides)


@pytest.fixture(scope="module")
def digits():
    return load_dataset(config_for("vae").data)


pytestmark = pytest.mark.usefixtures("validate_distributions")


def test_every_model_owns_a_documented_config():
    for name, cls in MODELS.items():
        assert cls.description, f"{name} describes itself for `aevb models`"
        config = cls.config_class()
        assert config.name == name
        with pytest.raises(dataclasses.FrozenInstanceError):
            config.name = "other"  # frozen
        undocumented = [key for key, _, doc in model_keys(name) if key != "name" and not doc]
        assert not undocumented, f"{name}: {undocumented}"
        with pytest.raises(ConfigError, match=f"model '{name}' has the keys"):
            apply_overrides(Config(), {"model": name, "no_such_key": "1"})


@pytest.mark.parametrize("name", CASES)
def test_model_keeps_the_contract_and_lowers_its_loss(name, digits):
    torch.manual_seed(0)
    config = config_for(name)
    spec = DataSpec(digits.event_shape, "binary", digits.num_classes)
    model = build_model(config.model, spec)
    metric, mode = model.selection
    assert mode in ("max", "min")
    index = torch.arange(64)
    batch = Batch(digits.train.batch(index), digits.train.y[index], index)
    losses = []
    if isinstance(model, ClosedForm):  # fitted in one go, not by gradient steps
        losses = [model.loss(batch, Step(0, 1))[0].item()] * 5
        model.fit_data(digits.train.values())
        losses += [model.loss(batch, Step(0, 1))[0].item()] * 5
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(config.train, trainable) if not losses else None
    reached: set[int] = set()
    for step in range(STEPS if optimizer else 0):
        loss, metrics = model(batch, Step(step, STEPS))  # forward is the loss
        assert loss.shape == () and torch.isfinite(loss)
        assert {"loss", metric} <= set(metrics) and all(v.shape == () for v in metrics.values())
        assert set(metrics) <= set(model.metric_names), "the report labels every metric"
        optimizer.zero_grad()
        loss.backward()
        reached |= {i for i, p in enumerate(trainable) if p.grad is not None and p.grad.any()}
        optimizer.step()
        losses.append(loss.item())
    assert reached == set(range(len(trainable))), "every trainable parameter gets a gradient"
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5
    _check_abilities(model, config, batch[0][:5], digits.event_shape)


@torch.no_grad()
def _check_abilities(model, config, x, event_shape):
    model.eval()
    batch = Batch(x)
    assert isinstance(model, Encoder)  # every model registered today has one
    # the code's size: the config's latent_dim, or where the code is more, the model's own
    code_dim = getattr(model, "code_dim", config.model.latent_dim)
    assert model.encode(batch).shape == (5, code_dim)
    assert model.reconstruct(batch).shape == x.shape
    if isinstance(model, Generative):
        assert model.sample(3).shape == (3, *event_shape)
        # a conditional model decodes given c: it has no c = 0 default (never trained on)
        c = torch.zeros(2, 7, model.condition_dim) if isinstance(model, Conditional) else None
        assert model.decode(torch.zeros(2, 7, code_dim), c).shape == (
            2, 7, *event_shape)
    if isinstance(model, Likelihood):
        terms = model.elbo_terms(batch)
        assert terms.rec.shape == (5,) and terms.elbo.shape == (5,)
        assert all(part.shape[0] == 5 and part.dim() == 2 for part in terms.kl.values())
        torch.testing.assert_close(terms.elbo, terms.rec - terms.kl_total)
        log_px = model.log_marginal(batch, 7)
        assert log_px.shape == (5,) and torch.isfinite(log_px).all()
    if isinstance(model, Corrupting):
        assert model.corruption(x).shape == x.shape
    if isinstance(model, Posterior):  # its mean is the code; its draws are codes' shape
        posterior = model.posterior_of(batch)
        torch.testing.assert_close(posterior.mean, model.encode(batch))
        assert posterior.sample().shape == (5, code_dim)


@pytest.mark.parametrize("name", CASES)
def test_model_trains_and_round_trips_a_checkpoint(name, digits, tmp_path):
    result = train(config_for(name), tmp_path / name, dataset=digits, progress=False)
    if isinstance(result.model, ClosedForm) and not list(result.model.parameters()):
        # fitted before the first epoch, nothing to train: one epoch measures it, and it
        # reconstructs far better than the mean-free zero map it starts as
        assert len(result.history) == 1
        assert result.history[0]["valid_loss"] < 0.5 * digits.valid.values().pow(2).sum((1, 2, 3)).mean()
    else:
        metric, mode = result.model.selection
        first, last = result.history[0][f"valid_{metric}"], result.history[-1][f"valid_{metric}"]
        assert last > first if mode == "max" else last < first
    _, loaded, _ = load_model(tmp_path / name, "last")
    for key, value in result.model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key

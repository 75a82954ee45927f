"""One suite over every registered model: it builds, learns, and round-trips a checkpoint."""

import pytest
import torch

from aevb.checkpoint import load_model
from aevb.config import Config, apply_overrides
from aevb.data import load_dataset
from aevb.models import (
    MODELS,
    Batch,
    ClosedFormModel,
    DataSpec,
    LatentVariableModel,
    build_model,
)
from aevb.training import make_optimizer, train

# Settings a model needs beyond the small defaults below. The stacked autoencoder pretrains
# each of its 2 layers for 10 steps, so the 60 steps below and the 2 epochs of 13 steps in
# training both pass through every phase.
EXTRA: dict[str, dict[str, str]] = {
    "stacked-ae": {"pretrain_steps": "10"},
    "conv-ae": {"channels": "8,16"},
}


def config_for(name: str) -> Config:
    overrides = {"dataset": "digits", "model": name, "hidden": "32", "latent_dim": "4",
                 "epochs": "2", "is_samples": "8", **EXTRA.get(name, {})}
    return apply_overrides(Config(), overrides)


@pytest.fixture(scope="module")
def digits():
    return load_dataset(config_for("vae").data)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_lowers_its_loss_on_a_fixed_batch(name, digits):
    torch.manual_seed(0)
    config = config_for(name)
    spec = DataSpec(digits.event_shape, "binary", digits.num_classes)
    model = build_model(config.model, spec)
    assert model.description, "every model describes itself for `aevb models`"
    index = torch.arange(64)
    batch = Batch(digits.train.batch(index), digits.train.y[index])
    losses = []
    if isinstance(model, ClosedFormModel):  # fitted in one go, not by gradient steps
        losses = [model.loss(batch, 0)[0].item()] * 5
        model.fit_data(digits.train.x)
        losses += [model.loss(batch, 0)[0].item()] * 5
    optimizer = make_optimizer(config.train, model.parameters()) if not losses else None
    for step in range(60 if optimizer else 0):
        loss, metrics = model.loss(batch, step)
        assert loss.shape == () and torch.isfinite(loss)
        assert "loss" in metrics and all(v.shape == () for v in metrics.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5
    x = batch.x[:5]
    with torch.no_grad():
        assert model.encode(x).shape == (5, config.model.latent_dim)
        assert model.reconstruct(x).shape == x.shape
        if isinstance(model, LatentVariableModel):
            assert model.sample(3).shape == (3, *digits.event_shape)
            assert model.log_weights(x, 7).shape == (7, 5)
            terms = model.elbo_terms(x)
            torch.testing.assert_close(terms.elbo, terms.rec - terms.kl)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_trains_and_round_trips_a_checkpoint(name, digits, tmp_path):
    result = train(config_for(name), tmp_path / name, dataset=digits, progress=False)
    if isinstance(result.model, ClosedFormModel):  # fitted before the first epoch
        assert result.history[-1]["valid_loss"] == result.history[0]["valid_loss"]
        assert result.history[0]["valid_loss"] < 0.5 * digits.valid.x.pow(2).sum((1, 2, 3)).mean()
    else:
        assert result.history[-1]["valid_loss"] < result.history[0]["valid_loss"]
    _, loaded, _ = load_model(tmp_path / name, "last")
    for key, value in result.model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key

"""What keeps a hierarchy's layers in use: free bits per group, KL balancing during warm-up, a
warm-up in steps, gradient clipping and skipping in the loop (counted), residual cells that
start with q = p, and the clear errors around them."""

import math

import pytest
import torch

from aevb.config.overrides import apply_overrides
from aevb.config.run import Config, config_from_dict, config_to_dict, model_config
from aevb.data import load_dataset
from aevb.engine.checkpoint import FORMAT, checkpoint_path, header_config, read_checkpoint
from aevb.engine.loop import train
from aevb.errors import AevbError, ConfigError
from aevb.inference.objectives import ElboTerms
from aevb.inference.schedules import Step, warmup_weight
from aevb.inference.training import balance_coefficients, bound_loss
from aevb.models import DataSpec, build_model
from aevb.models.conv_cells import group_scales
from aevb.models.hvae import HVAE
from aevb.nn.nets import ConvNetConfig, MLPConfig

pytestmark = pytest.mark.usefixtures("validate_distributions")

SPEC = DataSpec((1, 8, 8), "binary", 10)


def terms():
    """Two groups' KLs per example and dimension: z1 (4, 3) holds 1 nat per example, z2 (4, 2)
    holds 0.1."""
    kl = {"z1": torch.full((4, 3), 1 / 3), "z2": torch.full((4, 2), 0.05)}
    return ElboTerms(torch.full((4,), -50.0), kl)


def weights(**values):
    return model_config("hvae", **values)


def test_free_bits_per_group_floor_each_groups_batch_kl():
    # per group: z1's 1 nat passes a floor of 0.5, z2's 0.1 costs 0.5
    loss, metrics = bound_loss(weights(free_bits=0.5, free_bits_per="group"), Step(0, 1), terms())
    torch.testing.assert_close(loss, torch.tensor(50.0 + 1.0 + 0.5))
    # per dimension the same floor costs 0.5 for each of the 5 dimensions
    loss, _ = bound_loss(weights(free_bits=0.5), Step(0, 1), terms())
    torch.testing.assert_close(loss, torch.tensor(50.0 + 2.5))
    torch.testing.assert_close(metrics["elbo"], torch.tensor(-51.1))  # the bound, unfloored


def test_kl_balancing_weighs_groups_by_their_kl_per_dimension_while_warming_up():
    groups = terms().kl
    coefficients = balance_coefficients(groups)
    per_dimension = {"z1": (1 + 0.01) / 3, "z2": (0.1 + 0.01) / 2}
    total = sum(per_dimension.values())
    for name, value in per_dimension.items():
        assert coefficients[name].item() == pytest.approx(2 * value / total)
    balanced = weights(kl_warmup_steps=10, kl_balance=True)
    plain = weights(kl_warmup_steps=10)
    step = Step(5, 100)  # weight 0.5
    loss, metrics = bound_loss(balanced, step, terms())
    expected = 50.0 + 0.5 * (coefficients["z1"] * 1.0 + coefficients["z2"] * 0.1)
    torch.testing.assert_close(loss, expected)
    assert metrics["kl_weight"].item() == pytest.approx(0.5)
    assert not torch.isclose(loss, bound_loss(plain, step, terms())[0])
    # once warm, balancing stops: the bound itself
    torch.testing.assert_close(bound_loss(balanced, Step(10, 100), terms())[0],
                               torch.tensor(51.1))


def test_warmup_in_steps_and_as_a_fraction():
    assert warmup_weight(Step(25, 1000), 0.0, 100) == 0.25
    assert warmup_weight(Step(250, 1000), 0.0, 100) == 1.0
    assert warmup_weight(Step(250, 1000), 0.5, 0) == 0.5
    assert warmup_weight(Step(0, 1000), 0.0, 0) == 1.0


@pytest.mark.parametrize(("values", "message"), [
    ({"posterior": "residual"}, "posterior 'residual' is a form of top-down inference"),
    ({"posterior": "ladder", "inference": "bottom-up"}, "is a form of top-down"),
    ({"net": ConvNetConfig()}, "are for the residual cells"),
    ({"inference": "top-down", "posterior": "ladder", "weight_norm": True},
     "are for the residual cells"),
    ({"kl_warmup": 0.2, "kl_warmup_steps": 10}, "not both"),
    ({"kl_balance": True}, "acts during the KL warm-up"),
    ({"free_bits_per": "layer"}, "free_bits_per"),
    ({"state_dim": 0}, "state_dim must be positive"),
])
def test_bad_hierarchy_settings_are_one_clear_error(values, message):
    with pytest.raises(ConfigError, match=message):
        model_config("hvae", **values)


def test_a_conv_hierarchy_on_data_that_are_not_images_is_a_clear_error():
    config = model_config("hvae", inference="top-down", net=ConvNetConfig((8, 16)))
    with pytest.raises(ConfigError, match="need images"):
        build_model(config, DataSpec((64,), "binary"))


@pytest.mark.parametrize("key", ["grad_skip", "grad_clip"])
@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_a_gradient_threshold_that_is_not_positive_is_a_clear_error(key, value):
    with pytest.raises(ConfigError, match=f"train.{key}"):
        apply_overrides(Config(), {key: value})


def test_group_scales_put_the_top_groups_on_the_coarsest_maps():
    assert group_scales(2, 2) == [1, 2]
    assert group_scales(4, 2) == [1, 1, 2, 2]
    assert group_scales(5, 2) == [1, 1, 2, 2, 2]
    assert group_scales(1, 2) == [2]


def test_residual_cells_start_with_each_posterior_its_prior():
    torch.manual_seed(0)
    x = (torch.rand(6, 1, 8, 8) < 0.3).float()
    for net in (MLPConfig((16,)), ConvNetConfig((8, 16), "relu")):
        model = build_model(model_config("hvae", inference="top-down", latent_dims=(4, 3, 2),
                                         net=net, layer_hidden=(8,), state_dim=12), SPEC)
        for layer in model.layers(x, 3):
            torch.testing.assert_close(layer.posterior.base_dist.loc, layer.prior.base_dist.loc)
            torch.testing.assert_close(layer.posterior.base_dist.scale,
                                       layer.prior.base_dist.scale)


def digits_run(tmp_path, **overrides):
    values = {"dataset": "digits", "model": "hvae", "latent_dims": "4,3", "hidden": "32",
              "layer_hidden": "16", "state_dim": "32", "inference": "top-down",
              "batch_size": "50", "is_samples": "8", "threads": "1", **overrides}
    config = apply_overrides(Config(), values)
    return train(config, tmp_path, dataset=load_dataset(config.data), progress=False)


def test_free_bits_per_group_keep_every_residual_layer_above_the_floor(tmp_path):
    # digits is small enough that a 2-layer model leaves both layers unused: after 260 steps
    # each layer's KL is below 0.05 nats. With a floor of 1 nat per group a layer below the
    # floor is not pushed to its prior, and every layer holds more than 0.4 nats.
    for name, part in digits_run(tmp_path / "plain", epochs="10").history[-1].items():
        if name.startswith(("train_kl_z", "valid_kl_z")):
            assert part < 0.05, name
    floored = digits_run(tmp_path / "floored", epochs="10", free_bits="1.0",
                         free_bits_per="group").history[-1]
    for name in ("train_kl_z1", "train_kl_z2", "valid_kl_z1", "valid_kl_z2"):
        assert floored[name] > 0.4, (name, floored[name])


def test_updates_above_the_skip_threshold_are_skipped_and_counted(tmp_path):
    skipped = digits_run(tmp_path / "skip", epochs="2", grad_skip="1e-6")
    steps = [row["step"] for row in skipped.history]  # 26 steps an epoch
    assert [row["skipped_updates"] for row in skipped.history] == [steps[0], steps[1] - steps[0]]
    _, header = read_checkpoint(checkpoint_path(tmp_path / "skip", "last"))
    assert header["skipped_updates"] == steps[1]
    torch.manual_seed(0)  # the run's seed: the weights it started from
    fresh = build_model(skipped.model.config, skipped.model.data)
    for key, value in fresh.state_dict().items():  # every update skipped: as initialised
        assert torch.equal(value, skipped.model.state_dict()[key]), key
    kept = digits_run(tmp_path / "keep", epochs="1", grad_skip="1e9", grad_clip="1.0")
    assert kept.history[-1]["skipped_updates"] == 0
    assert math.isfinite(kept.history[-1]["train_grad_norm"])


def test_a_batch_whose_loss_is_not_finite_is_skipped_not_a_divergence(tmp_path, monkeypatch):
    original = HVAE.loss

    def loss(self, batch, step):  # the 6th step's loss (and gradient) is NaN
        value, metrics = original(self, batch, step)
        return (value * math.nan, metrics) if step.index == 5 else (value, metrics)

    monkeypatch.setattr(HVAE, "loss", loss)
    with pytest.raises(AevbError, match="training diverged"):
        digits_run(tmp_path / "plain", epochs="1")
    result = digits_run(tmp_path / "skipping", epochs="1", grad_skip="1e9")
    assert result.history[-1]["skipped_updates"] == 1
    assert math.isfinite(result.history[-1]["train_loss"])


def test_gradient_clipping_bounds_every_update(tmp_path, monkeypatch):
    norms = []
    original = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g) for g in grads])).item())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    digits_run(tmp_path, epochs="1", grad_clip="0.5")
    assert norms and max(norms) <= 0.5 + 1e-4


def test_a_top_down_run_saved_before_posterior_was_a_key_loads_as_the_ladder():
    config = apply_overrides(Config(), {"model": "hvae", "inference": "top-down",
                                        "posterior": "ladder"})
    data = config_to_dict(config)
    del data["model"]["posterior"]  # as a run written before the key saved it
    assert header_config({"config": data, "format": FORMAT}).model.posterior == "ladder"
    assert config_from_dict(data).model.posterior == "auto"  # a user's config: the default

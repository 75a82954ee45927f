"""Run configs: each model's own keys, typed overrides, nested TOML, and the first format."""

import re
import sys

import pytest

from aevb.config.overrides import apply_overrides
from aevb.config.run import (
    Config,
    config_from_dict,
    config_to_dict,
    dump_toml,
    load_config,
    model_config,
)
from aevb.errors import ConfigError
from aevb.models.autoencoders import ConvAutoencoderConfig
from aevb.nn.corruption import NoiseConfig
from aevb.nn.nets import ConvNetConfig, MLPConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_a_key_the_model_lacks_is_an_error_naming_the_model_and_its_keys():
    with pytest.raises(ConfigError) as caught:
        apply_overrides(Config(), {"model": "vae", "channels": "8"})
    message = str(caught.value)
    assert "unknown config key 'channels'" in message and "model 'vae'" in message
    for key in ("latent_dim", "net.hidden", "likelihood", "kl_warmup", "corruption.noise"):
        assert key in message
    with pytest.raises(ConfigError, match="model 'conv-ae' has the keys"):
        apply_overrides(Config(), {"model": "conv-ae", "hidden": "16"})
    with pytest.raises(ConfigError, match="model 'pca'"):
        config_from_dict({"model": {"name": "pca", "hidden": [3]}})
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        apply_overrides(Config(), {"model": "nope"})


def test_keys_resolve_by_their_last_part_or_their_path():
    config = apply_overrides(Config(), {"hidden": "400,400", "epochs": 3, "dataset": "digits"})
    assert config.model.net == MLPConfig((400, 400), "tanh")
    assert config.train.epochs == 3 and config.data.name == "digits"
    for key in ("model.hidden", "model.net.hidden", "net.hidden"):
        assert apply_overrides(Config(), {key: "7"}).model.net.hidden == (7,)
    assert apply_overrides(Config(), {"train.lr": "0.5"}).train.lr == 0.5
    assert apply_overrides(Config(), {"hidden": 64}).model.net.hidden == (64,)  # from Python
    with pytest.raises(ConfigError, match="ambiguous"):
        apply_overrides(Config(), {"name": "x"})
    with pytest.raises(ConfigError, match="must be an integer"):
        apply_overrides(Config(), {"latent_dim": "two"})
    with pytest.raises(ConfigError, match="unknown config key 'train.epoch'"):
        apply_overrides(Config(), {"train.epoch": "3"})


def test_a_field_named_for_a_python_keyword_answers_to_the_keyword():
    # WAEConfig.lambda_ (lambda is reserved in Python) is --lambda on the command line
    for key in ("lambda", "model.lambda", "lambda_", "model.lambda_"):
        config = apply_overrides(Config(), {"model": "wae-mmd", key: "2.5"})
        assert config.model.lambda_ == 2.5
    with pytest.raises(ConfigError, match="unknown config key 'lambda'"):
        apply_overrides(Config(), {"model": "vae", "lambda": "1"})  # only where a model has it


def test_switching_model_keeps_the_settings_that_were_changed_and_that_it_has():
    base = apply_overrides(Config(), {"latent_dim": "3", "hidden": "16", "likelihood":
                                      "continuous-bernoulli"})
    conv = apply_overrides(base, {"model": "conv-ae"})
    assert conv.model == ConvAutoencoderConfig(latent_dim=3)
    ae = apply_overrides(base, {"model": "ae"}).model
    assert (ae.latent_dim, ae.net.hidden) == (3, (16,))
    # the vae's default (no noise) is no choice of the user's: denoising keeps its masking
    assert apply_overrides(base, {"model": "denoising-ae"}).model.corruption.noise == "masking"
    # keys given with the new model are looked up in the new model's config
    assert apply_overrides(base, {"model": "conv-ae", "channels": "4"}).model.net == \
        ConvNetConfig((4,), "tanh")
    # a key that the old model's default sub-table lacks (a conv net's channels) is a setting
    conv_cvae = apply_overrides(Config(model=model_config("cvae")), {"net": "conv", "channels": "8"})
    assert apply_overrides(conv_cvae, {"model": "conv-vae"}).model.net == ConvNetConfig((8,), "relu")


def test_toml_round_trip_with_sub_tables(tmp_path):
    config = apply_overrides(Config(), {"model": "stacked-ae", "hidden": "20,10",
                                        "noise": "gaussian", "train_size": "50"})
    text = dump_toml(config)
    assert "[model.net]\n" in text and "[model.corruption]\n" in text
    tree = tomllib.loads(text)
    assert tree["model"]["net"]["hidden"] == [20, 10]
    assert tree["model"]["corruption"]["noise"] == "gaussian"
    assert "labelled" not in tree["data"]  # None is left out: TOML has no null
    assert config_from_dict(tomllib.loads(text)) == config
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert load_config(path) == config


def test_configs_of_the_first_format_are_read_as_their_model_nests_them():
    flat = {"name": "denoising-ae", "latent_dim": 2, "hidden": [16], "activation": "relu",
            "likelihood": "bernoulli", "noise": "auto", "noise_level": 0.4, "channels": [32, 64],
            "sparsity": "l1", "reconstruction": "auto", "pretrain_steps": 1000}
    config = config_from_dict({"model": flat}, legacy=True)
    assert config.model == model_config("denoising-ae", latent_dim=2,
                                        net=MLPConfig((16,), "relu"),
                                        corruption=NoiseConfig("masking", 0.4))
    with pytest.raises(ConfigError, match="model 'denoising-ae'"):
        config_from_dict({"model": flat})  # today, those keys are errors
    assert config_to_dict(config)["model"]["net"] == {"hidden": [16], "activation": "relu",
                                                       "init_std": None}



@pytest.mark.parametrize(("model", "table", "message"), [
    ("vae", {"kind": "mcem", "hmc_step_size": -1}, "model.objective.hmc_step_size must be positive"),
    ("vae", {"kind": "iwae", "iw_samples": 0}, "model.objective.iw_samples must be positive"),
    ("vae", {"kind": "mcem", "hmc_steps": 3}, "'model.objective.hmc_steps' (known: kind, hmc_"),
    ("hvae", {"kind": "mcem"}, "model.objective kind must be one of elbo, iwae; got 'mcem'"),
])
def test_a_sub_config_table_is_read_as_the_kind_it_names(model, table, message):
    objective = {"kind": "mcem", "hmc_transitions": 2}
    assert config_from_dict({"model": {"objective": objective}}).model.objective.hmc_transitions == 2
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict({"model": {"name": model, "objective": table}})


def test_a_kind_a_model_lacks_is_named_for_its_own_sub_config():
    with pytest.raises(ConfigError) as caught:
        apply_overrides(Config(), {"net": "conv"})  # the plain vae's net: an MLP or your own
    message = str(caught.value)
    assert "model.net kind must be one of mlp, custom; got 'conv'" in message
    assert "conv-vae" in message
    assert "net" not in message.replace("model.net", "")  # it speaks of no net but the key's
    with pytest.raises(ConfigError, match="model.net kind must be one of mlp, conv, custom; got 'dense'"):
        apply_overrides(Config(model=model_config("cvae")), {"net": "dense"})

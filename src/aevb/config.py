"""Run configuration: frozen dataclasses, loaded from TOML and overridden from the CLI.

Every value is type-checked; unknown keys are errors. The defaults are the paper's MNIST net
(Kingma & Welling 2014, sec. 5: one hidden layer of 500 tanh units, minibatches of M=100, L=1)
trained with Adam; ``configs/paper-mnist.toml`` switches to the paper's Adagrad.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "Config",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "dump_toml",
    "load_config",
    "save_config",
]

BINARIZE_MODES = ("none", "static", "dynamic", "threshold")
ESTIMATORS = ("analytic", "mc")
OPTIMIZERS = ("adam", "adagrad", "sgd")
RECONSTRUCTIONS = ("auto", "bce", "mse")
SPARSITIES = ("l1", "kl")
NOISES = ("auto", "none", "masking", "gaussian", "salt-pepper")
PRECISIONS = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class DataConfig:
    name: str = "mnist"
    """A dataset name (``aevb data list``) or a path to a user's ``.npy``/``.npz`` file."""
    binarize: str = "dynamic"
    """none | static (one fixed Bernoulli sample) | dynamic (resampled every epoch) | threshold."""
    cache_dir: str = ""
    """Where fetched data is kept; empty means $AEVB_CACHE or ~/.cache/aevb."""
    train_size: int | None = None
    """Use only the first N training examples (quick experiments, tests)."""
    split_seed: int = 0
    """Seed of the fixed binarization and of splitting a user's array."""

    def __post_init__(self) -> None:
        _check_choice("data.binarize", self.binarize, BINARIZE_MODES)
        _check_positive("data.train_size", self.train_size)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "vae"
    """A registered model (``aevb models``)."""
    latent_dim: int = 20
    hidden: tuple[int, ...] = (500,)
    """Hidden layer sizes of the encoder MLP; the decoder mirrors them."""
    activation: str = "tanh"
    likelihood: str = "bernoulli"
    """p(x|z): bernoulli | continuous-bernoulli | gaussian-fixed | gaussian-learned | gaussian-pixel."""
    sigma: float = 1.0
    """Decoder standard deviation for gaussian-fixed, initial value for gaussian-learned."""
    min_sigma: float = 1e-3
    """Lower bound on a learned decoder standard deviation (keeps per-pixel sigma finite)."""
    estimator: str = "analytic"
    """SGVB estimator: analytic (the paper's B: closed-form KL) or mc (A: sampled log-ratio)."""
    samples: int = 1
    """L, the number of z samples per datapoint in the training objective."""
    beta: float = 1.0
    """Weight on the KL term (beta-VAE; 1 is the ELBO)."""
    reconstruction: str = "auto"
    """Autoencoders' L(x, g(f(x))): bce (cross-entropy, data in [0, 1]) | mse (squared error)
    | auto (mse for linear-ae and pca, else bce on data in [0, 1] and mse on real data)."""
    noise: str = "auto"
    """Input corruption while training (the target stays clean): none | masking | gaussian |
    salt-pepper | auto (masking for denoising-ae, none for every other model)."""
    noise_level: float = 0.25
    """Fraction of pixels masked or salted, or the Gaussian noise's standard deviation."""
    sparsity: str = "l1"
    """sparse-ae's penalty: l1 (on the code) | kl (KL(rho || mean activation) per code unit)."""
    sparsity_weight: float = 0.1
    sparsity_target: float = 0.05
    """rho, the target mean activation of a code unit for the kl sparsity penalty."""
    contractive_weight: float = 0.1
    """contractive-ae's weight on the squared Frobenius norm of the encoder Jacobian."""
    pretrain_steps: int = 1000
    """stacked-ae's greedy pretraining steps per layer (1000: 2 MNIST epochs at M=100), before
    fine-tuning the whole stack."""
    channels: tuple[int, ...] = (32, 64)
    """conv-ae's channels after each strided convolution (each halves the height and width)."""

    def __post_init__(self) -> None:
        _check_choice("model.estimator", self.estimator, ESTIMATORS)
        _check_choice("model.reconstruction", self.reconstruction, RECONSTRUCTIONS)
        _check_choice("model.noise", self.noise, NOISES)
        _check_choice("model.sparsity", self.sparsity, SPARSITIES)
        _check_positive("model.pretrain_steps", self.pretrain_steps)
        if not 0 < self.sparsity_target < 1:
            raise ConfigError(f"model.sparsity_target must be in (0, 1), got {self.sparsity_target}")
        if self.noise in ("masking", "salt-pepper") and not 0 <= self.noise_level <= 1:
            raise ConfigError(f"model.noise_level is a fraction for {self.noise}, got {self.noise_level}")
        if min(self.noise_level, self.sparsity_weight, self.contractive_weight) < 0:
            raise ConfigError("model.noise_level, sparsity_weight and contractive_weight must be >= 0")
        if not self.channels or any(c <= 0 for c in self.channels):
            raise ConfigError(f"model.channels must hold positive sizes, got {list(self.channels)}")
        _check_positive("model.latent_dim", self.latent_dim)
        _check_positive("model.samples", self.samples)
        if any(h <= 0 for h in self.hidden):
            raise ConfigError(f"model.hidden must hold positive sizes, got {list(self.hidden)}")
        if self.sigma <= 0 or self.min_sigma <= 0:
            raise ConfigError("model.sigma and model.min_sigma must be positive")
        if self.beta < 0:
            raise ConfigError(f"model.beta must be >= 0, got {self.beta}")


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    """L2 decay; the paper's N(0, I) prior on the parameters."""
    batch_size: int = 100
    """M, the minibatch size."""
    epochs: int = 20
    train_samples: int | None = None
    """A budget in training examples seen; when set it replaces ``epochs``."""
    patience: int | None = None
    """Stop after this many epochs without a better validation ELBO."""
    seed: int = 0
    device: str = "auto"
    """auto | cpu | cuda | cuda:N | mps."""
    threads: int | None = None
    """CPU threads for PyTorch; default: all cores."""
    precision: str = "auto"
    """Training matmuls: float32 | bfloat16 (autocast; distribution parameters, losses and
    weights stay float32) | auto (bfloat16 on a CPU with native bf16 units, else float32).
    Validation and evaluation always run in float32."""

    def __post_init__(self) -> None:
        _check_choice("train.optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("train.precision", self.precision, PRECISIONS)
        _check_positive("train.lr", self.lr)
        _check_positive("train.batch_size", self.batch_size)
        _check_positive("train.epochs", self.epochs)
        _check_positive("train.train_samples", self.train_samples)
        _check_positive("train.patience", self.patience)
        _check_positive("train.threads", self.threads)
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay must be >= 0, got {self.weight_decay}")


@dataclass(frozen=True)
class EvalConfig:
    is_samples: int = 1000
    """K, importance samples per test point for log p(x) (the literature uses 5000)."""
    batch_points: int = 100
    """Test points per evaluation batch."""
    max_points: int | None = None
    """Evaluate only the first N test points."""
    plots: bool = True

    def __post_init__(self) -> None:
        _check_positive("eval.is_samples", self.is_samples)
        _check_positive("eval.batch_points", self.batch_points)
        _check_positive("eval.max_points", self.max_points)


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


def _check_positive(key: str, value: float | None) -> None:
    if value is not None and value <= 0:
        raise ConfigError(f"{key} must be positive, got {value}")


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass with type checks


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a field annotation, converting only where it is lossless."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(key, value, option)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is tuple:
        (item_type, _) = typing.get_args(annotation)
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return tuple(_coerce(f"{key}[{i}]", v, item_type) for i, v in enumerate(value))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                try:
                    as_float = float(value)
                except ValueError:
                    as_float = None
                if as_float is not None and as_float.is_integer():
                    return int(as_float)
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {annotation}")  # pragma: no cover


def _section_from_dict(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"[{prefix}] must be a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}.{unknown[0]} (known: {', '.join(sorted(names))})"
        )
    values = {k: _coerce(f"{prefix}.{k}", v, hints[k]) for k, v in data.items()}
    return cls(**values)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build a :class:`Config` from nested dicts; unknown sections or keys are errors."""
    sections = {f.name: f for f in fields(Config)}
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise ConfigError(
            f"unknown config section [{unknown[0]}] (known: {', '.join(sections)})"
        )
    hints = typing.get_type_hints(Config)
    return Config(
        **{name: _section_from_dict(hints[name], data.get(name, {}), name) for name in sections}
    )


def config_to_dict(config: Config) -> dict[str, dict[str, Any]]:
    """Nested plain dicts (tuples become lists), suitable for JSON and TOML."""

    def plain(value: Any) -> Any:
        if is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    return plain(config)


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    return config_from_dict(data)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")  # pragma: no cover


def dump_toml(config: Config) -> str:
    """TOML text for a config; ``None`` values are left out (TOML has no null)."""
    lines = []
    for section, values in config_to_dict(config).items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
        lines.append("")
    return "\n".join(lines)


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(dump_toml(config))


# ---------------------------------------------------------------------------------------------
# overrides: "train.epochs=5" or, where the key is unique across sections, "epochs=5"

ALIASES = {"dataset": "data.name", "model": "model.name", "out": None}


def _resolve_key(key: str) -> tuple[str, str]:
    key = key.replace("-", "_")
    if key in ALIASES and ALIASES[key]:
        key = ALIASES[key]
    if "." in key:
        section, name = key.split(".", 1)
        return section, name
    owners = [
        f.name
        for f in fields(Config)
        if key in {g.name for g in fields(typing.get_type_hints(Config)[f.name])}
    ]
    if not owners:
        raise ConfigError(f"unknown config key {key!r}")
    if len(owners) > 1:
        choices = " or ".join(f"{o}.{key}" for o in owners)
        raise ConfigError(f"config key {key!r} is ambiguous: say {choices}")
    return owners[0], key


def apply_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """Return a copy of ``config`` with ``{"section.key" or "key": value}`` applied, type-checked."""
    data = config_to_dict(config)
    for raw_key, value in overrides.items():
        section, name = _resolve_key(raw_key)
        if section not in data:
            raise ConfigError(f"unknown config section in {raw_key!r}")
        if name not in data[section]:
            raise ConfigError(f"unknown config key {section}.{name}")
        data[section][name] = value
    return config_from_dict(data)


def with_section(config: Config, **sections: Any) -> Config:
    """``replace`` for nested sections: ``with_section(c, train={"epochs": 3})``."""
    updated = {
        name: replace(getattr(config, name), **values) for name, values in sections.items()
    }
    return dataclasses.replace(config, **updated)

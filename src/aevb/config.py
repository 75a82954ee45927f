"""Run configuration: frozen dataclasses, loaded from TOML and overridden from the CLI.

Every value is type-checked; unknown keys are errors. The defaults are the paper's MNIST net
(Kingma & Welling 2014, sec. 5: one hidden layer of 500 tanh units, minibatches of M=100, L=1)
trained with Adam; ``configs/paper-mnist.toml`` switches to the paper's Adagrad.

``[model]`` is the chosen model's own config dataclass, which lives beside the model (its
class's ``config_class``), with shared parts such as ``[model.net]`` as sub-tables. To read it
this module asks the model registry, so it sits above ``models`` in the layers: models import
nothing of it.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import math
import sys
import textwrap
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, check_choice, check_positive
from .models import MODELS, model_class

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "Config",
    "DataConfig",
    "EvalConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_keys",
    "config_to_dict",
    "dump_toml",
    "field_docs",
    "model_keys",
    "load_config",
    "model_config",
    "save_config",
]

BINARIZE_MODES = ("none", "static", "dynamic", "threshold")
OPTIMIZERS = ("adam", "adagrad", "sgd")
PRECISIONS = ("auto", "float32", "bfloat16")
LR_SCHEDULES = ("constant", "iwae")


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
    labelled: int | None = None
    """Keep labels for only N training examples, balanced over classes, chosen with
    split_seed; the rest of train is unlabelled (its y is -1). Valid and test keep theirs."""
    labelled_per_batch: int | None = None
    """m: labelled examples in every training minibatch of a run with ``labelled``, cycled
    through (oversampled) while the other M - m go once through the unlabelled ones per epoch.
    Default: M N / n, at least M / 10 (10 of 100 for 100 labels of MNIST)."""
    features: str | None = None
    """A run directory whose model has an encoder (a vae): train and evaluate on its codes,
    the encoder means of the data, instead of the data (M1+M2). Relative paths are looked up
    in the run directory first, like data files."""
    split_seed: int = 0
    """Seed of the fixed binarization and of splitting a user's array."""
    image_channels: int = 1
    """1 (grey) or 3 (RGB): how a folder of images is read (other data ignores it). Not
    ``channels``: that is a conv net's key, and ``--channels`` keeps meaning it."""
    image_size: tuple[int, ...] = ()
    """H, W to resize a folder's images to; empty: the first image's size (folders only)."""

    def __post_init__(self) -> None:
        check_choice("data.binarize", self.binarize, BINARIZE_MODES)
        check_positive("data.train_size", self.train_size)
        check_positive("data.labelled", self.labelled)
        check_positive("data.labelled_per_batch", self.labelled_per_batch)
        if self.image_channels not in (1, 3):
            raise ConfigError("data.image_channels must be 1 (grey) or 3 (RGB),"
                              f" got {self.image_channels}")
        if self.image_size and (len(self.image_size) != 2 or min(self.image_size) <= 0):
            raise ConfigError(
                f"data.image_size must be empty or two positive sizes H, W; got {self.image_size}"
            )


def model_config(name: str = "vae", **values: Any) -> Any:
    """The config of the registered model ``name``: its defaults, with ``values`` replaced."""
    return model_class(name).config_class(**values)


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = "adam"
    lr: float = 1e-3
    lr_schedule: str = "constant"
    """constant | iwae (Burda et al. 2016: 3^i passes at lr * 10^(-i/7) for i = 0..7, then
    lr / 10; a shorter run is theirs stopped early)."""
    adam_eps: float = 1e-8
    """Adam's epsilon (the IWAE paper: 1e-4)."""
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
    weights stay float32) | auto (bfloat16 on a CPU whose native bf16 matmuls were timed at
    1.25x float32's or faster, else float32: ``training.bf16_matmuls_pay``).
    Validation runs in float32; the evaluation, in float32 unless eval.is_precision says."""

    def __post_init__(self) -> None:
        check_choice("train.optimizer", self.optimizer, OPTIMIZERS)
        check_choice("train.precision", self.precision, PRECISIONS)
        check_choice("train.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_positive("train.adam_eps", self.adam_eps)
        check_positive("train.lr", self.lr)
        check_positive("train.batch_size", self.batch_size)
        check_positive("train.epochs", self.epochs)
        check_positive("train.train_samples", self.train_samples)
        check_positive("train.patience", self.patience)
        check_positive("train.threads", self.threads)
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
    is_precision: str = "float32"
    """Matmuls of the importance-sampled log p(x): float32 | bfloat16 (autocast; densities stay
    float32), kept only where its log p(x) agrees with float32's within 0.02 nats per point on
    average over the first points, else the evaluation falls back to float32."""
    is_compile: bool = True
    """torch.compile the Bernoulli likelihood's softplus sum when points x K >= 10^7, where
    the seconds of compiling pay back (2x faster kernel on a CPU); false: never."""
    plots: bool = True

    def __post_init__(self) -> None:
        check_choice("eval.is_precision", self.is_precision, ("float32", "bfloat16"))
        check_positive("eval.is_samples", self.is_samples)
        check_positive("eval.batch_points", self.batch_points)
        check_positive("eval.max_points", self.max_points)


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: Any = field(default_factory=model_config)
    """An instance of the chosen model's own config dataclass (``MODELS[name].config_class``)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass with type checks


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a field annotation, converting only where it is lossless."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        kinds: dict[Any, Any] = {getattr(o, "kind", None): o for o in options if is_dataclass(o)}
        if isinstance(value, str) and value in kinds:  # --net conv: that kind's defaults
            return kinds[value]()
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
            if not value.strip():  # --hidden "" is a slip; no layers at all is said as []
                raise ConfigError(f"{key} must be a comma-separated list such as 400,400; got"
                                  " an empty string (write [] for an empty list)")
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]  # hidden=64 from Python means one layer of 64
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
        integer = _integer(value)
        if integer is None:
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        if abs(integer) >= 2**63:  # torch sizes and seeds are 64-bit
            raise ConfigError(f"{key} is too large, got {value!r}")
        return integer
    if annotation is float:
        number = None
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                number = float(value)
            except (ValueError, OverflowError):
                number = math.inf if isinstance(value, int) else None
        if number is None:
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if not math.isfinite(number):  # nan passes every range check; inf is no setting
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        return number
    if isinstance(annotation, type) and is_dataclass(annotation):
        kind = getattr(annotation, "kind", None)
        if isinstance(value, str) and kind is not None:
            if value == kind:
                return annotation()
            raise ConfigError(f"{key} of this model is a {kind} net, not {value!r} (a conv VAE"
                              " is the model conv-vae)")
        return _section_from_dict(annotation, value, key)
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {annotation}")  # pragma: no cover


def _integer(value: Any) -> int | None:
    """``value`` as an int where that is lossless (2, 2.0, "2", "2_000", "1e3"), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.replace("_", ""))
        except ValueError:
            try:
                value = float(value)
            except ValueError:
                return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _section_from_dict(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"[{prefix}] must be a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(_unknown_key_message(f"{prefix}.{unknown[0]}", cls, prefix))
    defaults = {f.name: f.default for f in fields(cls) if is_dataclass(f.default)}
    values = {}
    for key, value in data.items():
        default = defaults.get(key)
        if (default is not None and isinstance(value, dict)
                and set(value) <= {f.name for f in fields(default)}):
            # a partial sub-table fills in from this config's own default for it
            value = {**config_to_dict(default), **value}
        values[key] = _coerce(f"{prefix}.{key}", value, hints[key])
    return cls(**values)


def _unknown_key_message(key: str, cls: type, prefix: str) -> str:
    name = getattr(cls, "name", None)
    if prefix == "model" and name in MODELS:
        keys = ", ".join(config_keys(cls))
        return (f"unknown config key {key!r}: model {name!r} has the keys {keys}"
                f" (`aevb models {name}` describes them)")
    return f"unknown config key {key!r} (known: {', '.join(config_keys(cls))})"


def config_keys(cls: type) -> list[str]:
    """The keys of a config dataclass, sub-configs' as ``sub.key``, in declaration order."""
    keys = []
    for f in fields(cls):
        annotation = typing.get_type_hints(cls)[f.name]
        if isinstance(annotation, type) and is_dataclass(annotation):
            keys += [f"{f.name}.{k}" for k in config_keys(annotation)]
        else:
            keys.append(f.name)
    return keys


def model_keys(name: str) -> list[tuple[str, str, str]]:
    """(key, default as TOML, one-line doc) for every key of model ``name``'s config."""
    return _key_rows(model_class(name).config_class(), "")


def _key_rows(config: Any, prefix: str) -> list[tuple[str, str, str]]:
    rows = []
    docs = field_docs(type(config))
    for f in fields(config):
        value = getattr(config, f.name)
        if is_dataclass(value):
            rows += _key_rows(value, f"{prefix}{f.name}.")
        else:
            default = "(unset)" if value is None else _toml_value(_plain(value))
            rows.append((f"{prefix}{f.name}", default, docs.get(f.name, "")))
    return rows


def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal after it in the class body), on one line."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not is_dataclass(klass):
            continue
        try:
            body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0]
        except (OSError, TypeError, SyntaxError):  # no source (a frozen app): no docs
            continue
        statements = body.body if isinstance(body, ast.ClassDef) else []
        for node, after in itertools.pairwise(statements):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _model_section(data: dict[str, Any], legacy: bool) -> Any:
    section = data.get("model", {})
    if not isinstance(section, dict):
        raise ConfigError(f"[model] must be a table, got {section!r}")
    name = section.get("name", "vae")
    if not isinstance(name, str):
        raise ConfigError(f"model.name must be a string, got {name!r}")
    cls = model_class(name).config_class
    if legacy:
        section = _from_flat(cls, section)
    return _section_from_dict(cls, section, "model")


def _from_flat(cls: type, flat: dict[str, Any]) -> dict[str, Any]:
    """A model section of the first checkpoint format (one flat table with every model's keys)
    as ``cls`` nests it; keys the model never read are dropped. Its noise "auto" meant the
    model's default, which is now the default of the model's own config."""
    nested: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if is_dataclass(hints[f.name]):
            nested[f.name] = _from_flat(hints[f.name], flat)
        elif f.name in flat and not (f.name == "noise" and flat[f.name] == "auto"):
            nested[f.name] = flat[f.name]
    return nested


def config_from_dict(data: dict[str, Any], legacy: bool = False) -> Config:
    """Build a :class:`Config` from nested dicts; unknown sections or keys are errors.

    ``[model]`` is read as the config of the model it names. ``legacy`` reads a config saved
    by the first checkpoint format (``checkpoint.FORMAT_1``), whose ``[model]`` was flat.
    """
    sections = [f.name for f in fields(Config)]
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise ConfigError(
            f"unknown config section [{unknown[0]}] (known: {', '.join(sections)})"
        )
    hints = typing.get_type_hints(Config)
    values = {name: _section_from_dict(hints[name], data.get(name, {}), name)
              for name in sections if name != "model"}
    return Config(model=_model_section(data, legacy), **values)


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def config_to_dict(config: Any) -> dict[str, Any]:
    """Nested plain dicts (tuples become lists), suitable for JSON and TOML."""
    return _plain(config)


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


def _toml_table(name: str, values: dict[str, Any]) -> list[str]:
    """``[name]`` with its plain values (``None`` left out: TOML has no null), then its
    sub-tables as ``[name.sub]``."""
    lines = [f"[{name}]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()
              if v is not None and not isinstance(v, dict)]
    lines.append("")
    for key, value in values.items():
        if isinstance(value, dict):
            lines += _toml_table(f"{name}.{key}", value)
    return lines


def dump_toml(config: Config) -> str:
    """TOML text for a config: one table per section, sub-configs as sub-tables."""
    lines: list[str] = []
    for section, values in config_to_dict(config).items():
        lines += _toml_table(section, values)
    return "\n".join(lines)


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(dump_toml(config))


# ---------------------------------------------------------------------------------------------
# overrides: "train.epochs=5", "model.net.hidden=400,400" or, where the key's last part is
# unique in the config (the chosen model's keys included), "epochs=5", "hidden=400,400"

ALIASES = {"dataset": "data.name", "model": "model.name"}


def _leaves(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []
    for key, value in tree.items():
        if isinstance(value, dict):
            paths += _leaves(value, (*prefix, key))
        else:
            paths.append((*prefix, key))
    return paths


def _resolve_key(key: str, tree: dict[str, Any]) -> tuple[str, ...]:
    """The path in ``tree`` (the config as nested dicts) that an override key names."""
    key = ALIASES.get(key.replace("-", "_"), key.replace("-", "_"))
    parts = tuple(key.split("."))
    leaves = _leaves(tree)
    if parts in leaves:
        return parts
    # "model.hidden" or "hidden": the one leaf under the given sections that ends that way
    # "hidden", "net.hidden", "model.hidden": a path that ends so, or starts and ends so.
    # A field named for a Python keyword ends with "_" (lambda_): it answers to its name without.
    spoken = {p: (*p[:-1], p[-1].removesuffix("_")) for p in leaves}
    matches = [p for p in leaves if parts in (p[-len(parts):], spoken[p][-len(parts):])
               or (len(parts) == 2 and p[0] == parts[0] and parts[-1] in (p[-1], spoken[p][-1]))]
    if len(matches) == 1:
        return matches[0]
    if matches:
        choices = " or ".join(".".join(m) for m in matches)
        raise ConfigError(f"config key {key!r} is ambiguous: say {choices}")
    name = tree["model"]["name"]
    if parts[0] in ("data", "train", "eval") and len(parts) > 1:
        cls = typing.get_type_hints(Config)[parts[0]]
        raise ConfigError(_unknown_key_message(key, cls, parts[0]))
    keys = ", ".join(config_keys(model_class(name).config_class))
    raise ConfigError(f"unknown config key {key!r}: it is no data, train or eval key, and model"
                      f" {name!r} has the keys {keys} (`aevb models {name}` describes them)")


def _switch_model(current: Any, name: str) -> dict[str, Any]:
    """The model section for model ``name``: its defaults, with every setting of ``current``
    that differs from ``current``'s own defaults carried over where the new model has it."""
    cls = model_class(name).config_class
    if type(current) is cls:
        return config_to_dict(current)
    new = config_to_dict(cls())
    changed = _leaves(config_to_dict(current))
    old, old_defaults = config_to_dict(current), config_to_dict(type(current)())
    for path in changed:
        if path == ("name",) or path not in _leaves(new):
            continue
        value, default = _get(old, path), _get(old_defaults, path)
        if value != default:
            _set(new, path, value)
    return new


def _get(tree: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


def _tables(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []
    for key, value in tree.items():
        if isinstance(value, dict):
            paths += [(*prefix, key), *_tables(value, (*prefix, key))]
    return paths


def _kind_path(key: str, tree: dict[str, Any]) -> tuple[str, ...] | None:
    """The sub-table that ``--net conv`` names (a model key whose value picks a kind)."""
    parts = tuple(key.replace("-", "_").split("."))
    matches = [p for p in _tables(tree) if len(p) > 1 and p[-len(parts):] == parts]
    return matches[0] if len(matches) == 1 else None


def apply_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """A copy of ``config`` with ``{key: value}`` applied, type-checked.

    A new ``model`` (``model.name``) is applied first: the model section becomes that model's
    defaults plus the settings of the old one that differ from its defaults and that the new
    model has. Then a kind for a sub-table (``net="conv"``, where the model takes either kind
    of net) replaces it with that kind's defaults; every other key is then looked up among the
    keys the model has now.
    """
    tree = config_to_dict(config)
    for key, value in overrides.items():
        if ALIASES.get(key, key) == "model.name":
            tree["model"] = _switch_model(config.model, str(value))
    kinds = {key: path for key in overrides if (path := _kind_path(key, tree))}
    for key, path in kinds.items():
        _set(tree, path, str(overrides[key]))
    if kinds:
        tree = config_to_dict(config_from_dict(tree))
    for key, value in overrides.items():
        if key in kinds:
            continue
        path = _resolve_key(key, tree)
        if path != ("model", "name"):
            _set(tree, path, value)
    return config_from_dict(tree)

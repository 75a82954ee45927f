"""A run's configuration: the data, model, train and eval sections, read from and written to TOML.

Every value is type-checked; unknown keys are errors. The defaults are the paper's MNIST net
(Kingma & Welling 2014, sec. 5: one hidden layer of 500 tanh units, minibatches of M=100, L=1)
trained with Adam; ``configs/paper-mnist.toml`` switches to the paper's Adagrad. Overrides
from the command line: :mod:`aevb.config.overrides`.

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

from aevb.config.schema import DataConfig, EvalConfig, TrainConfig
from aevb.errors import ConfigError
from aevb.models import MODELS, model_class

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "Config",
    "config_from_dict",
    "config_keys",
    "config_to_dict",
    "dump_toml",
    "field_docs",
    "load_config",
    "model_config",
    "model_keys",
    "save_config",
]


def model_config(name: str = "vae", **values: Any) -> Any:
    """The config of the registered model ``name``: its defaults, with ``values`` replaced."""
    return model_class(name).config_class(**values)


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

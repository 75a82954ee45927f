"""A run's configuration: the data, model, train and eval sections, read from and written to TOML.

Every value is type-checked; unknown keys are errors. ``[model]`` is the chosen model's own
config dataclass (its class's ``config_class``), shared parts such as ``[model.net]`` as
sub-tables; reading it asks the model registry, so this module sits above ``models``.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import itertools
import json
import math
import sys
import textwrap
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import cattrs
import tomli_w
from cattrs.errors import ForbiddenExtraKeysError, IterableValidationNote
from cattrs.gen import make_dict_structure_fn

from aevb.config.schema import DataConfig, EvalConfig, TrainConfig
from aevb.errors import ConfigError
from aevb.inference.training import nest_objective_keys
from aevb.models import MODELS, model_class

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Config", "config_from_dict", "config_keys", "config_to_dict", "dump_toml", "field_docs",
           "load_config", "model_config", "model_keys", "save_config"]


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


# dict -> dataclass with type checks: cattrs hooks that convert only where that is lossless (the
# command line's values are strings: "2", "2_000", "1e3", "true", "400,400")
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _integer(value: Any, _: Any) -> int:
    """``value`` as an int where that is lossless (2, 2.0, "2", "2_000", "1e3")."""
    number = value
    if isinstance(value, str):
        try:
            number = int(value.replace("_", ""))
        except ValueError:
            with contextlib.suppress(ValueError):
                number = float(value)
    if isinstance(number, float) and number.is_integer():
        number = int(number)
    if not isinstance(number, int) or isinstance(number, bool):
        raise ValueError(f"must be an integer, got {value!r}")
    if abs(number) >= 2**63:  # torch sizes and seeds are 64-bit
        raise ValueError(f"is too large, got {value!r}")
    return number


def _number(value: Any, _: Any) -> float:
    try:
        plain = isinstance(value, (int, float, str)) and not isinstance(value, bool)
        number = float(value) if plain else None
    except ValueError:
        number = None
    except OverflowError:  # an int beyond float's range
        number = math.inf
    if number is None:
        raise ValueError(f"must be a number, got {value!r}")
    if not math.isfinite(number):  # nan passes every range check; inf is no setting
        raise ValueError(f"must be a finite number, got {value!r}")
    return number


def _flag(value: Any, _: Any) -> bool:
    flag = _BOOLS.get(value.lower()) if isinstance(value, str) else value
    if not isinstance(flag, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return flag


def _string(value: Any, _: Any) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(f"must be a string, got {value!r}")


def _tuple(value: Any, annotation: Any) -> tuple[Any, ...]:
    if isinstance(value, str):
        if not value.strip():  # --hidden "" is a slip; no layers at all is said as []
            raise ValueError("must be a comma-separated list such as 400,400; got an empty"
                             " string (write [] for an empty list)")
        value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]  # hidden=64 from Python means one layer of 64
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"must be a list, got {value!r}")
    items: Any = list[typing.get_args(annotation)[0]]  # type: ignore[misc]
    return tuple(_CONVERTER.structure(value, items))


def _union(value: Any, annotation: Any) -> Any:
    """The option of a union of sub-configs (``MLPConfig | ConvNetConfig``) that a kind's name
    (``--net conv``) or a table's ``kind`` picks; a table without a kind: the first it fits."""
    options = typing.get_args(annotation)
    kinds = {o.kind: o for o in options if isinstance(getattr(o, "kind", None), str)}
    kind = value.get("kind") if isinstance(value, dict) else value
    if isinstance(kind, str) and kind in kinds:  # the table's own keys, without the kind
        table = {k: v for k, v in value.items() if k != "kind"} if isinstance(value, dict) else value
        return _CONVERTER.structure(table, kinds[kind])
    if (isinstance(value, dict) and "kind" in value) or (isinstance(value, str)
                                                        and str not in options):
        takers = ", ".join(_models_taking(kind)) if isinstance(kind, str) else ""
        raise ValueError(f"kind must be one of {', '.join(kinds)}; got {kind!r}"
                         + (f" (models that take {kind!r}: {takers})" if takers else ""))
    errors = []
    for option in options:
        try:
            return _CONVERTER.structure(value, option)
        except (cattrs.BaseValidationError, ValueError) as error:
            errors.append(error)
    raise errors[0]


def _dataclass_hook(cls: Any, converter: cattrs.Converter) -> Any:
    base = make_dict_structure_fn(cls, converter, _cattrs_forbid_extra_keys=True)
    sub = {f.name: f.default for f in fields(cls) if is_dataclass(f.default)}

    def structure(data: Any, _: Any) -> Any:
        kind = getattr(cls, "kind", None)
        if isinstance(data, str) and kind is not None:  # --net conv: that kind's defaults
            if data == kind:
                return cls()
            takers = ", ".join(_models_taking(data))
            raise ValueError(f"of this model is always {kind!r}, not {data!r}"
                             + (f" (models that take {data!r}: {takers})" if takers else ""))
        if not isinstance(data, dict):
            raise ValueError(f"must be a table, got {data!r}")
        data = {key: {**config_to_dict(sub[key]), **value}  # a partial sub-table fills in from
                if key in sub and isinstance(value, dict)  # this config's own default for it
                and set(value) <= {f.name for f in fields(sub[key])} else value
                for key, value in data.items()}
        return base(data, cls)

    return structure


def _models_taking(kind: str) -> list[str]:
    """The registered models with a sub-config of kind ``kind`` (``conv``: conv-vae, ...)."""
    def admits(hint: Any) -> bool:
        return any(getattr(o, "kind", None) == kind for o in typing.get_args(hint) or [hint])

    return [name for name, model in MODELS.items()
            if any(map(admits, typing.get_type_hints(model.config_class).values()))]


_CONVERTER = cattrs.Converter(forbid_extra_keys=True)
for _type, _hook in ((int, _integer), (float, _number), (bool, _flag), (str, _string)):
    _CONVERTER.register_structure_hook(_type, _hook)
_CONVERTER.register_structure_hook_func(lambda t: typing.get_origin(t) is tuple, _tuple)
_CONVERTER.register_structure_hook_func(lambda t: typing.get_origin(t) in (
    typing.Union, types.UnionType) and any(map(is_dataclass, typing.get_args(t))), _union)
_CONVERTER.register_structure_hook_factory(is_dataclass, _dataclass_hook)


def _section_from_dict(cls: type, data: Any, prefix: str) -> Any:
    """``cls`` from a table, every value checked; a bad one is one ConfigError naming its key
    (``model.net.hidden[0] must be an integer, got 'x'``)."""
    try:
        return _CONVERTER.structure(data, cls)
    except (cattrs.BaseValidationError, ValueError) as error:
        raise _config_error(error, prefix) from None


def _config_error(error: BaseException, key: str) -> ConfigError:
    """The first failure in a cattrs error tree, its key spelt out from the tree's notes."""
    while isinstance(error, (cattrs.ClassValidationError, cattrs.IterableValidationError)):
        noted, plain = error.group_exceptions()
        if plain:  # the table's own: unknown keys
            error = plain[0]
            break
        error, note = noted[0]
        key += f"[{note.index}]" if isinstance(note, IterableValidationNote) else f".{note.name}"
    if isinstance(error, ForbiddenExtraKeysError):
        return ConfigError(_unknown_key_message(f"{key}.{sorted(error.extra_fields)[0]}",
                                                error.cl, key))
    return error if isinstance(error, ConfigError) else ConfigError(f"{key} {error}")


def _unknown_key_message(key: str, cls: type, prefix: str) -> str:
    name, keys = getattr(cls, "name", None), ", ".join(config_keys(cls))
    if prefix != "model" or name not in MODELS:
        return f"unknown config key {key!r} (known: {keys})"
    other = "" if key.startswith("model.") else "it is no data, train or eval key, and "
    return (f"unknown config key {key!r}: {other}model {name!r} has the keys {keys}"
            f" (`aevb models {name}` describes them)")


def config_keys(cls: type) -> list[str]:
    """The keys of a config dataclass, sub-configs' as ``sub.key``, in declaration order; a
    sub-config of several kinds (``net``: an MLP or your own) by its default kind's keys."""
    keys = []
    for f in fields(cls):
        annotation = typing.get_type_hints(cls)[f.name]
        if not (isinstance(annotation, type) and is_dataclass(annotation)):
            annotation = _default_kind(f, annotation)
        sub = config_keys(annotation) if annotation is not None else []
        keys += [f"{f.name}.{k}" for k in sub] if sub else [f.name]
    return keys


def model_keys(name: str) -> list[tuple[str, str, str]]:
    """(key, default as TOML, one-line doc) for every key of model ``name``'s config."""
    return _key_rows(model_class(name).config_class())


def _key_rows(config: Any, prefix: str = "") -> list[tuple[str, str, str]]:
    rows = []
    docs = field_docs(type(config))
    for f in fields(config):
        value = getattr(config, f.name)
        if is_dataclass(value):
            rows += _key_rows(value, f"{prefix}{f.name}.")
        else:
            default = "(unset)" if value is None else json.dumps(value)  # TOML too
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


def _model_section(data: dict[str, Any], legacy: bool, saved: bool) -> Any:
    section = data.get("model", {})
    if not isinstance(section, dict):
        raise ConfigError(f"[model] must be a table, got {section!r}")
    name = section.get("name", "vae")
    if not isinstance(name, str):
        raise ConfigError(f"model.name must be a string, got {name!r}")
    cls = model_class(name).config_class
    if legacy:
        section = _from_flat(cls, section)
    if saved and callable(from_saved := getattr(cls, "from_saved", None)):
        section = from_saved(section)  # a default that changed since the run was written
    return _section_from_dict(cls, nest_objective_keys(cls, section), "model")


def _from_flat(cls: type, flat: dict[str, Any]) -> dict[str, Any]:
    """A model section of the first checkpoint format (one flat table with every model's keys)
    as ``cls`` nests it; keys the model never read are dropped. Its noise "auto" meant the
    model's default, which is now the default of the model's own config."""
    nested: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        sub = hints[f.name] if is_dataclass(hints[f.name]) else _default_kind(f, hints[f.name])
        if sub is not None:  # a sub-table (of several kinds: the default's, then the only one)
            nested[f.name] = _from_flat(sub, flat)
        elif f.name in flat and not (f.name == "noise" and flat[f.name] == "auto"):
            nested[f.name] = flat[f.name]
    return nested


def _default_kind(f: Any, annotation: Any) -> type | None:
    """The default's type where a field is one of several sub-configs (``net``), else None."""
    kinds = [t for t in typing.get_args(annotation) if is_dataclass(t)]
    return type(f.default) if kinds and type(f.default) in kinds else None


def config_from_dict(data: dict[str, Any], legacy: bool = False, saved: bool = False) -> Config:
    """Build a :class:`Config` from nested dicts; unknown sections or keys are errors.

    ``[model]`` is read as the config of the model it names. ``legacy`` reads a config saved
    by the first checkpoint format (``checkpoint.FORMAT_1``), whose ``[model]`` was flat.
    ``saved``: a run's own config (a checkpoint's), which a model config's ``from_saved``
    classmethod, where it has one, reads as it was meant when the run was written.
    """
    sections = [f.name for f in fields(Config)]
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise ConfigError(f"unknown config section [{unknown[0]}] (known: {', '.join(sections)})")
    hints = typing.get_type_hints(Config)
    values = {name: _section_from_dict(hints[name], data.get(name, {}), name)
              for name in sections if name != "model"}
    return Config(model=_model_section(data, legacy, saved), **values)


def config_to_dict(config: Any) -> dict[str, Any]:
    """Nested plain dicts (tuples become lists), suitable for JSON and TOML."""
    return json.loads(json.dumps(asdict(config)))  # finite floats round-trip exactly


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


def _no_nulls(tree: dict[str, Any]) -> dict[str, Any]:
    return {k: _no_nulls(v) if isinstance(v, dict) else v for k, v in tree.items() if v is not None}


def dump_toml(config: Config) -> str:
    """TOML text for a config: one table per section, sub-configs as sub-tables, ``None``
    values left out (TOML has no null; each such key's default is None)."""
    return tomli_w.dumps(_no_nulls(config_to_dict(config)))


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(dump_toml(config))

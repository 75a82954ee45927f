"""Checkpoints that describe themselves: safetensors tensors + JSON metadata; nothing unpickled.

One file holds the model weights (``model.*``), the optimizer's tensors (``optim.*``) and the
RNG states (``rng.*``); its safetensors header carries the JSON metadata (config, data spec,
the :class:`aevb.engine.state.RunState` fields, the optimizer's non-tensor state), and
``NAME.json`` beside it a readable copy, less the optimizer and the history.

Reading checks everything against what aevb writes (the metadata against RunState and
:data:`SCHEMA`, each tensor's shape and dtype against the model's or its parameter's, the RNG
states' sizes): anything else is one CheckpointError, never a traceback or an optimizer running
over a short buffer. ``FORMAT_1`` checkpoints (one flat ``[model]`` table with every model's
keys, a ``best_loss``) still load, evaluate and draw.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from aevb.config.run import Config, config_from_dict, config_to_dict
from aevb.engine.state import RunState, fits, misfit
from aevb.errors import AevbError, CheckpointError, PluginError
from aevb.models import MODELS, DataSpec, Model, build_model

__all__ = ["FORMAT", "FORMAT_1", "SCHEMA", "checkpoint_path", "corrupt", "encode_checkpoint",
           "header_config", "header_spec", "load_model", "load_weights", "model_from_checkpoint",
           "read_checkpoint", "restore_optimizer", "run_config"]

FORMAT = "aevb-checkpoint-2"
FORMAT_1 = "aevb-checkpoint-1"


def checkpoint_path(run_dir: str | Path, which: str = "best") -> Path:
    return Path(run_dir) / "checkpoints" / f"{which}.safetensors"


def corrupt(path: str | Path, what: str) -> CheckpointError:
    """The one error of a checkpoint whose contents do not fit what aevb writes."""
    return CheckpointError(f"checkpoint {path} is corrupt or not an aevb checkpoint: {what}")


class DataSpecHeader(TypedDict):  # and sizes, checked by _sized: older checkpoints lack some
    event_shape: list[int]
    kind: str


class ConfigHeader(TypedDict):
    data: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any]


class OptimizerHeader(TypedDict):
    param_groups: list[dict[str, Any]]
    state: dict[str, dict[str, Any]]


def _sized(spec: dict[str, Any]) -> bool:
    """Its event has dimensions, of positive sizes, and each other size is None or positive."""
    sizes = [spec.get(k) for k in ("num_classes", "condition_dim", "train_size")]
    return (bool(spec["event_shape"]) and 0 not in spec["event_shape"]
            and all(n is None or (fits(n, int) and n > 0) for n in sizes))


def _numbered(optimizer: dict[str, Any] | None) -> bool:
    """The optimizer's groups and states name parameters by number."""
    return optimizer is None or (all(k.isdigit() for k in optimizer["state"]) and all(
        fits(g.get("params"), list[int]) for g in optimizer["param_groups"]))


SCHEMA: dict[str, tuple[Any, Callable[[Any], bool], str]] = {
    "config": (ConfigHeader, lambda _: True, "a table of data, model, train tables"),
    "data_spec": (DataSpecHeader, _sized, "an event_shape of positive sizes and a kind"),
    "best_loss": (float, lambda _: True, "a number"),
    "optimizer": (OptimizerHeader | None, _numbered, "param_groups and state")}
"""The metadata beside RunState's fields: type, a check its type cannot say, what it should be."""

REQUIRED = {
    FORMAT: ("config", "data_spec", "epoch", "step", "seconds", "schedule_steps", "best_value",
             "best_epoch", "history", "metrics", "selection", "precision", "optimizer"),
    FORMAT_1: ("config", "data_spec", "epoch", "step", "seconds", "best_loss", "best_epoch",
               "history", "metrics", "optimizer")}
"""The fields every checkpoint of a format has; later ones are checked when present."""


def _check_header(path: Path, header: dict[str, Any]) -> None:
    for field in REQUIRED[header["format"]]:
        if field not in header:
            raise corrupt(path, f"its metadata has no {field}")
    for field, (tp, check, meaning) in SCHEMA.items():
        if field in header and not (fits(header[field], tp) and check(header[field])):
            raise corrupt(path, f"its {field} is not {meaning}: {str(header[field])[:80]}")
    if (wrong := misfit(header)) is not None:
        raise corrupt(path, wrong)
    model = header["config"].get("model") if isinstance(header["config"], dict) else None
    name = model.get("name", "vae") if isinstance(model, dict) else None
    if isinstance(name, str) and name not in MODELS:  # whole, but its model is not here
        raise PluginError(f"the run of {path} was trained with the model {name!r}, which is"
                          " not registered here: install the package that provides it (an"
                          " aevb.models entry point) or register_model it")
    try:
        header_config(header)
    except (AevbError, TypeError, ValueError, AttributeError) as error:
        raise corrupt(path, f"its config does not read: {error}") from None


def _check_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """What can be checked of the tensors without the model: names and the RNG states."""
    for name, tensor in tensors.items():
        if not name.startswith(("model.", "optim.", "rng.")):
            raise corrupt(path, f"it holds a tensor {name}, which aevb never writes")
        parts = name.split(".", 2)
        if parts[0] == "optim" and (len(parts) < 3 or not parts[1].isdigit() or not parts[2]):
            raise corrupt(path, f"its optimizer tensor {name} names no parameter")
        if name.startswith("rng.") and (tensor.dtype != torch.uint8 or tensor.dim() != 1):
            raise corrupt(path, f"its RNG state {name} is {_describe(tensor)}, not bytes")
    torch_state = tensors.get("rng.torch")
    expected = torch.get_rng_state().shape
    if torch_state is not None and torch_state.shape != expected:
        raise corrupt(path, f"its RNG state rng.torch has {torch_state.numel()} bytes,"
                            f" not {expected.numel()}")


def _describe(tensor: torch.Tensor) -> str:
    return f"{tuple(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"


def _split_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    per_param = state["state"].items()
    tensors = {f"optim.{i}.{name}": value for i, values in per_param
               for name, value in values.items() if isinstance(value, torch.Tensor)}
    plain = {str(i): {name: value for name, value in values.items()
                      if not isinstance(value, torch.Tensor)} for i, values in per_param}
    return tensors, {"param_groups": state["param_groups"], "state": plain}


def encode_checkpoint(model: Model, optimizer: torch.optim.Optimizer | None, config: Config,
                      state: RunState, rng: dict[str, torch.Tensor] | None = None
                      ) -> tuple[bytes, str]:
    """The bytes of a checkpoint file and the text of its readable ``.json`` copy."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    optim_plain = None
    if optimizer is not None:
        optim_tensors, optim_plain = _split_optimizer_state(optimizer.state_dict())
        tensors.update(optim_tensors)
    tensors.update({f"rng.{k}": v for k, v in (rng or {}).items()})
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    header = {"format": FORMAT, "config": config_to_dict(config),
              "data_spec": {**model.data._asdict(), "event_shape": list(model.data.event_shape)},
              **state.header()}
    metadata = {"aevb": json.dumps(header), "optimizer": json.dumps(optim_plain)}
    readable = {k: v for k, v in header.items() if k != "history"}
    return safetensors_bytes(tensors, metadata=metadata), json.dumps(readable, indent=2) + "\n"


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of a checkpoint file, checked; a CheckpointError names what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
        header = json.loads(metadata["aevb"])
        if not isinstance(header, dict):
            raise ValueError("its metadata is not a table")
        header["optimizer"] = json.loads(metadata.get("optimizer", "null"))
    except (SafetensorError, OSError, KeyError, ValueError) as error:
        raise corrupt(path, str(error)) from None
    if header.get("format") not in (FORMAT, FORMAT_1):
        raise CheckpointError(f"checkpoint {path} has format {header.get('format')!r}, not {FORMAT}")
    _check_header(path, header)
    _check_tensors(path, tensors)
    return tensors, header


def header_config(header: dict[str, Any]) -> Config:
    """The run's config as a checkpoint's metadata holds it, in either format."""
    return config_from_dict(header["config"], legacy=header.get("format") == FORMAT_1, saved=True)


def header_spec(header: dict[str, Any]) -> DataSpec:
    """The data spec a checkpoint's model was built for (older ones lack ``train_size``: None)."""
    spec = header["data_spec"]
    return DataSpec(tuple(spec["event_shape"]), spec["kind"], spec.get("num_classes"),
                    spec.get("condition_dim"), spec.get("train_size"))


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_weights(model: Model, tensors: dict[str, torch.Tensor], path: str | Path,
                 legacy: bool = False) -> None:
    """Load the ``model.*`` tensors, each checked against the model's own; ``legacy``
    (FORMAT_1) lets now-derived state (the stacked autoencoder's phase) go unused."""
    weights = _prefixed(tensors, "model.")
    own = model.state_dict()
    for name, tensor in own.items():
        if name not in weights:
            raise corrupt(path, f"it has no tensor model.{name}")
        if weights[name].shape != tensor.shape or weights[name].dtype != tensor.dtype:
            raise corrupt(path, f"its tensor model.{name} is {_describe(weights[name])};"
                                f" the model's is {_describe(tensor)}")
    extra = sorted(weights.keys() - own.keys())
    if extra and not legacy:
        raise corrupt(path, f"its tensor model.{extra[0]} is not one of the model's")
    model.load_state_dict({k: weights[k] for k in own})


def model_from_checkpoint(tensors: dict[str, torch.Tensor], header: dict[str, Any],
                          device: str | torch.device = "cpu", path: str | Path = ""
                          ) -> tuple[Config, Model]:
    """The config and the model of a checkpoint :func:`read_checkpoint` read from ``path``."""
    config = header_config(header)
    try:
        model = build_model(config.model, header_spec(header))
    except PluginError as error:  # the run is whole; code it names is missing here
        raise PluginError(f"the run of {path} cannot be rebuilt here: {error}") from None
    except (AevbError, ValueError, RuntimeError) as error:
        raise corrupt(path, f"its config and data spec build no model: {error}") from None
    load_weights(model, tensors, path, legacy=header.get("format") == FORMAT_1)
    return config, model.to(device)


def run_config(run_dir: str | Path, which: str = "last") -> Config:
    _, header = read_checkpoint(checkpoint_path(run_dir, which))
    return header_config(header)


def load_model(run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu"
               ) -> tuple[Config, Model, dict[str, Any]]:
    """The config, the model (in eval mode) and the metadata of a run's checkpoint."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"no run directory at {run_dir}")
    path = checkpoint_path(run_dir, which)
    tensors, header = read_checkpoint(path)
    config, model = model_from_checkpoint(tensors, header, device, path)
    return config, model.eval(), header


OPTIMIZER_STATE = {torch.optim.Adam: ({"step", "exp_avg", "exp_avg_sq"}, {"max_exp_avg_sq"}),
                   torch.optim.Adagrad: ({"step", "sum"}, set()),
                   torch.optim.SGD: (set(), {"momentum_buffer"})}
"""The per-parameter state each optimizer keeps: (always, sometimes); ``step`` is a scalar."""


def _check_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[int, dict[str, Any]],
                           groups: list[dict], path: str | Path) -> None:
    own = optimizer.param_groups
    if len(groups) != len(own) or any(len(g["params"]) != len(o["params"])
                                      for g, o in zip(groups, own, strict=False)):
        raise corrupt(path, f"its optimizer has {[len(g['params']) for g in groups]} parameters"
                            f" in its groups; this model's has {[len(o['params']) for o in own]}")
    ids = [i for g in groups for i in g["params"]]
    params = dict(zip(ids, (p for o in own for p in o["params"]), strict=True))
    if len(params) != len(ids):
        raise corrupt(path, "its optimizer names a parameter twice")
    always, sometimes = OPTIMIZER_STATE.get(type(optimizer), (set(), None))
    for param_id, values in state.items():
        if param_id not in params:
            raise corrupt(path, f"its optimizer state {param_id} belongs to no parameter")
        param, names = params[param_id], set(values)
        if not always <= names or (sometimes is not None and not names <= always | sometimes):
            raise corrupt(path, f"its optimizer state {param_id} holds {sorted(names)},"
                                f" not the {type(optimizer).__name__} state {sorted(always)}")
        for name, value in values.items():
            if name == "step":
                scalar = value.dim() == 0 if isinstance(value, torch.Tensor) else fits(value, float)
                if not scalar:
                    raise corrupt(path, f"its optimizer state {param_id}.step is not a scalar")
            elif isinstance(value, torch.Tensor) and (value.shape != param.shape
                                                      or value.dtype != param.dtype):
                raise corrupt(path, f"its tensor optim.{param_id}.{name} is {_describe(value)};"
                                    f" its parameter is {_describe(param)}")


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                      plain: dict[str, Any] | None, path: str | Path) -> None:
    """Load the optimizer's saved state, each tensor checked against its parameter; its
    hyperparameters stay the config's: a resumed run honours the lr the user gives now."""
    if plain is None:
        raise corrupt(path, "it holds no optimizer state")
    state: dict[int, dict[str, Any]] = {int(k): dict(v) for k, v in plain["state"].items()}
    for key, value in _prefixed(tensors, "optim.").items():
        param_id, name = key.split(".", 1)
        state.setdefault(int(param_id), {})[name] = value
    _check_optimizer_state(optimizer, state, plain["param_groups"], path)
    hyper = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    groups = [{**saved, **own, "params": saved["params"]}
              for saved, own in zip(plain["param_groups"], hyper, strict=True)]
    optimizer.load_state_dict({"state": state, "param_groups": groups})

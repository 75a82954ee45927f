"""Checkpoints that describe themselves: safetensors tensors + JSON metadata, written atomically.

One file holds the model weights (``model.*``), the optimizer's tensors (``optim.*``) and the
RNG states (``rng.*``); its safetensors header carries the JSON metadata (config, data spec,
epoch, step, the run's planned steps, history, the optimizer's non-tensor state). A readable
copy of the metadata (less the optimizer) is written beside it as ``NAME.json``. Nothing is
ever unpickled.

``FORMAT_1`` checkpoints (before each model owned its config: one flat ``[model]`` table with
every model's keys, a ``best_loss``) still load, evaluate and draw.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from .config import Config, config_from_dict, config_to_dict
from .errors import CheckpointError
from .files import atomic_file, atomic_write_text
from .models import DataSpec, Model, build_model

__all__ = [
    "FORMAT",
    "FORMAT_1",
    "checkpoint_path",
    "encode_checkpoint",
    "header_config",
    "load_model",
    "load_weights",
    "model_from_checkpoint",
    "read_checkpoint",
    "restore_optimizer",
    "run_config",
    "save_checkpoint",
]

FORMAT = "aevb-checkpoint-2"
FORMAT_1 = "aevb-checkpoint-1"


def checkpoint_path(run_dir: str | Path, which: str = "best") -> Path:
    return Path(run_dir) / "checkpoints" / f"{which}.safetensors"


def _split_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, plain = {}, {"param_groups": state["param_groups"], "state": {}}
    for param_id, values in state["state"].items():
        plain["state"][str(param_id)] = {}
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{param_id}.{name}"] = value
            else:
                plain["state"][str(param_id)][name] = value
    return tensors, plain


def encode_checkpoint(
    model: Model,
    optimizer: torch.optim.Optimizer | None,
    config: Config,
    meta: dict[str, Any],
    rng: dict[str, torch.Tensor] | None = None,
) -> tuple[bytes, str]:
    """The bytes of a checkpoint file and the text of its readable ``.json`` copy."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    optim_plain = None
    if optimizer is not None:
        optim_tensors, optim_plain = _split_optimizer_state(optimizer.state_dict())
        tensors.update(optim_tensors)
    tensors.update({f"rng.{k}": v for k, v in (rng or {}).items()})
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    header = {
        "format": FORMAT,
        "config": config_to_dict(config),
        "data_spec": {
            "event_shape": list(model.data.event_shape),
            "kind": model.data.kind,
            "num_classes": model.data.num_classes,
            "condition_dim": model.data.condition_dim,
        },
        **meta,
    }
    metadata = {"aevb": json.dumps(header), "optimizer": json.dumps(optim_plain)}
    readable = {k: v for k, v in header.items() if k != "history"}
    return safetensors_bytes(tensors, metadata=metadata), json.dumps(readable, indent=2) + "\n"


def save_checkpoint(
    path: str | Path,
    model: Model,
    optimizer: torch.optim.Optimizer | None,
    config: Config,
    meta: dict[str, Any],
    rng: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write model, optimizer, RNG states and ``meta`` (JSON-able) to ``path`` atomically,
    and the metadata (less history and optimizer) to ``path`` with suffix ``.json``."""
    path = Path(path)
    data, readable = encode_checkpoint(model, optimizer, config, meta, rng)
    with atomic_file(path) as handle:
        handle.write(data)
    atomic_write_text(path.with_suffix(".json"), readable)


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of a checkpoint file; a CheckpointError names what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
        header = json.loads(metadata["aevb"])
        header["optimizer"] = json.loads(metadata.get("optimizer", "null"))
    except (SafetensorError, OSError, KeyError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} is corrupt or not an aevb checkpoint: {error}") from None
    if header.get("format") not in (FORMAT, FORMAT_1):
        raise CheckpointError(f"checkpoint {path} has format {header.get('format')!r}, not {FORMAT}")
    return tensors, header


def header_config(header: dict[str, Any]) -> Config:
    """The run's config as a checkpoint's metadata holds it, in either format."""
    return config_from_dict(header["config"], legacy=header.get("format") == FORMAT_1)


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_weights(model: Model, tensors: dict[str, torch.Tensor], legacy: bool = False) -> None:
    """Load the ``model.*`` tensors; ``legacy`` (FORMAT_1) lets state that is now derived
    (the stacked autoencoder's phase buffer) go unused, never a missing weight."""
    weights = _prefixed(tensors, "model.")
    if legacy:
        known = model.state_dict().keys()
        weights = {k: v for k, v in weights.items() if k in known}
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint weights do not fit the model: {error}") from None


def model_from_checkpoint(
    tensors: dict[str, torch.Tensor], header: dict[str, Any], device: str | torch.device = "cpu"
) -> tuple[Config, Model]:
    config = header_config(header)
    spec = header["data_spec"]
    data = DataSpec(tuple(spec["event_shape"]), spec["kind"], spec.get("num_classes"),
                    spec.get("condition_dim"))
    model = build_model(config.model, data)
    load_weights(model, tensors, legacy=header.get("format") == FORMAT_1)
    return config, model.to(device)


def run_config(run_dir: str | Path, which: str = "last") -> Config:
    """The config a run was trained with, from its checkpoint (any format)."""
    _, header = read_checkpoint(checkpoint_path(run_dir, which))
    return header_config(header)


def load_model(
    run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu"
) -> tuple[Config, Model, dict[str, Any]]:
    """The config, the model (in eval mode) and the metadata of a run's checkpoint."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"no run directory at {run_dir}")
    tensors, header = read_checkpoint(checkpoint_path(run_dir, which))
    config, model = model_from_checkpoint(tensors, header, device)
    return config, model.eval(), header


def restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], plain: dict[str, Any]
) -> None:
    state: dict[Any, dict[str, Any]] = {}
    for param_id, values in plain["state"].items():
        state[int(param_id)] = dict(values)
    for key, value in _prefixed(tensors, "optim.").items():
        param_id, name = key.split(".", 1)
        state.setdefault(int(param_id), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": plain["param_groups"]})

"""Resuming a run: its checkpoint read back into the model, the optimizer and the RNGs, and
the checks that the run being continued is the one that was started."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .checkpoint import FORMAT_1, checkpoint_path, load_weights, read_checkpoint, restore_optimizer
from .config import Config, config_to_dict
from .errors import CheckpointError, ConfigError
from .models import Model

__all__ = ["restore_run"]


def _same_run(config: Config, saved: dict[str, Any]) -> None:
    """A resumed run must keep its data and model; only the budget may change."""
    current = config_to_dict(config)
    for section in ("data", "model"):
        if current[section] != saved[section]:
            key = next(k for k in {**saved[section], **current[section]}
                       if current[section].get(k) != saved[section].get(k))
            raise ConfigError(
                f"cannot resume with {section}.{key} = {current[section].get(key)!r}:"
                f" the run was started with {saved[section].get(key)!r}"
            )


def restore_run(
    run_dir: Path,
    config: Config,
    model: Model,
    optimizer: torch.optim.Optimizer | None,
    generator: torch.Generator,
    state: dict[str, Any],
) -> dict[str, Any]:
    """Load ``run_dir``'s last checkpoint into ``model``, ``optimizer``, the global RNG and
    ``generator``; return its values of the loop's ``state`` keys."""
    tensors, header = read_checkpoint(checkpoint_path(run_dir, "last"))
    if header.get("format") == FORMAT_1:
        raise CheckpointError(f"{run_dir} was written by an older aevb (checkpoint format 1):"
                              " it can be evaluated and drawn, not resumed")
    _same_run(config, header["config"])
    load_weights(model, tensors)
    if optimizer is not None:
        restore_optimizer(optimizer, tensors, header["optimizer"])
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.data"])
    if "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], generator.device)
    return {k: header[k] for k in state}

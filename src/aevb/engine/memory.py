"""Refuse, before anything is allocated, a model whose parameters cannot fit in memory.

The model is built on PyTorch's meta device (shapes only), so ``--latent_dim 100000000`` costs
nothing to measure; training needs each trainable parameter 2 + s times over (weights, gradients,
the optimizer's s state tensors), plus the buffers: a floor, as activations come on top.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from aevb.config.run import Config
from aevb.errors import ConfigError
from aevb.models import DataSpec, build_model

__all__ = ["available_bytes", "check_model_fits", "model_bytes"]

OPTIMIZER_STATES = {"adam": 2, "adagrad": 1, "sgd": 0}
"""Tensors of optimizer state per trainable parameter tensor."""


def model_bytes(model_config: Any, spec: DataSpec, optimizer: str = "adam") -> int:
    """Bytes that training ``model_config`` on data ``spec`` needs for its parameters, their
    gradients and optimizer state, and its buffers."""
    try:
        with torch.device("meta"):
            model = build_model(model_config, spec)
    except (RuntimeError, TypeError, ValueError, OverflowError) as error:
        reason = str(error).splitlines()[0]
        raise ConfigError(f"model {model_config.name!r} cannot be built with these sizes:"
                          f" {reason}") from None
    copies = 2 + OPTIMIZER_STATES.get(optimizer, 2)
    total = sum(p.numel() * p.element_size() * (copies if p.requires_grad else 1)
                for p in model.parameters())
    return total + sum(b.numel() * b.element_size() for b in model.buffers())


def available_bytes(device: str | torch.device = "cpu") -> int | None:
    """Free memory of ``device`` in bytes: the GPU's free memory, else the system's available
    memory (MemAvailable of /proc/meminfo, else free pages); None where unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_model_fits(config: Config, spec: DataSpec, device: str | torch.device = "cpu") -> None:
    """Raise a ConfigError, with both sizes in GiB, if training ``config`` on data ``spec``
    needs more memory than ``device`` has free."""
    need = model_bytes(config.model, spec, config.train.optimizer)
    free = available_bytes(device)
    if free is not None and need > free:
        raise ConfigError(f"the model needs about {_gib(need)} GiB for its parameters, gradients"
                          f" and optimizer state; {_gib(free)} GiB are available on"
                          f" {torch.device(device)} (lower latent_dim or the hidden sizes)")


def _gib(size: int) -> str:
    gib = size / 2**30
    return f"{gib:,.0f}" if gib >= 100 else f"{gib:.3g}"

"""Deterministic backbones: multilayer perceptrons and their activations."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .errors import ConfigError

__all__ = ["ACTIVATIONS", "activation", "mlp"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        known = ", ".join(ACTIVATIONS)
        raise ConfigError(f"unknown activation {name!r} (known: {known})") from None


def mlp(sizes: Sequence[int], activation_name: str) -> nn.Sequential:
    """Linear layers ``sizes[0] → sizes[1] → … → sizes[-1]``, each followed by the activation.

    Works on any leading batch shape (..., sizes[0]); with one size it is the identity.
    """
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), activation(activation_name)]
    return nn.Sequential(*layers)

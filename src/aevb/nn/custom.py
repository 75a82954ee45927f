"""A user's own networks: an ``nn.Module`` class named by its import path and its constructor
arguments (``[model.net] kind = "custom"``), rebuilt by importing the class, never by pickle.

The contract (``docs/extending.md``): an encoder maps a batch of x (B, *event_shape) to
features (B, F); a decoder maps codes (N, D) to features (N, F'), or with
``decoder_emits_parameters`` straight to the likelihood's parameters per value (N, k * C, H, W),
as aevb's own convolutional decoder does. aevb builds the heads on those features and checks
the shapes once on a dummy batch (``flat_features``, ``check_output_shape``).
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from aevb.errors import ConfigError, PluginError
from aevb.nn.nets import ACTIVATIONS

__all__ = ["CustomNetConfig", "ModuleSpec", "check_output_shape", "flat_features", "import_object",
           "spec_of"]


@dataclass(frozen=True)
class ModuleSpec:
    """One module: ``module`` is the import path of its class (``package.module:Class``) and
    ``args`` its constructor's keyword arguments (JSON values only)."""

    module: str = ""
    """The class as ``package.module:Class``; the package must be importable wherever the run
    is loaded (installed, or on PYTHONPATH)."""
    args: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the class's constructor: numbers, strings, booleans, lists and
    tables of them."""

    def check(self, key: str) -> None:
        """A ConfigError naming ``key`` for a malformed path or an argument JSON cannot hold;
        an empty path passes (a config names the class after choosing ``--net custom``)."""
        if self.module and (self.module.count(":") != 1 or not all(self.module.split(":"))):
            raise ConfigError(f"{key}.module must name a class as package.module:Class,"
                              f" got {self.module!r}")
        for name, value in self.args.items():
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"{key}.args.{name} is a {type(value).__name__}: a run records its"
                    " networks' arguments as JSON values (numbers, strings, booleans, lists,"
                    " tables), so that it can be rebuilt without pickle") from None

    def build(self, key: str) -> nn.Module:
        if not self.module:
            raise ConfigError(f"{key}.module is not set: with net kind custom, name your"
                              " class as package.module:Class")
        cls = import_object(self.module)
        try:
            module = cls(**self.args)
        except TypeError as error:
            raise PluginError(f"{self.module}({_call(self.args)}) fails: {error}") from None
        if not isinstance(module, nn.Module):
            raise PluginError(f"{self.module} builds a {type(module).__name__}, not an"
                              " nn.Module")
        return module


@dataclass(frozen=True)
class CustomNetConfig:
    """The encoder and decoder are a user's own ``nn.Module`` classes (``docs/extending.md``)."""

    kind: ClassVar[str] = "custom"
    """What ``--net custom`` picks (with ``net.encoder.module`` and ``net.decoder.module``)."""

    encoder: ModuleSpec = ModuleSpec()
    """x (B, *event_shape) → features (B, F); aevb puts q(z|x)'s head on them."""
    decoder: ModuleSpec = ModuleSpec()
    """z (N, latent_dim [+ condition_dim]) → features (N, F'), or the likelihood's parameters."""
    activation: str = "gelu"
    """Nonlinearity of the layers aevb adds between your networks (the hvae's nets between
    stochastic layers); the heads are linear, and a vae adds none."""
    decoder_emits_parameters: bool = False
    """false: aevb puts a linear likelihood head on the decoder's features (N, F'); true: the
    decoder already emits the likelihood's k parameters per value, (N, k * C, H, W) for images
    of C channels (k = 1 for Bernoulli means, 2 for a Gaussian's mean and log-variance)."""

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"net.activation must be one of {', '.join(ACTIVATIONS)};"
                              f" got {self.activation!r}")
        self.encoder.check("net.encoder")
        self.decoder.check("net.decoder")


def import_object(path: str) -> Any:
    """The object that ``package.module:Name`` names, or one PluginError saying why not."""
    module_name, _, name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise PluginError(f"cannot import {path}: {error} (install its package or put it on"
                          " PYTHONPATH)") from None
    except Exception as error:  # the user's module raised on import
        raise PluginError(f"importing {path} failed: {type(error).__name__}: {error}") from None
    try:
        return getattr(module, name)
    except AttributeError:
        raise PluginError(f"cannot import {path}: module {module_name!r} has no {name!r}"
                          ) from None


def spec_of(module: nn.Module, role: str) -> ModuleSpec:
    """The spec that rebuilds ``module``: its class's import path and its constructor arguments,
    read back from the attributes of the same names (scikit-learn's ``get_params`` convention:
    store each argument as ``self.<name>``). The rebuilt module must have the same parameters,
    by name and shape, or it is an error."""
    cls = type(module)
    path = f"{cls.__module__}:{cls.__qualname__}"
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        raise ConfigError(f"the {role} {cls.__qualname__} is defined in {cls.__module__}"
                          f"{' inside a function' if '<locals>' in cls.__qualname__ else ''}:"
                          " a run records its networks by import path, so define the class in"
                          " a module of its own that a later process can import")
    args = {}
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL,
                                                parameter.VAR_KEYWORD):
            continue
        if hasattr(module, name):
            args[name] = _plain(getattr(module, name))
        elif parameter.default is inspect.Parameter.empty:
            raise ConfigError(f"the {role} {path} has no attribute {name!r}: store each"
                              f" constructor argument as self.{name} (as scikit-learn's"
                              " estimators do), so that the run can rebuild it")
    spec = ModuleSpec(path, args)
    spec.check(f"the {role}")
    rebuilt = spec.build(f"the {role}")
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    if {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()} != expected:
        raise ConfigError(f"the {role} {path}({_call(args)}) rebuilds with other parameters"
                          " than the module given: store each constructor argument unchanged"
                          " as self.<name>")
    return spec


def flat_features(net: nn.Module, inputs: torch.Tensor, role: str, path: str) -> int:
    """F, where ``net`` maps ``inputs`` (B, ...) to features (B, F); else one ConfigError
    saying what it gave."""
    out = _output(net, inputs, role, path)
    if out.dim() != 2 or out.shape[0] != inputs.shape[0] or out.shape[1] == 0:
        raise ConfigError(f"the {role} {path} maps {tuple(inputs.shape)} to"
                          f" {tuple(out.shape)}; it must give features (B, F): flatten them"
                          " (nn.Flatten) or say decoder_emits_parameters")
    return int(out.shape[1])


def check_output_shape(net: nn.Module, inputs: torch.Tensor, role: str, path: str,
                       shape: Sequence[int]) -> None:
    """One ConfigError unless ``net`` maps ``inputs`` (B, ...) to (B, *shape)."""
    out = _output(net, inputs, role, path)
    if tuple(out.shape) != (inputs.shape[0], *shape):
        raise ConfigError(f"the {role} {path} maps {tuple(inputs.shape)} to"
                          f" {tuple(out.shape)}; it must give {(inputs.shape[0], *shape)}")


def _output(net: nn.Module, inputs: torch.Tensor, role: str, path: str) -> torch.Tensor:
    """``net(inputs)`` once, without gradients, in eval mode (a batch norm's statistics are
    left alone)."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = net(inputs)
    except Exception as error:
        raise ConfigError(f"the {role} {path} fails on a batch of shape"
                          f" {tuple(inputs.shape)}: {type(error).__name__}: {error}") from None
    finally:
        net.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise ConfigError(f"the {role} {path} returns a {type(out).__name__}, not a tensor")
    return out


def _plain(value: Any) -> Any:
    """Tuples as lists (what JSON keeps); everything else as it is."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _call(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in args.items())

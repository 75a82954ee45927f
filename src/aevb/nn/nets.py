"""Deterministic backbones: multilayer perceptrons, strided-conv and pixel-shuffle stacks, and
the network sub-configs that models share (``[model.net]`` in a run's config)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from aevb.errors import ConfigError

__all__ = ["ACTIVATIONS", "ConvNetConfig", "FoldLeading", "MLPConfig", "activation", "conv_decoder", "padded_image",
           "conv_down", "conv_encoder", "init_normal_", "mlp", "pixel_shuffle_up"]

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


@dataclass(frozen=True)
class MLPConfig:
    """A multilayer perceptron: the encoder's hidden layers; the decoder mirrors them."""

    kind: ClassVar[str] = "mlp"
    """What ``--net mlp`` picks where a model takes either kind of net."""

    hidden: tuple[int, ...] = (500,)
    """Hidden layer sizes of the encoder, input side first (the paper: one layer of 500)."""
    activation: str = "tanh"
    """Nonlinearity after every hidden layer: tanh | relu | leaky_relu | elu | gelu | softplus
    | sigmoid | identity."""
    init_std: float | None = None
    """None: PyTorch's default initialisation; else every weight and bias drawn from
    N(0, init_std^2) (``init_normal_``). The paper's "N(0, 0.01)" (sec. 5) read as the standard
    deviation is 0.01; read as the variance, 0.1."""

    def __post_init__(self) -> None:
        if any(h <= 0 for h in self.hidden):
            raise ConfigError(f"net.hidden must hold positive sizes, got {list(self.hidden)}")
        activation(self.activation)
        if self.init_std is not None and not self.init_std > 0:
            raise ConfigError(f"net.init_std must be positive (or unset), got {self.init_std}")


@dataclass(frozen=True)
class ConvNetConfig:
    """Strided convolutions down and pixel-shuffle upsampling back (``conv_down``,
    ``pixel_shuffle_up``)."""

    kind: ClassVar[str] = "conv"
    """What ``--net conv`` picks where a model takes either kind of net."""

    channels: tuple[int, ...] = (32, 64)
    """Channels after each strided convolution; each halves the height and width."""
    activation: str = "tanh"
    """Nonlinearity after every convolution but the decoder's last."""

    def __post_init__(self) -> None:
        if not self.channels or any(c <= 0 for c in self.channels):
            raise ConfigError(f"net.channels must hold positive sizes, got {list(self.channels)}")
        activation(self.activation)


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        known = ", ".join(ACTIVATIONS)
        raise ConfigError(f"unknown activation {name!r} (known: {known})") from None


CONV_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
               nn.ConvTranspose3d)


def init_normal_(module: nn.Module, std: float) -> None:
    """Redraw every weight and bias of the Linear and Conv layers in ``module`` from
    N(0, std^2) in place, with torch's global RNG (Kingma & Welling 2014, sec. 5: std 0.01);
    other parameters (a learned decoder sigma) keep their values."""
    if not std > 0:
        raise ValueError(f"init_normal_ needs std > 0, got {std}")
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, (nn.Linear, *CONV_LAYERS)):
                for parameter in layer.parameters(recurse=False):
                    parameter.normal_(0.0, std)


def mlp(sizes: Sequence[int], activation_name: str) -> nn.Sequential:
    """Linear layers ``sizes[0] → … → sizes[-1]``, each followed by the activation, on any
    leading shape (..., sizes[0]); with one size it is the identity."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), activation(activation_name)]
    return nn.Sequential(*layers)


def conv_down(channels: Sequence[int], activation_name: str) -> nn.Sequential:
    """Strided convolutions (B, channels[0], H, W) → (B, channels[-1], H / 2^n, W / 2^n): n =
    len(channels) - 1 blocks of a 4x4 convolution, stride 2, padding 1 (halving an even size)
    and the activation."""
    layers: list[nn.Module] = []
    for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
        layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), activation(activation_name)]
    return nn.Sequential(*layers)


def pixel_shuffle_up(channels: Sequence[int], activation_name: str,
                     last_activation: bool = True) -> nn.Sequential:
    """Upsampling (B, channels[0], H, W) → (B, channels[-1], H * 2^n, W * 2^n), n blocks of a
    3x3 convolution to 4x the next channels and ``nn.PixelShuffle(2)`` (Shi et al. 2016: no
    checkerboard of a transposed convolution), then the activation, but for the last block
    without ``last_activation`` (logits, means)."""
    layers: list[nn.Module] = []
    pairs = list(zip(channels[:-1], channels[1:], strict=True))
    for i, (c_in, c_out) in enumerate(pairs):
        layers += [nn.Conv2d(c_in, 4 * c_out, 3, padding=1), nn.PixelShuffle(2)]
        if last_activation or i < len(pairs) - 1:
            layers.append(activation(activation_name))
    return nn.Sequential(*layers)


class FoldLeading(nn.Module):
    """Runs ``net``, which takes one batch dimension (N, *shape), on (..., *shape) with
    ``len(shape) == event_dims``: K samples of B codes (K, B, D) go through as one batch of K*B
    and come back as (K, B, *out_shape)."""

    def __init__(self, net: nn.Module, event_dims: int) -> None:
        super().__init__()
        self.net = net
        self.event_dims = event_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        split = x.dim() - self.event_dims
        out = self.net(x.reshape(-1, *x.shape[split:]))
        return out.reshape(*x.shape[:split], *out.shape[1:])


def padded_image(event_shape: Sequence[int],
                  blocks: int) -> tuple[int, int, int, tuple[int, int, int, int]]:
    """(C, H', W', padding): H and W raised to the next multiples of 2^blocks, so that every
    strided convolution halves them exactly; ``padding`` (left, right, top, bottom) spreads
    the extra rows and columns evenly over both sides, as ``nn.ZeroPad2d`` takes it."""
    if len(event_shape) != 3:
        raise ConfigError(f"convolutional nets need images (C, H, W), not shape"
                          f" {tuple(event_shape)}")
    c, h, w = event_shape
    scale = 2**blocks
    extra_h, extra_w = -h % scale, -w % scale
    padding = (extra_w // 2, extra_w - extra_w // 2, extra_h // 2, extra_h - extra_h // 2)
    return c, h + extra_h, w + extra_w, padding


def conv_encoder(event_shape: Sequence[int], config: ConvNetConfig) -> tuple[nn.Sequential, int]:
    """Images (B, C, H, W) → features (B, F), and F: zero-padded to multiples of 2^n (n =
    len(config.channels)), so that any size halves n times, then ``conv_down``, flattened."""
    c, h, w, padding = padded_image(event_shape, len(config.channels))
    scale = 2 ** len(config.channels)
    net = nn.Sequential(
        nn.ZeroPad2d(padding),
        conv_down([c, *config.channels], config.activation),
        nn.Flatten(),
    )
    return net, config.channels[-1] * (h // scale) * (w // scale)


def conv_decoder(in_features: int, event_shape: Sequence[int], outputs_per_value: int,
                 config: ConvNetConfig) -> FoldLeading:
    """Codes (..., in_features) → maps (..., k * C, H, W), k = ``outputs_per_value``: the mirror
    of ``conv_encoder``, a linear layer to its last map, ``pixel_shuffle_up`` back to k * C
    linear outputs, the padding cropped off; any leading shape (``FoldLeading``)."""
    c, h, w, (left, right, top, bottom) = padded_image(event_shape, len(config.channels))
    scale = 2 ** len(config.channels)
    inner = (config.channels[-1], h // scale, w // scale)
    net = nn.Sequential(
        nn.Linear(in_features, math.prod(inner)),
        activation(config.activation),
        nn.Unflatten(-1, inner),
        pixel_shuffle_up([*reversed(config.channels), outputs_per_value * c], config.activation,
                         last_activation=False),
        nn.ZeroPad2d((-left, -right, -top, -bottom)),  # negative padding crops
    )
    return FoldLeading(net, 1)

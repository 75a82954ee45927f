"""The convolutional hierarchy: latent groups on feature maps at several resolutions (for
28x28 MNIST with two halvings, 14x14 and 7x7), the residual cells of ``models.cells`` built of
3x3 convolutions, and pixel-shuffle upsampling of the state between resolutions (Vahdat & Kautz
2020; Child 2021). Codes are flat: group l is a map of ``latent_dims[l]`` channels, its z_l the
map flattened (..., c h w), so the rest of the hierarchical VAE sees vectors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.distributions import Independent, Normal

from aevb.models.base import DataSpec
from aevb.models.cells import RESIDUAL_SCALE, TopDown, residual_posterior, side_by_side
from aevb.nn.heads import DecoderHead, decoder_head
from aevb.nn.nets import ConvNetConfig, FoldLeading, activation, padded_image

__all__ = ["ConvCells", "MultiScaleEncoder", "conv_hierarchy", "group_scales"]


def group_scales(layers: int, scales: int) -> list[int]:
    """The resolution of each latent group, z1 first: 1 (the finest map, half the image) …
    ``scales`` (the coarsest), split as evenly as the counts allow, any extra group on the
    coarser maps (cheaper)."""
    base, extra = divmod(layers, scales)
    counts = [base + (1 if scale >= scales - extra else 0) for scale in range(scales)]
    return [scale + 1 for scale, count in enumerate(counts) for _ in range(count)]


def conv_branch(c_in: int, hidden: int, c_out: int, name: str, last_scale: float) -> nn.Sequential:
    """3x3 conv, activation, 3x3 conv to ``c_out``; the last one's initial weights and bias
    scaled by ``last_scale`` (0: it starts at zero)."""
    last = nn.Conv2d(hidden, c_out, 3, padding=1)
    with torch.no_grad():
        for parameter in last.parameters():
            parameter.mul_(last_scale)
    return nn.Sequential(nn.Conv2d(c_in, hidden, 3, padding=1), activation(name), last)


def _on_maps(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``net`` on maps (..., C, H, W) of any leading shape."""
    out = net(x.reshape(-1, *x.shape[-3:]))
    return out.reshape(*x.shape[:-3], *out.shape[1:])


def _flat_gaussian(parameters: torch.Tensor) -> Independent:
    """N(mu, sigma) over the flattened map from (..., 2c, H, W) = [mu, log sigma^2]."""
    mu, log_var = parameters.float().chunk(2, dim=-3)
    return Independent(Normal(mu.flatten(-3), torch.exp(0.5 * log_var.flatten(-3))), 1)


class MultiScaleEncoder(nn.Module):
    """Images (B, C, H, W) → the bottom-up maps each latent group reads, z1's first: zero
    padding to a multiple of 2^S, then per resolution a strided 4x4 convolution and a 3x3 one,
    each with the activation."""

    def __init__(self, event_shape: Sequence[int], net: ConvNetConfig, scales: list[int]) -> None:
        super().__init__()
        c, _, _, padding = padded_image(event_shape, len(net.channels))
        self.pad = nn.ZeroPad2d(padding)
        self.blocks = nn.ModuleList()
        for c_in, c_out in zip([c, *net.channels[:-1]], net.channels, strict=True):
            self.blocks.append(nn.Sequential(
                nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), activation(net.activation),
                nn.Conv2d(c_out, c_out, 3, padding=1), activation(net.activation)))
        self.scales = scales

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps, h = [], self.pad(x)
        for block in self.blocks:
            h = block(h)
            maps.append(h)
        return [maps[scale - 1] for scale in self.scales]


class ConvCells(TopDown):
    """Residual cells on maps: the state starts as a learned map at the coarsest resolution;
    group l's cell reads p and q from it and its bottom-up map, adds g([h, z_l]) to it, and
    upsamples it (3x3 convolution, pixel shuffle) where the group below sits on a finer map
    (after z1: down to the finest, the decoder's input)."""

    def __init__(self, latent_channels: Sequence[int], scales: list[int],
                 sizes: dict[int, tuple[int, int]], channels: Sequence[int], name: str) -> None:
        super().__init__()
        self.scales = scales
        self.shapes = [(c, *sizes[s]) for c, s in zip(latent_channels, scales, strict=True)]
        self.dims = tuple(math.prod(shape) for shape in self.shapes)
        top = len(channels)
        self.start = nn.Parameter(torch.zeros(channels[-1], *sizes[top]))
        state = [channels[s - 1] for s in scales]
        self.priors = nn.ModuleList(conv_branch(h, h, 2 * c, name, 0.0)
                                    for c, h in zip(latent_channels[:-1], state[:-1], strict=True))
        self.posteriors = nn.ModuleList(conv_branch(2 * h, h, 2 * c, name, 0.0)
                                        for c, h in zip(latent_channels, state, strict=True))
        self.injections = nn.ModuleList(conv_branch(h + c, h, h, name, RESIDUAL_SCALE)
                                        for c, h in zip(latent_channels, state, strict=True))
        ups: dict[str, nn.Module] = {}
        for layer, (here, target) in enumerate(zip(scales, [1, *scales[:-1]], strict=True)):
            steps = []
            for s in range(here, target, -1):  # one pixel shuffle per halving
                steps += [nn.Conv2d(channels[s - 1], 4 * channels[s - 2], 3, padding=1),
                          nn.PixelShuffle(2), activation(name)]
            if steps:
                ups[str(layer)] = nn.Sequential(*steps)
        self.upsample = nn.ModuleDict(ups)

    def initial(self, leading: Sequence[int]) -> torch.Tensor:
        return self.start.expand(*leading, *self.start.shape)

    def prior(self, layer: int, h: torch.Tensor) -> Independent:
        if layer == len(self.dims) - 1:
            zeros = h.new_zeros(*h.shape[:-3], self.dims[layer], dtype=torch.float32)
            return Independent(Normal(zeros, torch.ones_like(zeros)), 1)
        return _flat_gaussian(_on_maps(self.priors[layer], h))

    def posterior(self, layer: int, h: torch.Tensor, prior: Independent,
                  features: torch.Tensor) -> Independent:
        shift = _on_maps(self.posteriors[layer], side_by_side(h, features, event_dims=3)).float()
        dmu, log_var = shift.chunk(2, dim=-3)
        return residual_posterior(prior, torch.cat([dmu.flatten(-3), log_var.flatten(-3)], -1))

    def inject(self, layer: int, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        z_map = z.unflatten(-1, self.shapes[layer]).to(h.dtype)
        joined = side_by_side(h, z_map, event_dims=3)
        h = joined[..., : h.shape[-3], :, :] + _on_maps(self.injections[layer], joined)
        if str(layer) in self.upsample:
            h = _on_maps(self.upsample[str(layer)], h)
        return h


def conv_hierarchy(config: Any, data: DataSpec, net: ConvNetConfig
                   ) -> tuple[MultiScaleEncoder, ConvCells, FoldLeading, DecoderHead]:
    """The encoder, cells, decoder and likelihood head of a convolutional hierarchy on images
    ``data.event_shape`` (C, H, W): the decoder takes the finest state (..., c_1, H'/2, W'/2)
    through a 3x3 convolution and a pixel shuffle to the likelihood's parameters per pixel,
    the padding cropped off."""
    c, h, w, (left, right, top, bottom) = padded_image(data.event_shape, len(net.channels))
    scales = group_scales(len(config.latent_dims), len(net.channels))
    sizes = {s: (h // 2**s, w // 2**s) for s in range(1, len(net.channels) + 1)}
    encoder = MultiScaleEncoder(data.event_shape, net, scales)
    cells = ConvCells(config.latent_dims, scales, sizes, net.channels, net.activation)
    head = decoder_head(config.likelihood, None, data.event_shape, data.kind, config.sigma,
                        config.min_sigma)
    first = net.channels[0]
    decoder = FoldLeading(nn.Sequential(
        nn.Conv2d(first, first, 3, padding=1), activation(net.activation),
        nn.Conv2d(first, 4 * head.params_per_value * c, 3, padding=1), nn.PixelShuffle(2),
        nn.ZeroPad2d((-left, -right, -top, -bottom))), 3)
    return encoder, cells, decoder, head

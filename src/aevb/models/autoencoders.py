"""Deterministic autoencoders: x → code h = f(x) → reconstruction g(h), trained on L(x, g(h)).

One abstract base holds the objective; the registered variants differ only in their nets and
the penalty they add. The loss is mean_b L(x_b, g(f(x~_b))) + penalty, where x~ = x unless the
model corrupts its input (denoising), and L is the cross-entropy of logits g(h) ("bce", data in
[0, 1]) or the squared error ("mse"), summed over the pixels of an example.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import ClassVar

import torch
from torch import nn

from ..config import ModelConfig
from ..corruption import corrupt, resolve_noise
from ..errors import ConfigError
from ..nets import activation, conv_down, mlp, pixel_shuffle_up
from ..objectives import (
    jacobian_frobenius,
    kl_sparsity,
    l1_sparsity,
    reconstruction_loss,
    sigmoid_jacobian_frobenius,
)
from .base import Batch, DataSpec, Model

__all__ = [
    "Autoencoder",
    "ContractiveAutoencoder",
    "ConvAutoencoder",
    "DenoisingAutoencoder",
    "DeterministicAutoencoder",
    "LinearAutoencoder",
    "SparseAutoencoder",
    "resolve_reconstruction",
]


def resolve_reconstruction(config: ModelConfig, data: DataSpec, default: str = "") -> str:
    """``model.reconstruction`` with "auto" resolved: ``default`` if given, else bce on data in
    [0, 1] and mse on real data. Cross-entropy needs targets in [0, 1]."""
    kind = config.reconstruction
    if kind == "auto":
        kind = default or ("mse" if data.kind == "real" else "bce")
    if kind == "bce" and data.kind == "real":
        raise ConfigError("reconstruction bce needs data in [0, 1], but this data is real-valued:"
                          " use model.reconstruction mse")
    return kind


class DeterministicAutoencoder(Model):
    """Abstract: subclasses give the encoder f, the decoder g and an optional penalty.

    Metrics: ``loss`` (minimised), ``rec_loss`` (the mean L(x, g(f(x~)))) and, with a penalty,
    ``penalty`` (its weighted value), all per example.
    """

    default_noise: ClassVar[str] = "none"
    default_reconstruction: ClassVar[str] = ""

    def __init__(self, config: ModelConfig, data: DataSpec) -> None:
        super().__init__(config, data)
        self.reconstruction = resolve_reconstruction(config, data, self.default_reconstruction)
        self.noise = resolve_noise(config.noise, self.default_noise, data.kind)

    @abstractmethod
    def decoder_output(self, code: torch.Tensor) -> torch.Tensor:
        """g(h): code (B, D) → (B, *event_shape), logits for bce, the reconstruction for mse."""

    @abstractmethod
    def penalty(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor | None:
        """The weighted penalty for the batch (a scalar), or None; x is the encoder's input."""

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        output = self.decoder_output(self.encode(x))
        return output.sigmoid() if self.reconstruction == "bce" else output

    def loss(self, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x_in = corrupt(batch.x, self.noise, self.config.noise_level)
        code = self.encode(x_in)
        rec = reconstruction_loss(self.decoder_output(code), batch.x, self.reconstruction).mean()
        penalty = self.penalty(x_in, code)
        loss = rec if penalty is None else rec + penalty
        metrics = {"loss": loss.detach(), "rec_loss": rec.detach()}
        if penalty is not None:  # float32 even under bfloat16 autocast: it is summed over an epoch
            metrics["penalty"] = penalty.detach().float()
        return loss, metrics


class _MLPAutoencoder(DeterministicAutoencoder):
    """Abstract: an MLP encoder ``[F, *hidden] → latent_dim`` and its mirror as decoder.

    ``code_activation`` follows the code layer; ``linear`` makes every activation the identity.
    """

    code_activation: ClassVar[str] = "identity"
    linear: ClassVar[bool] = False

    def __init__(self, config: ModelConfig, data: DataSpec) -> None:
        super().__init__(config, data)
        features = math.prod(data.event_shape)
        hidden = list(config.hidden)
        act = "identity" if self.linear else config.activation
        self.encoder = nn.Sequential(
            mlp([features, *hidden], act),
            nn.Linear(hidden[-1] if hidden else features, config.latent_dim),
            activation("identity" if self.linear else self.code_activation),
        )
        self.decoder = nn.Sequential(
            mlp([config.latent_dim, *reversed(hidden)], act),
            nn.Linear(hidden[0] if hidden else config.latent_dim, features),
            nn.Unflatten(-1, data.event_shape),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.flatten(1))

    def decoder_output(self, code: torch.Tensor) -> torch.Tensor:
        return self.decoder(code)


class Autoencoder(_MLPAutoencoder):
    description = "autoencoder: MLP encoder f(x), decoder g(h), loss L(x, g(f(x)))"

    def penalty(self, x: torch.Tensor, code: torch.Tensor) -> None:
        return None


class LinearAutoencoder(_MLPAutoencoder):
    description = "linear autoencoder: identity activations, squared error (spans PCA's subspace)"
    linear = True
    default_reconstruction = "mse"

    def __init__(self, config: ModelConfig, data: DataSpec) -> None:
        if config.reconstruction == "bce":
            raise ConfigError("linear-ae is linear end to end: use reconstruction mse (or auto)")
        super().__init__(config, data)

    def penalty(self, x: torch.Tensor, code: torch.Tensor) -> None:
        return None


class SparseAutoencoder(_MLPAutoencoder):
    """Sigmoid code units with an L1 penalty on the code or Ng's KL penalty on mean activations."""

    description = "sparse autoencoder: sigmoid code, L1 or KL(rho || mean activation) penalty"
    code_activation = "sigmoid"

    def penalty(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        if self.config.sparsity == "l1":
            value = l1_sparsity(code).mean()
        else:
            value = kl_sparsity(code, self.config.sparsity_target)
        return self.config.sparsity_weight * value


class DenoisingAutoencoder(_MLPAutoencoder):
    """Vincent et al. (2008): reconstruct the clean x from a corrupted copy (masking by default)."""

    description = "denoising autoencoder: corrupted input (masking by default), clean target"
    default_noise = "masking"

    def __init__(self, config: ModelConfig, data: DataSpec) -> None:
        super().__init__(config, data)
        if self.noise == "none" or config.noise_level == 0:
            raise ConfigError("denoising-ae needs model.noise and a noise_level above 0;"
                              " without noise use the model ae")

    def penalty(self, x: torch.Tensor, code: torch.Tensor) -> None:
        return None


class ContractiveAutoencoder(_MLPAutoencoder):
    """Rifai et al. (2011): penalise ||dh/dx||_F^2, exactly: in closed form for one sigmoid
    layer (``hidden = []``), by autograd through a deeper encoder."""

    description = "contractive autoencoder: sigmoid code, penalty ||dh/dx||_F^2 (exact)"
    code_activation = "sigmoid"

    def penalty(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        if self.config.hidden:
            frobenius = jacobian_frobenius(self.encoder, x.flatten(1))
        else:
            frobenius = sigmoid_jacobian_frobenius(code, self.encoder[1].weight)
        return self.config.contractive_weight * frobenius.mean()


class ConvAutoencoder(DeterministicAutoencoder):
    """Strided convolutions down to a linear code, pixel-shuffle upsampling back (``nets``).

    Needs image data (C, H, W) with H and W divisible by 2^len(channels).
    """

    description = "convolutional autoencoder: strided convs down, pixel-shuffle up"

    def __init__(self, config: ModelConfig, data: DataSpec) -> None:
        super().__init__(config, data)
        if len(data.event_shape) != 3:
            raise ConfigError(f"conv-ae needs images (C, H, W), not shape {data.event_shape}")
        c, h, w = data.event_shape
        scale = 2 ** len(config.channels)
        if h % scale or w % scale:
            raise ConfigError(f"conv-ae halves {h}x{w} images {len(config.channels)} times:"
                              f" H and W must be divisible by {scale}; use fewer model.channels")
        inner = (config.channels[-1], h // scale, w // scale)
        self.encoder = nn.Sequential(
            conv_down([c, *config.channels], config.activation),
            nn.Flatten(),
            nn.Linear(math.prod(inner), config.latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(config.latent_dim, math.prod(inner)),
            activation(config.activation),
            nn.Unflatten(-1, inner),
            pixel_shuffle_up([*reversed(config.channels), c], config.activation,
                             last_activation=False),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decoder_output(self, code: torch.Tensor) -> torch.Tensor:
        return self.decoder(code)

    def penalty(self, x: torch.Tensor, code: torch.Tensor) -> None:
        return None

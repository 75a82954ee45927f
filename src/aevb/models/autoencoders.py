"""Deterministic autoencoders: x → code h = f(x) → reconstruction g(h), trained on L(x, g(h)).

One abstract base holds the objective; the registered variants differ only in their nets and
the penalty they add. The loss is mean_b L(x_b, g(f(x~_b))) + penalty, where x~ = x unless the
model corrupts its input (denoising), and L is the cross-entropy of logits g(h) ("bce", data in
[0, 1]) or the squared error ("mse"), summed over the pixels of an example.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from aevb.errors import ConfigError, check_choice, check_positive
from aevb.inference.objectives import (
    jacobian_frobenius,
    kl_sparsity,
    l1_sparsity,
    reconstruction_loss,
    sigmoid_jacobian_frobenius,
)
from aevb.inference.schedules import Step
from aevb.models.base import Batch, Corrupting, DataSpec, Encoder, Metrics, Model
from aevb.nn.corruption import Corruption, NoiseConfig
from aevb.nn.custom import CustomNetConfig, check_output_shape, flat_features
from aevb.nn.nets import ConvNetConfig, MLPConfig, activation, conv_down, mlp, pixel_shuffle_up

__all__ = ["Autoencoder", "AutoencoderConfig", "ContractiveAutoencoder",
           "ContractiveAutoencoderConfig", "ConvAutoencoder", "ConvAutoencoderConfig",
           "DenoisingAutoencoder", "DenoisingAutoencoderConfig", "DeterministicAutoencoder",
           "LinearAutoencoder", "LinearAutoencoderConfig", "SparseAutoencoder",
           "SparseAutoencoderConfig", "resolve_reconstruction"]


@dataclass(frozen=True)
class AutoencoderConfig:
    name: str = "ae"
    latent_dim: int = 20
    """Size of the code h."""
    net: MLPConfig | CustomNetConfig = MLPConfig()
    """The encoder's hidden layers, the decoder mirroring them; or your own modules (``--net
    custom``: linear layers to the code and from the decoder's features to the pixels are
    added, as heads)."""
    reconstruction: str = "auto"
    """L(x, g(f(x))): bce (cross-entropy, data in [0, 1]) | mse (squared error) | auto (bce on
    data in [0, 1], mse on real data)."""
    corruption: NoiseConfig = NoiseConfig()

    def __post_init__(self) -> None:
        check_positive("model.latent_dim", self.latent_dim)
        check_choice("model.reconstruction", self.reconstruction, ("auto", "bce", "mse"))


@dataclass(frozen=True)
class SparseAutoencoderConfig(AutoencoderConfig):
    name: str = "sparse-ae"
    sparsity: str = "l1"
    """The penalty: l1 (on the code) | kl (KL(rho || mean activation) per code unit)."""
    sparsity_weight: float = 0.1
    """Weight on the sparsity penalty in the loss."""
    sparsity_target: float = 0.05
    """rho, the target mean activation of a code unit for the kl penalty."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("model.sparsity", self.sparsity, ("l1", "kl"))
        if not 0 < self.sparsity_target < 1:
            raise ConfigError(f"model.sparsity_target must be in (0, 1), got {self.sparsity_target}")
        if self.sparsity_weight < 0:
            raise ConfigError(f"model.sparsity_weight must be >= 0, got {self.sparsity_weight}")


@dataclass(frozen=True)
class DenoisingAutoencoderConfig(AutoencoderConfig):
    name: str = "denoising-ae"
    corruption: NoiseConfig = NoiseConfig("masking")


@dataclass(frozen=True)
class ContractiveAutoencoderConfig(AutoencoderConfig):
    name: str = "contractive-ae"
    net: MLPConfig = MLPConfig()
    """The encoder's hidden layers, the decoder mirroring them (the penalty's Jacobian is of
    this MLP: in closed form for none)."""
    contractive_weight: float = 0.1
    """Weight on the squared Frobenius norm of the encoder Jacobian."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.contractive_weight < 0:
            raise ConfigError(f"model.contractive_weight must be >= 0, got {self.contractive_weight}")


@dataclass(frozen=True)
class LinearAutoencoderConfig:
    name: str = "linear-ae"
    latent_dim: int = 20
    """Size of the code h."""
    hidden: tuple[int, ...] = (500,)
    """Sizes of the encoder's linear hidden layers; the decoder mirrors them."""

    def __post_init__(self) -> None:
        check_positive("model.latent_dim", self.latent_dim)
        if any(h <= 0 for h in self.hidden):
            raise ConfigError(f"model.hidden must hold positive sizes, got {list(self.hidden)}")


@dataclass(frozen=True)
class ConvAutoencoderConfig:
    name: str = "conv-ae"
    latent_dim: int = 20
    """Size of the code h."""
    net: ConvNetConfig = ConvNetConfig()
    reconstruction: str = "auto"
    """L(x, g(f(x))): bce | mse | auto (bce on data in [0, 1], mse on real data)."""
    corruption: NoiseConfig = NoiseConfig()

    def __post_init__(self) -> None:
        check_positive("model.latent_dim", self.latent_dim)
        check_choice("model.reconstruction", self.reconstruction, ("auto", "bce", "mse"))


def resolve_reconstruction(kind: str, data: DataSpec) -> str:
    """``kind`` with "auto" resolved: bce on data in [0, 1], mse on real data. Cross-entropy
    needs targets in [0, 1]."""
    if kind == "auto":
        kind = "mse" if data.kind == "real" else "bce"
    if kind == "bce" and data.kind == "real":
        raise ConfigError("reconstruction bce needs data in [0, 1], but this data is real-valued:"
                          " use model.reconstruction mse")
    return kind


class DeterministicAutoencoder(Model, Encoder, Corrupting):
    """Abstract: subclasses give the encoder f, the decoder g and an optional penalty.

    Metrics: ``loss`` (minimised, and what picks the best checkpoint), ``rec_loss`` (the mean
    L(x, g(f(x~)))) and, with a penalty, ``penalty`` (its weighted value), all per example.
    """

    metric_names = {
        "loss": ("loss (minimised)", ""),
        "rec_loss": ("reconstruction loss L(x, g(f(x)))", ""),
        "penalty": ("penalty (weighted)", ""),
    }

    def __init__(self, config: object, data: DataSpec, reconstruction: str,
                 corruption: NoiseConfig) -> None:
        super().__init__(config, data)
        self.reconstruction = resolve_reconstruction(reconstruction, data)
        self.corruption = Corruption(corruption, data.kind)

    @abstractmethod
    def code(self, x: torch.Tensor) -> torch.Tensor:
        """f(x): x (B, *event_shape) → the code (B, latent_dim)."""

    @abstractmethod
    def decoder_output(self, code: torch.Tensor) -> torch.Tensor:
        """g(h): code (B, D) → (B, *event_shape), logits for bce, the reconstruction for mse."""

    @abstractmethod
    def penalty(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor | None:
        """The weighted penalty for the batch (a scalar), or None; x is the encoder's input."""

    def encode(self, batch: Batch) -> torch.Tensor:
        return self.code(batch.x)

    def reconstruct(self, batch: Batch) -> torch.Tensor:
        output = self.decoder_output(self.code(batch.x))
        return output.sigmoid() if self.reconstruction == "bce" else output

    def loss(self, batch: Batch, step: Step) -> tuple[torch.Tensor, Metrics]:
        x_in = self.corruption(batch.x)
        code = self.code(x_in)
        rec = reconstruction_loss(self.decoder_output(code), batch.x, self.reconstruction).mean()
        penalty = self.penalty(x_in, code)
        loss = rec if penalty is None else rec + penalty
        metrics = {"loss": loss.detach(), "rec_loss": rec.detach()}
        if penalty is not None:  # float32 even under bfloat16 autocast: it is summed over an epoch
            metrics["penalty"] = penalty.detach().float()
        return loss, metrics


class _MLPAutoencoder(DeterministicAutoencoder):
    """Abstract: an MLP encoder ``[F, *hidden] → latent_dim`` and its mirror as decoder;
    ``code_activation`` follows the code layer."""

    code_activation: ClassVar[str] = "identity"

    def __init__(self, config: AutoencoderConfig, data: DataSpec) -> None:
        super().__init__(config, data, config.reconstruction, config.corruption)
        if isinstance(config.net, CustomNetConfig):
            self.encoder, self.decoder = _custom_pair(data, config.latent_dim, config.net,
                                                      self.code_activation)
            return
        self.encoder, self.decoder = _mlp_pair(data, config.latent_dim, config.net.hidden,
                                               config.net.activation, self.code_activation)

    def code(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.flatten(1))

    def decoder_output(self, code: torch.Tensor) -> torch.Tensor:
        return self.decoder(code)


def _mlp_pair(data: DataSpec, latent_dim: int, hidden: tuple[int, ...], act: str,
              code_act: str) -> tuple[nn.Sequential, nn.Sequential]:
    features = math.prod(data.event_shape)
    encoder = nn.Sequential(
        mlp([features, *hidden], act),
        nn.Linear(hidden[-1] if hidden else features, latent_dim),
        activation(code_act),
    )
    decoder = nn.Sequential(
        mlp([latent_dim, *reversed(hidden)], act),
        nn.Linear(hidden[0] if hidden else latent_dim, features),
        nn.Unflatten(-1, data.event_shape),
    )
    return encoder, decoder


def _custom_pair(data: DataSpec, latent_dim: int, net: CustomNetConfig, code_act: str
                 ) -> tuple[nn.Sequential, nn.Sequential]:
    """Your encoder and decoder (``nn.custom``) between flat x (B, F) and the code: a linear
    code layer on the encoder's features, a linear layer from the decoder's to the pixels
    (none where the decoder emits them, one value per pixel)."""
    encoder = net.encoder.build("model.net.encoder")
    features = flat_features(encoder, torch.zeros(2, *data.event_shape), "encoder",
                             net.encoder.module)
    decoder = net.decoder.build("model.net.decoder")
    codes = torch.zeros(2, latent_dim)
    if net.decoder_emits_parameters:
        check_output_shape(decoder, codes, "decoder", net.decoder.module, data.event_shape)
        head: list[nn.Module] = []
    else:
        decoded = flat_features(decoder, codes, "decoder", net.decoder.module)
        head = [nn.Linear(decoded, math.prod(data.event_shape)),
                nn.Unflatten(-1, data.event_shape)]
    return (nn.Sequential(nn.Unflatten(-1, data.event_shape), encoder,
                          nn.Linear(features, latent_dim), activation(code_act)),
            nn.Sequential(decoder, *head))


class Autoencoder(_MLPAutoencoder):
    description = "autoencoder: MLP encoder f(x), decoder g(h), loss L(x, g(f(x)))"
    config_class = AutoencoderConfig

    def penalty(self, x: torch.Tensor, code: torch.Tensor) -> None:
        return None


class LinearAutoencoder(DeterministicAutoencoder):
    """Identity activations and squared error throughout: it spans PCA's subspace."""

    description = "linear autoencoder: identity activations, squared error (spans PCA's subspace)"
    config_class = LinearAutoencoderConfig

    def __init__(self, config: LinearAutoencoderConfig, data: DataSpec) -> None:
        super().__init__(config, data, "mse", NoiseConfig())
        self.encoder, self.decoder = _mlp_pair(data, config.latent_dim, config.hidden,
                                               "identity", "identity")

    def code(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.flatten(1))

    def decoder_output(self, code: torch.Tensor) -> torch.Tensor:
        return self.decoder(code)

    def penalty(self, x: torch.Tensor, code: torch.Tensor) -> None:
        return None


class SparseAutoencoder(_MLPAutoencoder):
    """Sigmoid code units with an L1 penalty on the code or Ng's KL penalty on mean activations."""

    description = "sparse autoencoder: sigmoid code, L1 or KL(rho || mean activation) penalty"
    config_class = SparseAutoencoderConfig
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
    config_class = DenoisingAutoencoderConfig

    def __init__(self, config: DenoisingAutoencoderConfig, data: DataSpec) -> None:
        super().__init__(config, data)
        if not self.corruption.active:
            raise ConfigError("denoising-ae needs model.corruption.noise and a noise_level above"
                              " 0; without noise use the model ae")

    def penalty(self, x: torch.Tensor, code: torch.Tensor) -> None:
        return None


class ContractiveAutoencoder(_MLPAutoencoder):
    """Rifai et al. (2011): penalise ||dh/dx||_F^2, exactly: in closed form for one sigmoid
    layer (``hidden = []``), by autograd through a deeper encoder."""

    description = "contractive autoencoder: sigmoid code, penalty ||dh/dx||_F^2 (exact)"
    config_class = ContractiveAutoencoderConfig
    code_activation = "sigmoid"

    def penalty(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        if self.config.net.hidden:
            frobenius = jacobian_frobenius(self.encoder, x.flatten(1))
        else:
            code_layer = self.encoder[1]
            assert isinstance(code_layer, nn.Linear)
            frobenius = sigmoid_jacobian_frobenius(code, code_layer.weight)
        return self.config.contractive_weight * frobenius.mean()


class ConvAutoencoder(DeterministicAutoencoder):
    """Strided convolutions down to a linear code, pixel-shuffle upsampling back (``nets``).

    Needs image data (C, H, W) with H and W divisible by 2^len(channels).
    """

    description = "convolutional autoencoder: strided convs down, pixel-shuffle up"
    config_class = ConvAutoencoderConfig

    def __init__(self, config: ConvAutoencoderConfig, data: DataSpec) -> None:
        super().__init__(config, data, config.reconstruction, config.corruption)
        if len(data.event_shape) != 3:
            raise ConfigError(f"conv-ae needs images (C, H, W), not shape {data.event_shape}")
        c, h, w = data.event_shape
        channels, act = config.net.channels, config.net.activation
        scale = 2 ** len(channels)
        if h % scale or w % scale:
            raise ConfigError(f"conv-ae halves {h}x{w} images {len(channels)} times:"
                              f" H and W must be divisible by {scale}; use fewer net.channels")
        inner = (channels[-1], h // scale, w // scale)
        self.encoder = nn.Sequential(
            conv_down([c, *channels], act),
            nn.Flatten(),
            nn.Linear(math.prod(inner), config.latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(config.latent_dim, math.prod(inner)),
            activation(act),
            nn.Unflatten(-1, inner),
            pixel_shuffle_up([*reversed(channels), c], act, last_activation=False),
        )

    def code(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decoder_output(self, code: torch.Tensor) -> torch.Tensor:
        return self.decoder(code)

    def penalty(self, x: torch.Tensor, code: torch.Tensor) -> None:
        return None

"""The stacked autoencoder: greedy layer-wise pretraining, then fine-tuning of the whole stack.

Bengio et al. (2007); Hinton & Salakhutdinov (2006) for unrolling the pretrained layers into
one deep autoencoder. The phase is a pure function of the training step, so resume is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from aevb.errors import check_positive
from aevb.inference.objectives import reconstruction_loss
from aevb.inference.schedules import Step
from aevb.models.autoencoders import AutoencoderConfig, resolve_reconstruction
from aevb.models.base import Batch, Corrupting, DataSpec, Encoder, Metrics, Model
from aevb.nn.corruption import Corruption
from aevb.nn.nets import MLPConfig, activation

__all__ = ["StackedAutoencoder", "StackedAutoencoderConfig"]


@dataclass(frozen=True)
class StackedAutoencoderConfig(AutoencoderConfig):
    name: str = "stacked-ae"
    net: MLPConfig = MLPConfig()
    """The layers of the stack, each pretrained in turn; the decoder mirrors them."""
    pretrain_steps: int = 1000
    """Greedy pretraining steps per layer (1000: 2 MNIST epochs at M=100), before fine-tuning
    the whole stack."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("model.pretrain_steps", self.pretrain_steps)


class StackedAutoencoder(Model, Encoder, Corrupting):
    """Layers ``[F, *hidden, latent_dim]``; layer k has an encoder h_k = a(W_k h_{k-1} + b_k)
    (the code layer is linear) and a decoder back to h_{k-1}.

    Steps [(k-1) P, k P), P = ``pretrain_steps``, train layer k alone as a one-layer
    autoencoder of h_{k-1} (the frozen lower layers' output; for k = 1, x with the configured
    loss; above, squared error). Later steps fine-tune the unrolled stack
    g_1(...g_L(f_L(...f_1(x)))) on L(x, g(f(x))). With ``corruption`` each phase corrupts the
    input of what it trains (a stacked denoising autoencoder).

    Metrics: ``loss`` is always the whole stack's reconstruction loss of x (from x~ with
    noise), so validation and the best checkpoint compare like with like across phases;
    ``phase_loss`` is the current phase's objective (what is minimised) and ``pretrain_layer``
    the layer being pretrained (0 while fine-tuning), a pure function of the step.
    """

    description = "stacked autoencoder: greedy layer-wise pretraining, then fine-tuning"
    config_class = StackedAutoencoderConfig
    metric_names = {
        "loss": ("reconstruction loss of the whole stack", ""),
        "phase_loss": ("loss of the current phase (minimised)", ""),
        "pretrain_layer": ("layer pretrained (0: fine-tuning)", ""),
    }

    def __init__(self, config: StackedAutoencoderConfig, data: DataSpec) -> None:
        super().__init__(config, data)
        self.reconstruction = resolve_reconstruction(config.reconstruction, data)
        self.corruption = Corruption(config.corruption, data.kind)
        act = config.net.activation
        sizes = [math.prod(data.event_shape), *config.net.hidden, config.latent_dim]
        last = len(sizes) - 2
        self.encoders = nn.ModuleList(
            nn.Sequential(nn.Linear(n_in, n_out),
                          activation("identity" if k == last else act))
            for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
        )
        # Decoder k rebuilds the encoder's input: x (logits or values) for k = 0, else h_k,
        # which went through the activation.
        self.decoders = nn.ModuleList(
            nn.Sequential(nn.Linear(n_out, n_in),
                          activation("identity" if k == 0 else act))
            for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
        )

    def layer_of(self, step: int) -> int:
        """The layer pretrained at ``step`` (1-based), or 0 once fine-tuning has begun."""
        layer = step // self.config.pretrain_steps + 1
        return layer if layer <= len(self.encoders) else 0

    def encode(self, batch: Batch) -> torch.Tensor:
        return self._code(batch.x)

    def _code(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for encoder in self.encoders:
            h = encoder(h)
        return h

    def _decoder_output(self, code: torch.Tensor) -> torch.Tensor:
        for decoder in reversed(self.decoders):
            code = decoder(code)
        return code.unflatten(-1, self.data.event_shape)

    def reconstruct(self, batch: Batch) -> torch.Tensor:
        output = self._decoder_output(self._code(batch.x))
        return output.sigmoid() if self.reconstruction == "bce" else output

    def _stack_loss(self, x_in: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        output = self._decoder_output(self._code(x_in))
        return reconstruction_loss(output, x, self.reconstruction).mean()

    def _layer_loss(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        with torch.no_grad():  # the layers below are frozen
            target = x.flatten(1)
            for encoder in self.encoders[: layer - 1]:
                target = encoder(target)
        h_in = self.corruption(target)
        output = self.decoders[layer - 1](self.encoders[layer - 1](h_in))
        kind = self.reconstruction if layer == 1 else "mse"
        return reconstruction_loss(output, target, kind).mean()

    def loss(self, batch: Batch, step: Step) -> tuple[torch.Tensor, Metrics]:
        layer = self.layer_of(step.index)
        x_in = self.corruption(batch.x)
        if layer == 0:
            phase_loss = stack_loss = self._stack_loss(x_in, batch.x)
        else:
            phase_loss = self._layer_loss(batch.x, layer)
            with torch.no_grad():
                stack_loss = self._stack_loss(x_in, batch.x)
        metrics = {
            "loss": stack_loss.detach(),
            "phase_loss": phase_loss.detach(),
            "pretrain_layer": torch.tensor(float(layer), device=batch.x.device),
        }
        return phase_loss, metrics

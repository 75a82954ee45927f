"""The stacked autoencoder: greedy layer-wise pretraining, then fine-tuning of the whole stack.

Bengio et al. (2007); Hinton & Salakhutdinov (2006) for unrolling the pretrained layers into
one deep autoencoder. The phase is a pure function of the training step, so resume is exact.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import ModelConfig
from ..corruption import corrupt, resolve_noise
from ..nets import activation
from ..objectives import reconstruction_loss
from .autoencoders import resolve_reconstruction
from .base import Batch, DataSpec, Model

__all__ = ["StackedAutoencoder"]


class StackedAutoencoder(Model):
    """Layers ``[F, *hidden, latent_dim]``; layer k has an encoder h_k = a(W_k h_{k-1} + b_k)
    (the code layer is linear) and a decoder back to h_{k-1}.

    Steps [(k-1) P, k P), P = ``pretrain_steps``, train layer k alone as a one-layer
    autoencoder of h_{k-1} (the frozen lower layers' output; for k = 1, x with the configured
    loss; above, squared error). Later steps fine-tune the unrolled stack
    g_1(...g_L(f_L(...f_1(x)))) on L(x, g(f(x))). With ``model.noise`` each phase corrupts the
    input of what it trains (a stacked denoising autoencoder).

    Metrics: ``loss`` is always the whole stack's reconstruction loss of x (from x~ with
    noise), so validation and the best checkpoint compare like with like across phases;
    ``phase_loss`` is the current phase's objective (what is minimised) and ``pretrain_layer``
    the layer being pretrained (0 while fine-tuning). The phase is kept in a buffer so that
    validation reports the phase training was in.
    """

    description = "stacked autoencoder: greedy layer-wise pretraining, then fine-tuning"

    def __init__(self, config: ModelConfig, data: DataSpec) -> None:
        super().__init__(config, data)
        self.reconstruction = resolve_reconstruction(config, data)
        self.noise = resolve_noise(config.noise, "none", data.kind)
        sizes = [math.prod(data.event_shape), *config.hidden, config.latent_dim]
        last = len(sizes) - 2
        self.encoders = nn.ModuleList(
            nn.Sequential(nn.Linear(n_in, n_out),
                          activation("identity" if k == last else config.activation))
            for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
        )
        # Decoder k rebuilds the encoder's input: x (logits or values) for k = 0, else h_k,
        # which went through the activation.
        self.decoders = nn.ModuleList(
            nn.Sequential(nn.Linear(n_out, n_in),
                          activation("identity" if k == 0 else config.activation))
            for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
        )
        self.register_buffer("phase", torch.tensor(1))

    def layer_of(self, step: int) -> int:
        """The layer pretrained at ``step`` (1-based), or 0 once fine-tuning has begun."""
        layer = step // self.config.pretrain_steps + 1
        return layer if layer <= len(self.encoders) else 0

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for encoder in self.encoders:
            h = encoder(h)
        return h

    def _decoder_output(self, code: torch.Tensor) -> torch.Tensor:
        for decoder in reversed(self.decoders):
            code = decoder(code)
        return code.unflatten(-1, self.data.event_shape)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        output = self._decoder_output(self.encode(x))
        return output.sigmoid() if self.reconstruction == "bce" else output

    def _stack_loss(self, x_in: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        output = self._decoder_output(self.encode(x_in))
        return reconstruction_loss(output, x, self.reconstruction).mean()

    def _layer_loss(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        with torch.no_grad():  # the layers below are frozen
            target = x.flatten(1)
            for encoder in self.encoders[: layer - 1]:
                target = encoder(target)
        h_in = corrupt(target, self.noise, self.config.noise_level)
        output = self.decoders[layer - 1](self.encoders[layer - 1](h_in))
        kind = self.reconstruction if layer == 1 else "mse"
        return reconstruction_loss(output, target, kind).mean()

    def loss(self, batch: Batch, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.training:
            layer = self.layer_of(step)
            self.phase.fill_(layer)
        else:
            layer = int(self.phase)
        x_in = corrupt(batch.x, self.noise, self.config.noise_level)
        if layer == 0:
            phase_loss = stack_loss = self._stack_loss(x_in, batch.x)
        else:
            phase_loss = self._layer_loss(batch.x, layer)
            with torch.no_grad():
                stack_loss = self._stack_loss(x_in, batch.x)
        metrics = {
            "loss": stack_loss.detach(),
            "phase_loss": phase_loss.detach(),
            "pretrain_layer": self.phase.detach().float(),
        }
        return phase_loss, metrics

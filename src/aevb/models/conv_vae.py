"""The convolutional VAE: the VAE's objectives, estimators and evaluation, unchanged, on
strided convolutions down to q(z|x) and pixel-shuffle upsampling back to p(x|z)."""

from __future__ import annotations

from dataclasses import dataclass

from aevb.models.vae import VAE, BaseVAEConfig
from aevb.nn.custom import CustomNetConfig
from aevb.nn.nets import ConvNetConfig

__all__ = ["ConvVAE", "ConvVAEConfig"]


@dataclass(frozen=True)
class ConvVAEConfig(BaseVAEConfig):
    name: str = "conv-vae"
    net: ConvNetConfig | CustomNetConfig = ConvNetConfig(channels=(32, 64), activation="relu")
    """Two halvings take 28x28 images to 64 maps of 7x7 with no padding (three would pad to
    32x32); ReLU, the usual nonlinearity of conv stacks (tanh is the paper's MLP choice). Or
    your own convolutional modules (``--net custom``, ``docs/extending.md``)."""


class ConvVAE(VAE):
    """A ``VAE`` whose ``net`` is a ``ConvNetConfig``: ``vae_nets`` builds the conv encoder and
    decoder, pads and crops any image size (C, H, W), and folds the K samples of evaluation
    into the decoder's batch. Everything else is the VAE's."""

    description = "convolutional VAE: strided convs to q(z|x), pixel-shuffle up to p(x|z)"
    config_class = ConvVAEConfig

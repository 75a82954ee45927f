"""Input corruption for denoising: the encoder sees corrupt(x), the loss compares with clean x.

The three kinds of noise of Vincent et al. (2010, sec. 4.2), each a pure function of x, the
level and a random generator. They act elementwise on any shape; values stay on the data's
scale (masking and salt-and-pepper keep pixels in [0, 1]; Gaussian noise is not clipped, so
its standard deviation is exactly ``level``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aevb.errors import ConfigError, check_choice

__all__ = ["NOISES", "Corruption", "NoiseConfig", "corrupt"]

NOISES = ("none", "masking", "gaussian", "salt-pepper")


@dataclass(frozen=True)
class NoiseConfig:
    """The corruption of a model's input while training (``[model.corruption]``)."""

    noise: str = "none"
    """none | masking | gaussian | salt-pepper; the target of the loss stays the clean x."""
    noise_level: float = 0.25
    """Fraction of pixels masked or salted, or the Gaussian noise's standard deviation."""

    def __post_init__(self) -> None:
        check_choice("corruption.noise", self.noise, NOISES)
        if self.noise_level < 0:
            raise ConfigError(f"corruption.noise_level must be >= 0, got {self.noise_level}")
        if self.noise in ("masking", "salt-pepper") and self.noise_level > 1:
            raise ConfigError(
                f"corruption.noise_level is a fraction for {self.noise}, got {self.noise_level}"
            )


class Corruption:
    """``NoiseConfig`` checked against the data, as a callable x → corrupted x."""

    def __init__(self, config: NoiseConfig, data_kind: str) -> None:
        if config.noise == "salt-pepper" and data_kind == "real":
            raise ConfigError("salt-pepper noise needs data in [0, 1], but this data is real-valued")
        self.noise = config.noise
        self.level = config.noise_level

    @property
    def active(self) -> bool:
        return self.noise != "none" and self.level > 0

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return corrupt(x, self.noise, self.level, generator)

    def __repr__(self) -> str:
        return f"{self.noise} noise at level {self.level:g}" if self.active else "no noise"


def corrupt(x: torch.Tensor, noise: str, level: float,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """A corrupted copy of x (same shape):

    - masking: each value is set to 0 with probability ``level``;
    - gaussian: x + level * eps, eps ~ N(0, 1) elementwise;
    - salt-pepper: each value is, with probability ``level``, replaced by 0 or 1 (even odds);
    - none: x itself.
    """
    if noise == "none" or level == 0:
        return x
    if noise == "gaussian":
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + level * eps
    hit = torch.rand(x.shape, generator=generator, device=x.device) < level
    if noise == "masking":
        return x.masked_fill(hit, 0.0)
    if noise == "salt-pepper":
        salt = torch.rand(x.shape, generator=generator, device=x.device) < 0.5
        return torch.where(hit, salt.to(x.dtype), x)
    raise ConfigError(f"unknown noise {noise!r} (known: {', '.join(NOISES)})")

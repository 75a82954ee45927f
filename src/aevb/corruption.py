"""Input corruption for denoising: the encoder sees corrupt(x), the loss compares with clean x.

The three kinds of noise of Vincent et al. (2010, sec. 4.2), each a pure function of x, the
level and a random generator. They act elementwise on any shape; values stay on the data's
scale (masking and salt-and-pepper keep pixels in [0, 1]; Gaussian noise is not clipped, so
its standard deviation is exactly ``level``).
"""

from __future__ import annotations

import torch

from .config import NOISES as NOISE_SETTINGS
from .errors import ConfigError

__all__ = ["NOISES", "corrupt", "resolve_noise"]

NOISES = tuple(name for name in NOISE_SETTINGS if name != "auto")


def resolve_noise(name: str, default: str, data_kind: str) -> str:
    """``model.noise`` with "auto" replaced by the model's ``default``, checked against the data.

    Salt-and-pepper noise sets pixels to 0 or 1, the extremes of data in [0, 1] only.
    """
    noise = default if name == "auto" else name
    if noise not in NOISES:
        raise ConfigError(f"unknown noise {noise!r} (known: {', '.join(NOISES)})")
    if noise == "salt-pepper" and data_kind == "real":
        raise ConfigError("salt-pepper noise needs data in [0, 1], but this data is real-valued")
    return noise


def corrupt(
    x: torch.Tensor, noise: str, level: float, generator: torch.Generator | None = None
) -> torch.Tensor:
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

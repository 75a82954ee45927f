"""The likelihood and bound keys that every model of the VAE family shares (vae, conv-vae, cvae,
hvae, m2), declared and checked once; flat in ``[model]``, as in older runs (``--beta 4``)."""

from __future__ import annotations

from dataclasses import dataclass

from aevb.errors import ConfigError, check_choice, check_positive
from aevb.nn.heads import LIKELIHOODS

__all__ = ["BoundConfig", "LatentConfig", "check_sizes"]


@dataclass(frozen=True)
class LatentConfig:
    """The keys that lead a config (``aevb models``, config.toml). A config lists this as its
    last base, ``(BoundConfig, LatentConfig)``: a dataclass's fields start with its last base's."""

    name: str = ""
    latent_dim: int = 20
    """Dimensions of z."""


@dataclass(frozen=True)
class BoundConfig:
    likelihood: str = "bernoulli"
    """p(x|z): bernoulli | continuous-bernoulli | gaussian-fixed | gaussian-learned | gaussian-pixel."""
    sigma: float = 1.0
    """Decoder standard deviation for gaussian-fixed, initial value for gaussian-learned."""
    min_sigma: float = 1e-3
    """Lower bound on a learned decoder standard deviation (keeps per-pixel sigma finite)."""
    estimator: str = "analytic"
    """SGVB estimator of the elbo: analytic (the paper's B: closed-form KL) | mc (A: sampled)."""
    samples: int = 1
    """L, the z samples per datapoint in the elbo."""
    beta: float = 1.0
    """Weight on the KL term of the training objective (beta-VAE; 1 is the bound itself)."""
    kl_warmup: float = 0.0
    """Fraction of the run over which the KL weight rises linearly from 0 to beta (0: none)."""
    kl_warmup_steps: int = 0
    """The warm-up given in optimizer steps instead of a fraction (0: none; not with both)."""
    free_bits: float = 0.0
    """lambda: each latent dimension's minibatch KL costs at least this many nats (0: off)."""
    free_bits_per: str = "dimension"
    """What the free-bits floor applies to: dimension | group (each latent group's KL, a
    hierarchy's layer, summed over its dimensions and averaged over the minibatch first, as
    Kingma et al. 2016)."""
    kl_balance: bool = False
    """While warming up, weigh each group's KL by its share of the KL per dimension (Vahdat &
    Kautz 2020): groups that hold little are pushed to the prior less (needs a warm-up)."""

    def __post_init__(self) -> None:
        check_choice("model.likelihood", self.likelihood, tuple(LIKELIHOODS))
        check_choice("model.estimator", self.estimator, ("analytic", "mc"))
        check_positive("model.samples", self.samples)
        if self.sigma <= 0 or self.min_sigma <= 0:
            raise ConfigError("model.sigma and model.min_sigma must be positive")
        if self.beta < 0 or self.free_bits < 0:
            raise ConfigError("model.beta and model.free_bits must be >= 0")
        if not 0 <= self.kl_warmup <= 1:
            raise ConfigError(f"model.kl_warmup is a fraction of the run, got {self.kl_warmup}")
        if self.kl_warmup_steps < 0:
            raise ConfigError(f"model.kl_warmup_steps must be >= 0, got {self.kl_warmup_steps}")
        if self.kl_warmup > 0 and self.kl_warmup_steps > 0:
            raise ConfigError("give the warm-up as model.kl_warmup (a fraction) or as"
                              " model.kl_warmup_steps, not both")
        check_choice("model.free_bits_per", self.free_bits_per, ("dimension", "group"))
        if self.kl_balance and not self.warms_up:
            raise ConfigError("model.kl_balance acts during the KL warm-up: set model.kl_warmup"
                              " or model.kl_warmup_steps")

    @property
    def warms_up(self) -> bool:
        """Whether the KL weight rises from 0 at the start (either kind of warm-up)."""
        return self.kl_warmup > 0 or self.kl_warmup_steps > 0

    @property
    def weighted(self) -> bool:
        """Whether training weighs the bound (beta, warm-up or free bits): not the bound itself."""
        return self.beta != 1 or self.warms_up or self.free_bits > 0


def check_sizes(name: str, sizes: tuple[int, ...]) -> None:
    """Layer sizes must be positive."""
    if any(size <= 0 for size in sizes):
        raise ConfigError(f"model.{name} must hold positive sizes, got {list(sizes)}")

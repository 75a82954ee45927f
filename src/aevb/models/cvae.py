"""The conditional VAE (Sohn, Lee & Yan 2015; Kingma et al. 2014, M2 with the label observed):
q(z|x,c), p(x|z,c) and a prior p(z|c), trained on the SGVB estimate of the conditional ELBO."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.distributions import Distribution

from aevb.errors import ConfigError, check_choice, check_positive
from aevb.inference.objectives import ElboTerms, elbo_terms, importance_sampled, log_weights
from aevb.inference.schedules import Step
from aevb.inference.training import bound_loss
from aevb.models.base import (
    Batch,
    Conditional,
    DataSpec,
    Encoder,
    Generative,
    Likelihood,
    Metrics,
    Model,
)
from aevb.models.bound import BoundConfig, LatentConfig, check_sizes
from aevb.models.vae import vae_nets
from aevb.nn.custom import CustomNetConfig
from aevb.nn.nets import ConvNetConfig, MLPConfig
from aevb.nn.priors import LearnedConditionalPrior, StandardNormal

__all__ = ["CVAE", "CVAEConfig"]


@dataclass(frozen=True)
class CVAEConfig(BoundConfig, LatentConfig):
    name: str = "cvae"
    net: MLPConfig | ConvNetConfig | CustomNetConfig = MLPConfig()
    """The encoder and decoder networks: an MLP (``--net mlp``, the default), strided
    convolutions down and pixel-shuffle blocks up (``--net conv``), as the vae and conv-vae, or
    your own modules (``--net custom``; the decoder reads [z, c])."""
    prior: str = "standard"
    """p(z|c): standard (N(0, I) whatever c) | learned (a Gaussian whose mean and variance an
    MLP computes from c)."""
    prior_hidden: tuple[int, ...] = (64,)
    """Hidden layer sizes of the learned prior's MLP."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("model.latent_dim", self.latent_dim)
        check_choice("model.prior", self.prior, ("standard", "learned"))
        check_sizes("prior_hidden", self.prior_hidden)


class CVAE(Model, Encoder, Generative, Likelihood, Conditional):
    """Conditional VAE: q(z|x,c) and p(x|z,c) on the VAE's networks (``vae.vae_nets``, MLP or
    conv), c joining the encoder's features and z at the decoder's input; prior p(z|c).

    Maximises E_q[log p(x|z,c)] - beta KL(q(z|x,c) || p(z|c)) (estimator A or B, L samples,
    KL warm-up and free bits as for the VAE); the metrics report the unweighted bound, and
    ``log_marginal`` estimates log p(x|c). c is ``batch.c`` where the data brings vectors,
    else the one-hot vector of ``batch.y`` (zeros where a batch has neither). ``decode``
    needs its condition: c = 0 is no value trained on; ``sample(n)`` without one draws each
    sample's class uniformly.
    """

    description = ("conditional VAE (Sohn et al. 2015): q(z|x,c), p(x|z,c), p(z|c) standard or"
                   " learned; c = one-hot label or the data's c")
    config_class = CVAEConfig
    selection = ("elbo", "max")
    metric_names = {
        "loss": ("loss (minimised)", ""),
        "elbo": ("conditional ELBO", "nats"),
        "rec": ("E_q[log p(x|z,c)]", "nats"),
        "kl": ("KL(q(z|x,c) || p(z|c))", "nats"),
        "kl_weight": ("KL weight (warm-up)", ""),
    }

    def __init__(self, config: CVAEConfig, data: DataSpec) -> None:
        super().__init__(config, data)
        self.classes = None if data.condition_dim else data.num_classes
        condition_dim = data.condition_dim or data.num_classes
        if not condition_dim:
            raise ConfigError("the cvae needs a condition: labels (y) or conditioning vectors"
                              " (c_train/c_valid/c_test, or c) in the data")
        self.condition_dim = condition_dim
        self.encoder, self.posterior_head, self.decoder, self.likelihood_head = vae_nets(
            config, data, condition_dim)
        self.standard_prior = StandardNormal(config.latent_dim)
        self.learned_prior = (LearnedConditionalPrior(condition_dim, config.latent_dim,
                                                      config.prior_hidden)
                              if config.prior == "learned" else None)

    # -- the condition ---------------------------------------------------------------------

    def condition_of(self, labels: torch.Tensor) -> torch.Tensor:
        if self.classes is None:
            raise ConfigError("this cvae is conditioned on the data's own vectors c, not on"
                              " class labels")
        return F.one_hot(labels.long(), self.classes).float()

    def condition(self, batch: Batch) -> torch.Tensor:
        """c (B, condition_dim) of a batch: its ``c``, else its labels' one-hot, else zeros (a
        fallback for class-agnostic callers of ``encode``, not a value trained on)."""
        if batch.c is not None:
            return batch.c.float()
        if batch.y is not None and self.classes is not None:
            return self.condition_of(batch.y)
        return batch.x.new_zeros(len(batch.x), self.condition_dim)

    # -- the distributions -----------------------------------------------------------------

    def posterior(self, x: torch.Tensor, c: torch.Tensor) -> Distribution:
        """q(z|x,c) for x (B, *event_shape), c (B, C): batch shape (B,), event (latent_dim,)."""
        return self.posterior_head(torch.cat([self.encoder(x), c.to(x.dtype)], -1))

    def prior(self, c: torch.Tensor) -> Distribution:
        """p(z|c) for c (..., C): batch shape (...), event shape (latent_dim,)."""
        if self.learned_prior is not None:
            return self.learned_prior(c)
        return self.standard_prior().expand(c.shape[:-1])

    def likelihood(self, z: torch.Tensor, c: torch.Tensor) -> Distribution:
        """p(x|z,c) for z (..., D) and c broadcastable to (..., C): batch shape (...)."""
        c = torch.broadcast_to(c.to(z.dtype), (*z.shape[:-1], self.condition_dim))
        return self.likelihood_head(self.decoder(torch.cat([z, c], -1)))

    # -- the contract and the abilities ----------------------------------------------------

    def loss(self, batch: Batch, step: Step) -> tuple[torch.Tensor, Metrics]:
        return bound_loss(self.config, step, self.elbo_terms(batch, self.config.samples))

    def elbo_terms(self, batch: Batch, samples: int = 1) -> ElboTerms:
        c = self.condition(batch)
        return elbo_terms(batch.x, self.posterior(batch.x, c), self.prior(c),
                          lambda z: self.likelihood(z, c), samples, self.config.estimator)

    def log_marginal(self, batch: Batch, samples: int) -> torch.Tensor:
        """log p(x|c) (B,), importance-sampled from q(z|x,c) with K = ``samples``."""
        c = self.condition(batch)
        posterior, prior = self.posterior(batch.x, c), self.prior(c)
        return importance_sampled(
            lambda k: log_weights(batch.x, posterior, prior, lambda z: self.likelihood(z, c), k),
            samples, batch.x.numel(), batch.x.device)

    def encode(self, batch: Batch) -> torch.Tensor:
        return self.posterior(batch.x, self.condition(batch)).mean

    def reconstruct(self, batch: Batch) -> torch.Tensor:
        return self.likelihood(self.encode(batch), self.condition(batch)).mean

    def decode(self, z: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder means at z (..., D) given c broadcastable to (..., C)."""
        if condition is None:
            raise ConfigError("this model decodes z given a condition c: pass condition"
                              f" (..., {self.condition_dim}), such as condition_of(labels)")
        return self.likelihood(z, condition).mean

    def sample(self, n: int, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder means of z ~ p(z|c), c (n, C) or (C,); without one, uniform classes."""
        device = self.standard_prior.loc.device
        if condition is None and self.classes is not None:
            condition = self.condition_of(torch.randint(self.classes, (n,), device=device))
        elif condition is None:
            condition = torch.zeros(self.condition_dim, device=device)
        c = torch.broadcast_to(condition.float().to(device), (n, self.condition_dim))
        return self.decode(self.prior(c).sample(), c)

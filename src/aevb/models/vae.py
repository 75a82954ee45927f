"""The variational autoencoder of Kingma & Welling (2014), with its SGVB estimators, trained by
one of the objectives of ``inference.training`` (the ELBO, the IWAE bound of Burda et al. 2016,
or the paper's baselines of sec. 5: wake-sleep and Monte Carlo EM); with the paper's MLPs or
with convolutional nets (``vae_nets``, chosen by the type of ``config.net``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Protocol

import torch
from torch import nn
from torch.distributions import Distribution

from aevb.errors import ConfigError, check_positive
from aevb.inference import objectives
from aevb.inference.objectives import ElboTerms, elbo_terms, importance_sampled
from aevb.inference.schedules import Step
from aevb.inference.training import OBJECTIVES, Elbo, ElboConfig, ObjectiveConfig, objective_config
from aevb.models.base import (
    Batch,
    Corrupting,
    DataSpec,
    Encoder,
    Generative,
    Likelihood,
    Metrics,
    Model,
    PerExampleState,
    Posterior,
    unconditional,
)
from aevb.models.bound import BoundConfig, LatentConfig, check_sizes
from aevb.nn.bayes import bayesianize_, parameter_kl
from aevb.nn.corruption import Corruption, NoiseConfig
from aevb.nn.custom import CustomNetConfig, check_output_shape, flat_features
from aevb.nn.heads import DecoderHead, DiagonalGaussianHead, decoder_head
from aevb.nn.nets import ConvNetConfig, FoldLeading, MLPConfig, conv_decoder, conv_encoder, mlp
from aevb.nn.priors import StandardNormal

__all__ = ["VAE", "BaseVAEConfig", "VAEConfig", "VAENets", "check_sizes", "custom_decoder",
           "vae_nets"]


@dataclass(frozen=True)
class BaseVAEConfig(BoundConfig, LatentConfig):
    """Every key of the VAE family; each registered config fixes ``name`` and the type of
    ``net`` (the config machinery reads a sub-table by its field's concrete type)."""

    name: str = "vae"
    net: MLPConfig | ConvNetConfig | CustomNetConfig = MLPConfig()
    """The encoder and decoder networks."""
    objective: ObjectiveConfig | str = ElboConfig()
    """How training fits the model (``--objective KIND``, that kind's defaults): elbo (the
    SGVB estimate) | iwae (the K-sample bound) | wake-sleep (Hinton et al. 1995) | mcem
    (Monte Carlo EM with HMC). The last two are not variational bounds: they take no beta,
    warm-up, free bits or corruption."""
    corruption: NoiseConfig = NoiseConfig()
    full_vb: bool = False
    """Kingma & Welling's appendix F: a diagonal Gaussian posterior over the decoder's weights
    as well, prior N(0, I), trained with the same estimator (each example's bound loses
    KL(q(θ) || p(θ)) / N); one weight draw per minibatch; evaluation uses the mean weights."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("model.latent_dim", self.latent_dim)
        objective = objective_config(self.objective, tuple(OBJECTIVES))
        object.__setattr__(self, "objective", objective)  # a kind's name: its defaults
        bound = OBJECTIVES[objective.kind][1].bound
        if self.full_vb and not bound:
            raise ConfigError("model.full_vb trains the decoder's weight posterior on a bound:"
                              " it needs objective elbo or iwae")
        if not bound and (self.weighted or (self.corruption.noise != "none"
                                            and self.corruption.noise_level > 0)):
            raise ConfigError(
                f"model.objective {objective.kind} fits p and q by their own rules, not by a"
                " variational bound: it needs beta 1, kl_warmup 0, free_bits 0 and no corruption"
            )


@dataclass(frozen=True)
class VAEConfig(BaseVAEConfig):
    net: MLPConfig | CustomNetConfig = MLPConfig()
    """The encoder's hidden layers (the paper: one of 500 tanh units); the decoder mirrors them.
    Or your own encoder and decoder modules (``--net custom``, ``docs/extending.md``)."""


class VAENets(NamedTuple):
    encoder: nn.Module
    """x (B, *event_shape) → features (B, F)."""
    posterior_head: DiagonalGaussianHead
    """features → q(z|x), event shape (latent_dim,)."""
    decoder: nn.Module
    """z (..., latent_dim) → the likelihood head's features, any leading shape."""
    likelihood_head: DecoderHead
    """decoder features → p(x|z), batch shape (...), event shape the data's."""


class NetsConfig(Protocol):
    """The keys ``vae_nets`` reads (the VAE family's and the conditional VAE's configs)."""

    @property
    def latent_dim(self) -> int: ...
    @property
    def net(self) -> MLPConfig | ConvNetConfig | CustomNetConfig: ...
    @property
    def likelihood(self) -> str: ...
    @property
    def sigma(self) -> float: ...
    @property
    def min_sigma(self) -> float: ...


def vae_nets(config: NetsConfig, data: DataSpec, condition_dim: int = 0) -> VAENets:
    """The VAE's networks for ``config.net``; with ``condition_dim`` C > 0, those of a
    conditional VAE: the posterior head reads [features, c] and the decoder [z, c].

    An ``MLPConfig`` gives the paper's MLPs (appendix C): hidden layers, the Gaussian head on
    the last, the mirrored decoder and a linear likelihood head on its last hidden layer. A
    ``ConvNetConfig`` gives strided convolutions down (``nets.conv_encoder``) and pixel-shuffle
    blocks up (``nets.conv_decoder``) whose last block emits the likelihood's parameters per
    pixel, so the head has no layer of its own; any image size (C, H, W) works.
    """
    net = config.net
    if isinstance(net, CustomNetConfig):
        return custom_vae_nets(config, net, data, condition_dim)
    if isinstance(net, ConvNetConfig):
        encoder, features = conv_encoder(data.event_shape, net)
        posterior_head = DiagonalGaussianHead(features + condition_dim, config.latent_dim)
        # the head first: the decoder's last block emits its k parameters per value
        likelihood_head = decoder_head(config.likelihood, None, data.event_shape, data.kind,
                                       config.sigma, config.min_sigma)
        decoder = conv_decoder(config.latent_dim + condition_dim, data.event_shape,
                               likelihood_head.params_per_value, net)
        return VAENets(encoder, posterior_head, decoder, likelihood_head)
    # this order of construction fixes the weights a seed gives
    features = math.prod(data.event_shape)
    hidden = list(net.hidden)
    codes = config.latent_dim + condition_dim
    return VAENets(
        nn.Sequential(nn.Flatten(), mlp([features, *hidden], net.activation)),
        DiagonalGaussianHead((hidden[-1] if hidden else features) + condition_dim,
                             config.latent_dim),
        mlp([codes, *reversed(hidden)], net.activation),
        decoder_head(config.likelihood, hidden[0] if hidden else codes,
                     data.event_shape, data.kind, config.sigma, config.min_sigma),
    )


def custom_vae_nets(config: NetsConfig, net: CustomNetConfig, data: DataSpec,
                    condition_dim: int = 0) -> VAENets:
    """The VAE's networks around a user's encoder and decoder (``nn.custom``), each checked
    once on a dummy batch: the posterior head on the encoder's features (and c), the
    likelihood head on the decoder's (or none, where it emits the parameters itself)."""
    encoder = net.encoder.build("model.net.encoder")
    features = flat_features(encoder, torch.zeros(2, *data.event_shape), "encoder",
                             net.encoder.module)
    posterior_head = DiagonalGaussianHead(features + condition_dim, config.latent_dim)
    decoder, likelihood_head = custom_decoder(config, net, data,
                                              config.latent_dim + condition_dim)
    return VAENets(encoder, posterior_head, decoder, likelihood_head)


def custom_decoder(config: NetsConfig, net: CustomNetConfig, data: DataSpec, inputs: int
                   ) -> tuple[FoldLeading, DecoderHead]:
    """A user's decoder of (N, ``inputs``) and the likelihood head on it (none of its own
    where the decoder emits the parameters), checked once on a dummy batch; codes come as
    (L, B, D) and (K, B, D) too, and the decoder sees them as one batch (``FoldLeading``)."""
    decoder = net.decoder.build("model.net.decoder")
    codes = torch.zeros(2, inputs)
    if net.decoder_emits_parameters:
        likelihood_head = decoder_head(config.likelihood, None, data.event_shape, data.kind,
                                       config.sigma, config.min_sigma)
        k, (c, *rest) = likelihood_head.params_per_value, data.event_shape
        check_output_shape(decoder, codes, "decoder", net.decoder.module, (k * c, *rest))
    else:
        decoded = flat_features(decoder, codes, "decoder", net.decoder.module)
        likelihood_head = decoder_head(config.likelihood, decoded, data.event_shape,
                                       data.kind, config.sigma, config.min_sigma)
    return FoldLeading(decoder, 1), likelihood_head


class VAE(Model, Encoder, Posterior, Generative, Likelihood, Corrupting, PerExampleState):
    """Gaussian encoder q(z|x), prior N(0, I), decoder p(x|z) (sec. 3, appendix C), on the
    networks ``vae_nets`` builds for ``config.net``, trained by the objective
    ``config.objective`` names (``inference.training.OBJECTIVES``), which it holds as
    ``self.objective`` (with any state of its own: MCEM's chains).

    The metrics always report the true, unweighted ELBO, which picks the best checkpoint; in
    eval mode (validation) an objective that is no bound (wake-sleep, MCEM) gives way to the
    ELBO. With ``corruption`` the bounds are the denoising bound of Im et al. (2017): the
    encoder sees x~, the likelihood scores the clean x; evaluation encodes x. With
    ``full_vb`` the decoder's weights have a posterior too, and the loss adds their KL / N.
    """

    description = "variational autoencoder (Kingma & Welling 2014): Gaussian q(z|x), N(0,I) prior"
    config_class: ClassVar[type] = VAEConfig
    selection = ("elbo", "max")
    metric_names = {
        "loss": ("loss (minimised)", ""),
        "bound": ("bound trained on (IWAE)", "nats"),
        "elbo": ("ELBO", "nats"),
        "rec": ("E_q[log p(x|z)]", "nats"),
        "kl": ("KL(q(z|x) || p(z))", "nats"),
        "kl_weight": ("KL weight (warm-up)", ""),
        "wake": ("wake phase: log p(x, z), z ~ q(z|x)", "nats"),
        "sleep": ("sleep phase: log q(z'|x'), (z', x') ~ p", "nats"),
        "log_joint": ("log p(x, z) at the HMC chains' states", "nats"),
        "accept": ("HMC acceptance probability", ""),
        "kl_weights": ("KL(q(θ) || p(θ)) / N of the decoder's weights (full VB)", "nats"),
    }

    def __init__(self, config: BaseVAEConfig, data: DataSpec) -> None:
        super().__init__(config, data)
        self.encoder, self.posterior_head, self.decoder, self.likelihood_head = vae_nets(config,
                                                                                         data)
        self.prior = StandardNormal(config.latent_dim)
        self.corruption = Corruption(config.corruption, data.kind)
        if config.full_vb:
            if data.train_size is None:
                raise ConfigError("model.full_vb weighs the weights' KL by 1/N and needs the"
                                  " training set's size")
            self.train_size = data.train_size
            bayesianize_(self.decoder)
            bayesianize_(self.likelihood_head)
        objective = objective_config(config.objective, tuple(OBJECTIVES))
        make = OBJECTIVES[objective.kind][1]
        self.objective = make(objective, config, data.train_size, config.latent_dim)
        self.validation = Elbo(ElboConfig(), config, None, 0)  # for objectives not bounds
        # the objective's state is saved under the VAE's own names, as in runs from before
        # objectives were modules (checkpoint.load_weights matches names before loading)
        self.register_state_dict_post_hook(_objective_state_as_own)
        self.register_load_state_dict_pre_hook(_own_state_to_objective)

    def posterior(self, x: torch.Tensor) -> Distribution:
        """q(z|x): batch shape (B,), event shape (latent_dim,)."""
        return self.posterior_head(self.encoder(x))

    def likelihood(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for z (..., latent_dim): batch shape (...), event shape the data's."""
        return self.likelihood_head(self.decoder(z))

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(z) + log p(x|z) in nats, (..., B), for x (B, *event_shape), z (..., B, D)."""
        return self.prior().log_prob(z) + self.likelihood(z).log_prob(x)

    def per_example_state(self) -> list[torch.Tensor]:
        return [getattr(self.objective, name) for name in self.objective.per_example]

    def loss(self, batch: Batch, step: Step) -> tuple[torch.Tensor, Metrics]:
        objective = self.objective if self.training or self.objective.bound else self.validation
        loss, metrics = objective(self, batch, step)
        if self.config.full_vb and self.training:  # appendix F: the weights' share of the bound
            kl_weights = (parameter_kl(self.decoder) + parameter_kl(self.likelihood_head)
                          ) / self.train_size
            loss = loss + kl_weights
            metrics["kl_weights"] = kl_weights.detach()
        return loss, metrics

    def elbo_terms(self, batch: Batch, samples: int = 1) -> ElboTerms:
        return elbo_terms(batch.x, self.posterior(batch.x), self.prior(), self.likelihood,
                          samples, self.config.estimator)

    def log_weights(self, batch: Batch, samples: int) -> torch.Tensor:
        """log p(x, z_k) - log q(z_k|x), (K, B), z_k ~ q(z|x)."""
        return self._weights_of(batch.x)(samples)

    def log_marginal(self, batch: Batch, samples: int) -> torch.Tensor:
        return importance_sampled(self._weights_of(batch.x), samples, batch.x.numel(),
                                  batch.x.device)

    def _weights_of(self, x: torch.Tensor) -> Callable[[int], torch.Tensor]:
        """k ↦ k fresh log-weights (k, B) of x, x encoded once for every call (the fast path
        evaluation takes is ``aevb.evaluation.speed``)."""
        posterior, prior = self.posterior(x), self.prior()
        return lambda k: objectives.log_weights(x, posterior, prior, self.likelihood, k)

    def encode(self, batch: Batch) -> torch.Tensor:
        return self.posterior(batch.x).mean

    def posterior_of(self, batch: Batch) -> Distribution:
        return self.posterior(batch.x)

    def decode(self, z: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        unconditional(condition)
        return self.likelihood(z).mean

    def reconstruct(self, batch: Batch) -> torch.Tensor:
        return self.decode(self.encode(batch))

    def sample(self, n: int, condition: torch.Tensor | None = None) -> torch.Tensor:
        unconditional(condition)
        return self.decode(self.prior().sample((n,)))


def _objective_state_as_own(module: nn.Module, state: dict[str, Any], prefix: str,
                            _: Any) -> None:
    for key in [k for k in state if k.startswith(f"{prefix}objective.")]:
        state[prefix + key.removeprefix(f"{prefix}objective.")] = state.pop(key)


def _own_state_to_objective(module: nn.Module, state: dict[str, Any], prefix: str,
                            *_: Any) -> None:
    for name in dict(module.objective.named_buffers()):  # type: ignore[union-attr]
        if prefix + name in state:
            state[f"{prefix}objective.{name}"] = state.pop(prefix + name)

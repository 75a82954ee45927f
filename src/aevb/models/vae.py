"""The variational autoencoder of Kingma & Welling (2014), with its SGVB estimators, trained on
the ELBO, on the importance-weighted bound (IWAE, Burda et al. 2016), or by the paper's two
baselines (sec. 5): the wake-sleep algorithm (Hinton et al. 1995) and Monte Carlo EM with an
HMC posterior sampler; with the paper's MLPs or with convolutional nets (``vae_nets``, chosen
by the type of ``config.net``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Protocol

import torch
from torch import nn
from torch.distributions import Distribution

from aevb.errors import ConfigError, check_choice, check_positive
from aevb.inference.hmc import adapt_step_size, hmc_step
from aevb.inference.objectives import (
    ElboTerms,
    elbo_terms,
    free_bits_kl,
    importance_sampled,
    iwae_bound,
    kl_per_dimension,
)
from aevb.inference.schedules import Step, linear_warmup
from aevb.models.base import (
    Batch,
    Corrupting,
    DataSpec,
    Encoder,
    Generative,
    Likelihood,
    Metrics,
    Model,
)
from aevb.nn.bayes import bayesianize_, parameter_kl
from aevb.nn.corruption import Corruption, NoiseConfig
from aevb.nn.heads import (
    LIKELIHOODS,
    DecoderHead,
    DiagonalGaussianHead,
    compiled,
    decoder_head,
    log_likelihood_of,
)
from aevb.nn.nets import ConvNetConfig, MLPConfig, conv_decoder, conv_encoder, mlp
from aevb.nn.priors import StandardNormal

__all__ = ["VAE", "BaseVAEConfig", "VAEConfig", "VAENets", "check_bound_keys", "check_sizes",
           "vae_nets"]


OBJECTIVES = ("elbo", "iwae", "wake-sleep", "mcem")
"""The ways ``VAE`` can be trained (``model.objective``)."""


@dataclass(frozen=True)
class BaseVAEConfig:
    """Every key of the VAE family; each registered config fixes ``name`` and the type of
    ``net`` (the config machinery reads a sub-table by its field's concrete type)."""

    name: str = "vae"
    latent_dim: int = 20
    """Dimensions of z."""
    net: MLPConfig | ConvNetConfig = MLPConfig()
    """The encoder and decoder networks."""
    likelihood: str = "bernoulli"
    """p(x|z): bernoulli | continuous-bernoulli | gaussian-fixed | gaussian-learned | gaussian-pixel."""
    sigma: float = 1.0
    """Decoder standard deviation for gaussian-fixed, initial value for gaussian-learned."""
    min_sigma: float = 1e-3
    """Lower bound on a learned decoder standard deviation (keeps per-pixel sigma finite)."""
    objective: str = "elbo"
    """How training fits the model: elbo (the SGVB estimate) | iwae (the K-sample bound) |
    wake-sleep (Hinton et al. 1995) | mcem (Monte Carlo EM with HMC). The last two are not
    variational bounds: they take no beta, warm-up, free bits or corruption."""
    estimator: str = "analytic"
    """SGVB estimator of the elbo: analytic (the paper's B: closed-form KL) | mc (A: sampled)."""
    samples: int = 1
    """L, the z samples per datapoint in the elbo objective."""
    iw_samples: int = 5
    """K, the importance samples per datapoint in the iwae objective."""
    beta: float = 1.0
    """Weight on the KL term of the training objective (beta-VAE; 1 is the bound itself)."""
    kl_warmup: float = 0.0
    """Fraction of the run over which the KL weight rises linearly from 0 to beta (0: none)."""
    free_bits: float = 0.0
    """lambda: each latent dimension's minibatch KL costs at least this many nats (0: off)."""
    corruption: NoiseConfig = NoiseConfig()
    hmc_leapfrog_steps: int = 10
    """mcem: leapfrog steps per HMC transition (the paper: 10)."""
    hmc_step_size: float = 0.1
    """mcem: the initial leapfrog step size, then tuned at every step (shared by the chains)."""
    hmc_target_accept: float = 0.9
    """mcem: the acceptance probability each chain's step size is tuned to (the paper: 90 %)."""
    hmc_adapt_rate: float = 0.05
    """mcem: gain of the update log eps += rate (mean acceptance - target), once per
    transition; at a target of 0.9 the step size grows by at most rate/10 in log per transition."""
    hmc_transitions: int = 1
    """mcem: HMC transitions of each minibatch example's chain per training step."""
    full_vb: bool = False
    """Kingma & Welling's appendix F: a diagonal Gaussian posterior over the decoder's weights
    as well, prior N(0, I), trained with the same estimator (each example's bound loses
    KL(q(θ) || p(θ)) / N); one weight draw per minibatch; evaluation uses the mean weights."""

    def __post_init__(self) -> None:
        check_positive("model.latent_dim", self.latent_dim)
        check_choice("model.objective", self.objective, OBJECTIVES)
        check_positive("model.iw_samples", self.iw_samples)
        check_bound_keys(self)
        for key in ("hmc_leapfrog_steps", "hmc_step_size", "hmc_adapt_rate", "hmc_transitions"):
            check_positive(f"model.{key}", getattr(self, key))
        if not 0 < self.hmc_target_accept < 1:
            raise ConfigError(f"model.hmc_target_accept is a probability in (0, 1), got"
                              f" {self.hmc_target_accept}")
        if self.full_vb and self.objective not in ("elbo", "iwae"):
            raise ConfigError("model.full_vb trains the decoder's weight posterior on a bound:"
                              " it needs objective elbo or iwae")
        if self.objective in ("wake-sleep", "mcem") and (
            self.beta != 1 or self.kl_warmup > 0 or self.free_bits > 0
            or (self.corruption.noise != "none" and self.corruption.noise_level > 0)
        ):
            raise ConfigError(
                f"model.objective {self.objective} fits p and q by their own rules, not by a"
                " variational bound: it needs beta 1, kl_warmup 0, free_bits 0 and no corruption"
            )


class BoundKeys(Protocol):
    """The keys of a model trained on a variational bound, checked by ``check_bound_keys``."""

    @property
    def likelihood(self) -> str: ...
    @property
    def estimator(self) -> str: ...
    @property
    def samples(self) -> int: ...
    @property
    def sigma(self) -> float: ...
    @property
    def min_sigma(self) -> float: ...
    @property
    def beta(self) -> float: ...
    @property
    def free_bits(self) -> float: ...
    @property
    def kl_warmup(self) -> float: ...


def check_bound_keys(config: BoundKeys) -> None:
    """The likelihood, estimator and KL-weighting keys every VAE-family config shares."""
    check_choice("model.likelihood", config.likelihood, tuple(LIKELIHOODS))
    check_choice("model.estimator", config.estimator, ("analytic", "mc"))
    check_positive("model.samples", config.samples)
    if config.sigma <= 0 or config.min_sigma <= 0:
        raise ConfigError("model.sigma and model.min_sigma must be positive")
    if config.beta < 0 or config.free_bits < 0:
        raise ConfigError("model.beta and model.free_bits must be >= 0")
    if not 0 <= config.kl_warmup <= 1:
        raise ConfigError(f"model.kl_warmup is a fraction of the run, got {config.kl_warmup}")


def check_sizes(name: str, sizes: tuple[int, ...]) -> None:
    """Layer sizes must be positive."""
    if any(size <= 0 for size in sizes):
        raise ConfigError(f"model.{name} must hold positive sizes, got {list(sizes)}")


@dataclass(frozen=True)
class VAEConfig(BaseVAEConfig):
    net: MLPConfig = MLPConfig()
    """The encoder's hidden layers (the paper: one of 500 tanh units); the decoder mirrors them."""


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
    def net(self) -> MLPConfig | ConvNetConfig: ...
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
    if isinstance(net, ConvNetConfig):
        encoder, features = conv_encoder(data.event_shape, net)
        posterior_head = DiagonalGaussianHead(features + condition_dim, config.latent_dim)
        # the head first: the decoder's last block emits its k parameters per value
        likelihood_head = decoder_head(config.likelihood, None, data.event_shape, data.kind,
                                       config.sigma, config.min_sigma)
        decoder = conv_decoder(config.latent_dim + condition_dim, data.event_shape,
                               likelihood_head.params_per_value, net)
        return VAENets(encoder, posterior_head, decoder, likelihood_head)
    # built in this order so that a seed gives the weights it gave before conv nets existed
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


def weighted_bound_loss(
    objective: torch.Tensor, terms: ElboTerms, weight: float, free_bits: float, warming: bool
) -> tuple[torch.Tensor, Metrics]:
    """The loss -mean_b objective_b and the metrics of the true, unweighted bound.

    ``objective`` (B,) is the bound trained on, its KL (or log-ratio) already weighted by
    ``weight``; with ``free_bits`` > 0 each latent dimension's minibatch KL (``terms.kl``)
    costs at least that many nats (exact for the ELBO; for IWAE the same correction is added
    to the bound). Metrics: loss, elbo, rec, kl, and kl_weight while ``warming`` up.
    """
    loss = -objective.mean()
    if free_bits > 0:
        kl = torch.cat(list(terms.kl.values()), -1)
        loss = loss + weight * (free_bits_kl(kl, free_bits) - kl.mean(0).sum())
    metrics = _elbo_metrics(loss, terms)
    if warming:
        metrics["kl_weight"] = torch.tensor(weight, device=objective.device)
    return loss, metrics


class VAE(Model, Encoder, Generative, Likelihood, Corrupting):
    """Gaussian encoder q(z|x), prior N(0, I), decoder p(x|z) (sec. 3, appendix C), on the
    networks ``vae_nets`` builds for ``config.net``.

    Training maximises ``objective``: the SGVB estimate of the ELBO (estimator A or B with L
    samples) or the IWAE bound with K samples, with the KL (for iwae, log p(z) - log q(z|x))
    weighted by beta times the warm-up weight, and each dimension's KL floored at
    ``free_bits`` nats (for iwae the same floor is added to the bound as a correction; it is
    exact for the elbo). The metrics always report the true, unweighted ELBO, which picks the
    best checkpoint. With ``corruption`` the objective is the denoising bound of Im et al.
    (2017): the encoder sees x~, the likelihood scores the clean x; evaluation encodes x.

    The paper's baselines (sec. 5) train the same networks by other rules, each a loss whose
    gradients reach the generative model (decoder, likelihood head) and the recognition model
    (encoder, posterior head) separately, so one optimizer step updates both:

    - ``wake-sleep`` (Hinton et al. 1995): wake, maximise log p(x, z) at z ~ q(z|x), not
      reparameterised; sleep, maximise log q(z'|x') at a dream z' ~ p(z), x' ~ p(x|z').
    - ``mcem``: Monte Carlo EM. Each training example keeps a persistent HMC chain (buffers
      ``chains`` (N, D), and the step size ``hmc_step``, in the checkpoint, so a resumed run
      is exact) targeting p(z|x) ∝ p(z) p(x|z) under the current decoder; a step runs
      ``hmc_transitions`` transitions of the batch's chains (the shared step size tuned to a
      mean acceptance of ``hmc_target_accept``) and maximises log p(x, z) at their states. q(z|x) is fitted to
      the same states by maximum likelihood, which changes nothing of the EM updates of p
      but gives an ELBO to report and a proposal for importance sampling.

    Both report the true ELBO of the current q and p; in eval mode (validation) they run no
    phases and no HMC, and the loss is -ELBO.
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
    chains: torch.Tensor
    """mcem only: each training example's HMC state (N, latent_dim)."""
    hmc_step: torch.Tensor
    """mcem only: the leapfrog step size, shared by the chains and tuned at every training
    step to the batch's mean acceptance (a chain is visited once per epoch: tuning each
    chain's own step would take hundreds of epochs)."""

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
        if config.objective == "mcem":
            if data.train_size is None:
                raise ConfigError("objective mcem keeps one HMC chain per training example and"
                                  " needs the training set's size")
            self.register_buffer("chains", torch.randn(data.train_size, config.latent_dim))
            self.register_buffer("hmc_step", torch.tensor(config.hmc_step_size))

    def posterior(self, x: torch.Tensor) -> Distribution:
        """q(z|x): batch shape (B,), event shape (latent_dim,)."""
        return self.posterior_head(self.encoder(x))

    def likelihood(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for z (..., latent_dim): batch shape (...), event shape the data's."""
        return self.likelihood_head(self.decoder(z))

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(z) + log p(x|z) in nats, (..., B), for x (B, *event_shape), z (..., B, D)."""
        return self.prior().log_prob(z) + self.likelihood(z).log_prob(x)

    def loss(self, batch: Batch, step: Step) -> tuple[torch.Tensor, Metrics]:
        config = self.config
        if self.training and config.objective == "wake-sleep":
            return self._wake_sleep(batch.x)
        if self.training and config.objective == "mcem":
            return self._mcem(batch)
        loss, metrics = self._bound_loss(batch, step)
        if config.full_vb and self.training:  # appendix F: the weights' share of the bound
            kl_weights = (parameter_kl(self.decoder) + parameter_kl(self.likelihood_head)
                          ) / self.train_size
            loss = loss + kl_weights
            metrics["kl_weights"] = kl_weights.detach()
        return loss, metrics

    def _bound_loss(self, batch: Batch, step: Step) -> tuple[torch.Tensor, Metrics]:
        """The elbo or iwae objective (weighted) and its metrics."""
        config = self.config
        weight = config.beta * linear_warmup(step, config.kl_warmup)
        posterior, prior = self.posterior(self.corruption(batch.x)), self.prior()
        if config.objective != "iwae":  # wake-sleep and mcem evaluate the elbo
            terms = elbo_terms(batch.x, posterior, prior, self.likelihood, config.samples,
                               config.estimator)
            return weighted_bound_loss(terms.rec - weight * terms.kl_total, terms, weight,
                                       config.free_bits, config.kl_warmup > 0)
        z = posterior.rsample((config.iw_samples,))  # (K, B, D)
        log_px_z = self.likelihood(z).log_prob(batch.x)
        log_ratio = prior.log_prob(z) - posterior.log_prob(z)
        terms = ElboTerms(log_px_z.mean(0), {"z": kl_per_dimension(posterior, prior, z)})
        loss, metrics = weighted_bound_loss(iwae_bound(log_px_z + weight * log_ratio), terms,
                                            weight, config.free_bits, config.kl_warmup > 0)
        metrics["bound"] = iwae_bound(log_px_z + log_ratio).mean().detach()
        return loss, metrics

    def _wake_sleep(self, x: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        """-(mean wake + mean sleep): wake, log p(x, z) at z ~ q(z|x) drawn without
        reparameterisation (gradients reach p only); sleep, log q(z'|x') at (z', x') drawn
        from p (gradients reach q only)."""
        posterior, prior = self.posterior(x), self.prior()
        z = posterior.sample()  # (B, D), no path back to the encoder
        wake = self.log_joint(x, z)
        with torch.no_grad():
            dream_z = prior.sample((len(x),))
            dream_x = self.likelihood(dream_z).sample()  # a sample, not the decoder's mean
        sleep = self.posterior(dream_x).log_prob(dream_z)
        loss = -(wake.mean() + sleep.mean())
        # the ELBO of the current q and p, from the wake phase's z: no extra decoder pass
        terms = ElboTerms(wake - prior.log_prob(z),
                          {"z": kl_per_dimension(posterior, prior, z.unsqueeze(0))})
        return loss, {**_elbo_metrics(loss, terms), "wake": wake.mean().detach(),
                      "sleep": sleep.mean().detach()}

    def _mcem(self, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        """Monte Carlo EM: E-step, HMC transitions of the batch's chains toward p(z|x); M-step,
        -mean log p(x, z) at the chains' states (gradients reach p only); plus -mean
        log q(z|x) at the same states (gradients reach q only)."""
        if batch.indices is None:
            raise ConfigError("objective mcem needs each example's index in the training split"
                              " (batch.indices) to find its HMC chain")
        z, accept = self._advance_chains(batch.x, batch.indices)
        posterior, prior = self.posterior(batch.x), self.prior()
        log_joint = self.log_joint(batch.x, z)
        fit_q = posterior.log_prob(z)
        loss = -(log_joint.mean() + fit_q.mean())
        with torch.no_grad():
            terms = elbo_terms(batch.x, posterior, prior, self.likelihood, 1, "analytic")
        return loss, {**_elbo_metrics(loss, terms), "log_joint": log_joint.mean().detach(),
                      "accept": accept.mean()}

    def _advance_chains(self, x: torch.Tensor, indices: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the chains of examples ``indices`` for ``hmc_transitions`` HMC transitions,
        adapting their step sizes, and store them; returns (states (B, D), the mean
        acceptance probability per chain (B,))."""
        config = self.config
        chains, step_size = self.chains[indices], self.hmc_step
        accept = torch.zeros(len(indices), device=chains.device)
        # accept/reject compares energies: in float32 even inside training's bf16 autocast
        with torch.autocast(x.device.type, enabled=False):
            x = x.to(chains.dtype)
            for _ in range(config.hmc_transitions):
                step = hmc_step(lambda z: self.log_joint(x, z), chains, step_size,
                                config.hmc_leapfrog_steps)
                step_size = adapt_step_size(step_size, step.accept_prob.mean(),
                                            config.hmc_target_accept, config.hmc_adapt_rate)
                chains, accept = step.z, accept + step.accept_prob
        self.chains[indices] = chains
        self.hmc_step.copy_(step_size)
        return chains, accept / config.hmc_transitions

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
        """k ↦ k fresh log-weights (k, B) of x: x is encoded once for every call, a Bernoulli
        head scores x without building p(x|z) (``heads.log_likelihood_of``), and inside
        ``heads.compiled_kernels`` everything after the draw runs compiled (``heads.compiled``:
        the draws stay eager, from the same random stream, so compiling changes the estimate
        by float rounding only)."""
        posterior, prior = self.posterior(x), self.prior()
        log_px_given = log_likelihood_of(self.likelihood_head, x)

        def log_weights(z: torch.Tensor) -> torch.Tensor:
            features = _decoded(self.decoder, z)
            return log_px_given(features) + prior.log_prob(z) - posterior.log_prob(z)

        weigh = compiled(log_weights)
        return lambda k: weigh(posterior.rsample((k,)))

    def encode(self, batch: Batch) -> torch.Tensor:
        return self.posterior(batch.x).mean

    def decode(self, z: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        _unconditional(condition)
        return self.likelihood(z).mean

    def reconstruct(self, batch: Batch) -> torch.Tensor:
        return self.decode(self.encode(batch))

    def sample(self, n: int, condition: torch.Tensor | None = None) -> torch.Tensor:
        _unconditional(condition)
        return self.decode(self.prior().sample((n,)))


def _decoded(net: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """``net(z)``; while torch.compile traces it, an ``nn.Sequential``'s linear layers as a
    matmul and a bias added apart, which Inductor then adds inside the kernel of the
    activation after it (a compiled ``addmm`` writes the bias over its whole output first,
    and the matmul adds onto it: one more pass over every hidden layer). Under autocast as
    it is: a bfloat16 matmul's output rounded before its bias would round twice."""
    if (not (torch.compiler.is_compiling() and isinstance(net, nn.Sequential))
            or torch.is_autocast_enabled(z.device.type)):
        return net(z)
    for layer in net:
        if type(layer) is nn.Linear and layer.bias is not None:
            z = torch.matmul(z, layer.weight.T) + layer.bias
        else:
            z = layer(z)
    return z


def _elbo_metrics(loss: torch.Tensor, terms: ElboTerms) -> Metrics:
    """loss, and the ELBO's parts as the elbo objective reports them (batch means)."""
    return {"loss": loss.detach(), "elbo": terms.elbo.mean().detach(),
            "rec": terms.rec.mean().detach(), "kl": terms.kl_total.mean().detach()}


def _unconditional(condition: torch.Tensor | None) -> None:
    if condition is not None:
        raise ConfigError("this model is unconditional: it takes no condition")

"""A hierarchical VAE with n stochastic layers z1 … zn, inferred bottom-up (Burda et al.
2016's two-layer VAE and IWAE) or top-down (the ladder VAE of Sønderby et al. 2016).

The generative model is p(x|z1) p(z1|z2) … p(z_{n-1}|zn) p(zn), p(zn) = N(0, I), each
conditional a diagonal Gaussian from a small MLP. The ELBO has one KL part per layer, named
"z1" … "zn", each per dimension (B, D_l).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import nn
from torch.distributions import Independent, Normal

from aevb.errors import ConfigError, check_choice
from aevb.inference.objectives import ElboTerms, importance_sampled, kl_per_dimension
from aevb.inference.schedules import Step
from aevb.inference.training import ElboConfig, IWAEConfig, bound_loss, objective_config
from aevb.models.base import (
    Batch,
    DataSpec,
    Encoder,
    Generative,
    Hierarchical,
    Likelihood,
    Metrics,
    Model,
    unconditional,
)
from aevb.models.bound import BoundConfig, check_sizes
from aevb.models.vae import VAE, vae_nets
from aevb.nn.heads import DiagonalGaussianHead
from aevb.nn.nets import MLPConfig, mlp
from aevb.nn.priors import StandardNormal

__all__ = ["HVAE", "HVAEConfig"]


@dataclass(frozen=True)
class _Layers:  # the leading keys, as ``bound.LatentConfig`` is the vae's
    name: str = "hvae"
    latent_dims: tuple[int, ...] = (100, 50)
    """Dimensions of z1 (next to x) … zn (the top); their count is the number of layers n."""


@dataclass(frozen=True)
class HVAEConfig(BoundConfig, _Layers):
    """The bound keys (``BoundConfig``) as the vae's, with ``estimator`` analytic: each KL in
    closed form given the sampled parent wherever that is unbiased (top-down; the top layer),
    and ``samples`` L draws of the whole hierarchy."""

    net: MLPConfig = MLPConfig(hidden=(200, 200))
    """The x → z1 encoder's hidden layers; the z1 → x decoder mirrors them (Burda et al.)."""
    layer_hidden: tuple[int, ...] = (100, 100)
    """Hidden layers of the MLPs between stochastic layers, up and (mirrored) down."""
    inference: str = "bottom-up"
    """bottom-up: q(z1|x) q(z2|z1) … | top-down: the ladder VAE's q(zn|x) … q(z1|z2, x), each
    the precision-weighted merge of a bottom-up Gaussian and the prior p(z_l|z_{l+1})."""
    objective: ElboConfig | IWAEConfig | str = ElboConfig()
    """What training maximises: elbo (the SGVB estimate) | iwae (the K-sample bound)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.latent_dims:
            raise ConfigError("model.latent_dims must name at least one layer's size")
        check_sizes("latent_dims", self.latent_dims)
        check_sizes("layer_hidden", self.layer_hidden)
        check_choice("model.inference", self.inference, ("bottom-up", "top-down"))
        object.__setattr__(self, "objective", objective_config(self.objective, ("elbo", "iwae")))

    @property
    def latent_dim(self) -> int:
        """The size of z1: the code ``encode`` gives and ``decode`` takes."""
        return self.latent_dims[0]


class Layer(NamedTuple):
    """One stochastic layer of a pass: q(z_l|·), p(z_l|z_{l+1}) and the value of z_l."""

    posterior: Independent
    prior: Independent
    z: torch.Tensor
    """(K, B, D_l) drawn by ``rsample``, or (B, D_l): the mean of the posterior."""


def precision_weighted(term: Independent, prior: Independent) -> Independent:
    """The normalised product N(mu_hat, s_hat^2) N(mu_p, s_p^2) (Sønderby et al. 2016, eq. 17):
    variance 1 / (s_hat^-2 + s_p^-2), mean (mu_hat s_hat^-2 + mu_p s_p^-2) times it."""
    a, b = term.base_dist, prior.base_dist
    precision_a, precision_b = a.scale.pow(-2), b.scale.pow(-2)
    variance = 1 / (precision_a + precision_b)
    loc = (a.loc * precision_a + b.loc * precision_b) * variance
    return Independent(Normal(loc, variance.sqrt()), 1)


class HVAE(Model, Encoder, Generative, Likelihood, Hierarchical):
    """Hierarchical VAE: ``encode``/``decode`` speak z1 (the layer next to x); ``sample`` is
    ancestral from zn. Training and metrics follow the vae (``weighted_bound_loss``), with one
    ``kl_z<l>`` metric per layer."""

    description = "hierarchical VAE: n Gaussian layers, bottom-up or top-down (ladder) inference"
    config_class: ClassVar[type] = HVAEConfig
    selection = ("elbo", "max")

    def __init__(self, config: HVAEConfig, data: DataSpec) -> None:
        super().__init__(config, data)
        dims = config.latent_dims
        # the x <-> z1 nets are the vae's, built in its order (one layer is the vae)
        self.encoder, first_head, self.decoder, self.likelihood_head = vae_nets(config, data)
        top_down = config.inference == "top-down"
        inputs = [first_head.linear.in_features]  # the features each up-head reads
        self.up = nn.ModuleList()
        for below in range(len(dims) - 1):  # bottom-up: z_below ->; top-down: d_below ->
            sizes = [inputs[-1] if top_down else dims[below], *config.layer_hidden]
            self.up.append(mlp(sizes, config.net.activation))
            inputs.append(sizes[-1])
        self.up_heads = nn.ModuleList([first_head] + [
            DiagonalGaussianHead(i, d) for i, d in zip(inputs[1:], dims[1:], strict=True)])
        hidden = [*reversed(config.layer_hidden)]
        self.down = nn.ModuleList(  # down[l]: z_{l+1} -> p(z_l|z_{l+1}), 0-based
            nn.Sequential(mlp([above, *hidden], config.net.activation),
                          DiagonalGaussianHead(hidden[-1] if hidden else above, d))
            for d, above in zip(dims[:-1], dims[1:], strict=True))
        self.prior = StandardNormal(dims[-1])
        self.names = [f"z{i + 1}" for i in range(len(dims))]
        self.metric_names = {**VAE.metric_names, "kl": ("KL, all layers", "nats"),
                             **{f"kl_{n}": (f"KL of layer {n}", "nats") for n in self.names}}

    def likelihood(self, z1: torch.Tensor) -> Independent:
        """p(x|z1) for z1 (..., D_1): batch shape (...), event shape the data's."""
        return self.likelihood_head(self.decoder(z1))

    def layers(self, x: torch.Tensor, samples: int | None) -> list[Layer]:
        """One pass of inference, z1 first: ``samples`` = K draws of the whole hierarchy,
        (K, B, D_l) per layer, or with ``None`` every layer at its posterior mean given its
        parent's mean, (B, D_l)."""
        return self._layers_from(self.encoder(x), samples)

    def _layers_from(self, features: torch.Tensor, samples: int | None) -> list[Layer]:
        """``layers`` from the encoder's features of x (B, F)."""
        n = len(self.names)

        def draw(q: Independent, first: bool) -> torch.Tensor:
            if samples is None:
                return q.mean
            return q.rsample((samples,)) if first else q.rsample()

        if self.config.inference == "bottom-up":
            posteriors: list[Independent] = []
            zs: list[torch.Tensor] = []
            for i in range(n):
                if i:
                    features = self.up[i - 1](zs[-1])
                posteriors.append(self.up_heads[i](features))
                zs.append(draw(posteriors[-1], i == 0))
            priors = [self.down[i](zs[i + 1]) for i in range(n - 1)] + [self.prior()]
        else:
            terms = [self.up_heads[0](features)]
            for up, head in zip(self.up, list(self.up_heads)[1:], strict=True):
                features = up(features)
                terms.append(head(features))
            posteriors, priors, zs = [terms[-1]], [self.prior()], [draw(terms[-1], True)]
            for i in reversed(range(n - 1)):
                priors.insert(0, self.down[i](zs[0]))
                posteriors.insert(0, precision_weighted(terms[i], priors[0]))
                zs.insert(0, draw(posteriors[0], False))
        return [Layer(q, p, z) for q, p, z in zip(posteriors, priors, zs, strict=True)]

    def kl_parts(self, layers: list[Layer], analytic: bool) -> dict[str, torch.Tensor]:
        """Each layer's KL per dimension (B, D_l), averaged over the samples.

        In closed form given the sampled parent only where that parent was drawn before z_l
        (top-down, and the top layer): bottom-up, z_{l+1} is drawn from q(z_{l+1}|z_l), so
        KL(q(z_l|z_{l-1}) || p(z_l|z_{l+1})) at that z_{l+1} is biased; those are sampled.
        """
        top_down = self.config.inference == "top-down"
        parts = {}
        for i, (name, layer) in enumerate(zip(self.names, layers, strict=True)):
            closed = analytic and (top_down or i == len(layers) - 1)
            kl = kl_per_dimension(layer.posterior, layer.prior, layer.z, closed)
            parts[name] = kl.mean(0) if kl.dim() == 3 else kl
        return parts

    def _log_ratio(self, layers: list[Layer]) -> torch.Tensor:
        """sum_l log p(z_l|z_{l+1}) - log q(z_l|·), (K, B)."""
        return torch.stack([layer.prior.log_prob(layer.z) - layer.posterior.log_prob(layer.z)
                            for layer in layers]).sum(0)

    def loss(self, batch: Batch, step: Step) -> tuple[torch.Tensor, Metrics]:
        config = self.config
        if isinstance(config.objective, IWAEConfig):
            layers = self.layers(batch.x, config.objective.iw_samples)
            log_px_z = self.likelihood(layers[0].z).log_prob(batch.x)
            terms = ElboTerms(log_px_z.mean(0), self.kl_parts(layers, True))
            loss, metrics = bound_loss(config, step, terms, (log_px_z, self._log_ratio(layers)))
        else:
            terms = self.elbo_terms(batch, config.samples)
            loss, metrics = bound_loss(config, step, terms)
        metrics.update({f"kl_{name}": part.sum(-1).mean().detach()
                        for name, part in terms.kl.items()})
        return loss, metrics

    def elbo_terms(self, batch: Batch, samples: int = 1) -> ElboTerms:
        """The ELBO E_q[log p(x|z1)] - sum_l KL_l from L = ``samples`` draws of the hierarchy."""
        layers = self.layers(batch.x, samples)
        rec = self.likelihood(layers[0].z).log_prob(batch.x).mean(0)
        return ElboTerms(rec, self.kl_parts(layers, self.config.estimator == "analytic"))

    def log_marginal(self, batch: Batch, samples: int) -> torch.Tensor:
        draw = self.proposal(batch.x)

        def log_weights(k: int) -> torch.Tensor:
            z1, log_ratio = draw(k)
            return self.likelihood(z1).log_prob(batch.x) + log_ratio

        return importance_sampled(log_weights, samples, batch.x.numel(), batch.x.device)

    def proposal(self, x: torch.Tensor) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
        """k ↦ k draws of the whole hierarchy from q given x, x encoded once for every call:
        z1 (k, B, D_1) and sum_l log p(z_l|z_{l+1}) - log q(z_l|·) (k, B)."""
        features = self.encoder(x)

        def draw(k: int) -> tuple[torch.Tensor, torch.Tensor]:
            layers = self._layers_from(features, k)
            return layers[0].z, self._log_ratio(layers)

        return draw

    def encode_layers(self, batch: Batch) -> dict[str, torch.Tensor]:
        layers = self.layers(batch.x, None)
        return {name: layer.z for name, layer in zip(self.names, layers, strict=True)}

    def encode(self, batch: Batch) -> torch.Tensor:
        """The posterior mean of z1 (B, D_1) (``encode_layers``)."""
        return self.encode_layers(batch)["z1"]

    def decode(self, z: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        unconditional(condition)
        return self.likelihood(z).mean

    def reconstruct(self, batch: Batch) -> torch.Tensor:
        return self.decode(self.encode(batch))

    def _descend(self, z: torch.Tensor, layer: int) -> torch.Tensor:
        """z1 drawn ancestrally from z (..., D_layer) of layer ``layer`` (1-based) down."""
        for down in reversed(list(self.down)[: layer - 1]):
            z = down(z).sample()
        return z

    def sample(self, n: int, condition: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self._descend(self.prior().sample((n,)), len(self.names)), condition)

    def resample_below(self, batch: Batch, layer: int, samples: int) -> torch.Tensor:
        n = len(self.names)
        if not 1 <= layer <= n:
            raise ValueError(f"layer must be in 1..{n}, got {layer}")
        size = (samples, batch.x.shape[0])
        if layer == n:
            return self.decode(self._descend(self.prior().sample(size), n))
        kept = self.layers(batch.x, None)[layer].z  # z_{layer+1}, (B, D)
        z = self.down[layer - 1](kept.expand(*size, -1)).sample()
        return self.decode(self._descend(z, layer))

"""A hierarchical VAE with n stochastic layers z1 … zn, inferred bottom-up (Burda et al.
2016's two-layer VAE and IWAE) or top-down: through residual cells over a deterministic state
(``models.cells``: NVAE's residual posterior, Vahdat & Kautz 2020), or the ladder VAE's
precision-weighted merge (Sønderby et al. 2016).

Bottom-up and ladder: p(x|z1) p(z1|z2) … p(z_{n-1}|zn) p(zn), each conditional a diagonal
Gaussian from a small MLP. Residual: p(zn) p(z_{n-1}|h_{n-1}) … p(x|h_0), the state h carrying
every layer down to the decoder. p(zn) = N(0, I) in every form. The ELBO has one KL part per
layer, named "z1" … "zn", each per dimension (B, D_l).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.distributions import Independent, Normal

from aevb.errors import ConfigError, check_choice, check_positive
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
from aevb.models.cells import Layer, ResidualCells, TopDown
from aevb.models.conv_cells import conv_hierarchy
from aevb.models.vae import VAE, custom_decoder, vae_nets
from aevb.nn.custom import CustomNetConfig, flat_features
from aevb.nn.heads import DiagonalGaussianHead, decoder_head
from aevb.nn.nets import ConvNetConfig, MLPConfig, activation, mlp
from aevb.nn.priors import StandardNormal

__all__ = ["HVAE", "HVAEConfig", "Layer"]

POSTERIORS = ("auto", "residual", "ladder")


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

    net: MLPConfig | ConvNetConfig | CustomNetConfig = MLPConfig(hidden=(200, 200))
    """mlp: the x → z1 encoder's hidden layers, the decoder mirroring them (Burda et al.) |
    conv (top-down residual only): strided convolutions, each halving the size; the layers
    sit on the maps of the last two (for MNIST 14x14 and 7x7), latent_dims their channels |
    custom: your own x → features encoder and a decoder of z1 (bottom-up, ladder) or of the
    residual cells' state (N, state_dim)."""
    layer_hidden: tuple[int, ...] = (100, 100)
    """Hidden layers of the MLPs between stochastic layers, up and (mirrored) down, and of the
    residual cells' branches."""
    inference: str = "bottom-up"
    """bottom-up: q(z1|x) q(z2|z1) … | top-down: q(zn|x) … q(z1|z_{>1}, x) (``posterior``)."""
    posterior: str = "auto"
    """Top-down inference: residual (auto): q(z_l|·) = N(mu_p + dmu, sigma_p · dsigma), cells
    over a deterministic state (NVAE) | ladder: the precision-weighted merge of a bottom-up
    Gaussian and p(z_l|z_{l+1}) (Sønderby et al.). Bottom-up inference takes auto only."""
    state_dim: int = 200
    """Units of the residual cells' deterministic state (mlp nets)."""
    weight_norm: bool = False
    """Weight-normalise the residual cells' linear layers (Salimans & Kingma 2016)."""
    objective: ElboConfig | IWAEConfig | str = ElboConfig()
    """What training maximises: elbo (the SGVB estimate) | iwae (the K-sample bound)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.latent_dims:
            raise ConfigError("model.latent_dims must name at least one layer's size")
        check_sizes("latent_dims", self.latent_dims)
        check_sizes("layer_hidden", self.layer_hidden)
        check_choice("model.inference", self.inference, ("bottom-up", "top-down"))
        check_choice("model.posterior", self.posterior, POSTERIORS)
        check_positive("model.state_dim", self.state_dim)
        if self.inference == "bottom-up" and self.posterior != "auto":
            raise ConfigError(f"model.posterior {self.posterior!r} is a form of top-down"
                              " inference: add --inference top-down (bottom-up inference has"
                              " q(z_{l+1}|z_l) alone)")
        if not self.residual and (self.weight_norm or isinstance(self.net, ConvNetConfig)):
            raise ConfigError("model.weight_norm and net conv are for the residual cells:"
                              " --inference top-down (posterior residual)")
        object.__setattr__(self, "objective", objective_config(self.objective, ("elbo", "iwae")))

    @property
    def latent_dim(self) -> int:
        """The size of z1 (the code of bottom-up and ladder models)."""
        return self.latent_dims[0]

    @property
    def residual(self) -> bool:
        """Whether inference runs through the residual cells (top-down, not the ladder)."""
        return self.inference == "top-down" and self.posterior in ("auto", "residual")

    @classmethod
    def from_saved(cls, section: dict[str, Any]) -> dict[str, Any]:
        """A ``[model]`` table a run saved: before ``posterior`` was a key, top-down inference
        was the ladder's merge."""
        if section.get("inference") == "top-down" and "posterior" not in section:
            return {**section, "posterior": "ladder"}
        return section


def precision_weighted(term: Independent, prior: Independent) -> Independent:
    """The normalised product N(mu_hat, s_hat^2) N(mu_p, s_p^2) (Sønderby et al. 2016, eq. 17):
    variance 1 / (s_hat^-2 + s_p^-2), mean (mu_hat s_hat^-2 + mu_p s_p^-2) times it."""
    a, b = term.base_dist, prior.base_dist
    precision_a, precision_b = a.scale.pow(-2), b.scale.pow(-2)
    variance = 1 / (precision_a + precision_b)
    loc = (a.loc * precision_a + b.loc * precision_b) * variance
    return Independent(Normal(loc, variance.sqrt()), 1)


class HVAE(Model, Encoder, Generative, Likelihood, Hierarchical):
    """Hierarchical VAE: ``sample`` is ancestral from zn. The code of ``encode``/``decode`` is
    z1 for bottom-up and ladder models (the decoder reads z1) and, for residual cells, every
    layer's z joined, z1 first (the decoder reads the state all of them made). Training and
    metrics follow the vae (``bound_loss``), with one ``kl_z<l>`` metric per layer."""

    description = ("hierarchical VAE: n Gaussian layers, bottom-up or top-down (residual cells"
                   " or the ladder's merge), MLP or convolutional")
    config_class: ClassVar[type] = HVAEConfig
    selection = ("elbo", "max")
    cells: TopDown | None

    def __init__(self, config: HVAEConfig, data: DataSpec) -> None:
        super().__init__(config, data)
        dims = config.latent_dims
        self.names = self.layer_names = [f"z{i + 1}" for i in range(len(dims))]
        self.metric_names = {**VAE.metric_names, "kl": ("KL, all layers", "nats"),
                             **{f"kl_{n}": (f"KL of layer {n}", "nats") for n in self.names}}
        self.prior = StandardNormal(dims[-1])
        self.cells = None
        if config.residual:
            self._build_cells(config, data)
            return
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

    def _build_cells(self, config: HVAEConfig, data: DataSpec) -> None:
        """The residual form: bottom-up nets to each layer's features, the cells, and a
        decoder from the last state."""
        net, dims = config.net, config.latent_dims
        if isinstance(net, ConvNetConfig):
            self.encoder, self.cells, self.decoder, self.likelihood_head = conv_hierarchy(
                config, data, net)
            self.up = nn.ModuleList()
            return
        if isinstance(net, CustomNetConfig):
            self.encoder = net.encoder.build("model.net.encoder")
            features = [flat_features(self.encoder, torch.zeros(2, *data.event_shape),
                                      "encoder", net.encoder.module)]
        else:
            hidden = list(net.hidden)
            features = [hidden[-1] if hidden else math.prod(data.event_shape)]
            self.encoder = nn.Sequential(nn.Flatten(), mlp([math.prod(data.event_shape),
                                                            *hidden], net.activation))
        self.up = nn.ModuleList()
        for _ in dims[1:]:
            self.up.append(mlp([features[-1], *config.layer_hidden], net.activation))
            features.append([features[-1], *config.layer_hidden][-1])
        self.cells = ResidualCells(dims, features, config.state_dim, config.layer_hidden,
                                   net.activation, config.weight_norm)
        if isinstance(net, CustomNetConfig):  # your decoder reads the state
            self.decoder, self.likelihood_head = custom_decoder(config, net, data,
                                                                config.state_dim)
            return
        # the state stands where the vae's first decoder layer is (its projection of z):
        # the activation, then the mirrored hidden layers past that one (no hidden layers:
        # the head reads the state, as the vae's reads z)
        hidden = list(net.hidden)
        sizes = [config.state_dim, *list(reversed(hidden))[1:]]
        self.decoder = (nn.Sequential(activation(net.activation), *mlp(sizes, net.activation))
                        if hidden else nn.Sequential())
        self.likelihood_head = decoder_head(config.likelihood, sizes[-1], data.event_shape,
                                            data.kind, config.sigma, config.min_sigma)

    @property
    def code_dim(self) -> int:
        """The size of the code ``encode`` gives and ``decode`` takes."""
        return sum(self.cells.dims) if self.cells is not None else self.config.latent_dims[0]

    def likelihood(self, inputs: torch.Tensor) -> Independent:
        """p(x|·) from the decoder's inputs (..., F): z1, or the residual cells' last state;
        batch shape (...), event shape the data's."""
        return self.likelihood_head(self.decoder(inputs))

    def layers(self, x: torch.Tensor, samples: int | None) -> list[Layer]:
        """One pass of inference, z1 first: ``samples`` = K draws of the whole hierarchy,
        (K, B, D_l) per layer, or with ``None`` every layer at its posterior mean given its
        parent's mean, (B, D_l)."""
        return self._pass(self.encoder(x), samples)[0]

    def _pass(self, features: Any, samples: int | None
              ) -> tuple[list[Layer], torch.Tensor]:
        """``layers`` from the encoder's features of x, and the decoder's input (z1 or the
        last state)."""
        if self.cells is not None:
            if not isinstance(self.cells, ResidualCells):  # the conv encoder's maps, per layer
                return self.cells.infer(features, samples)
            bottom_up = [features]
            for up in self.up:
                bottom_up.append(up(bottom_up[-1]))
            return self.cells.infer(bottom_up, samples)
        layers = self._merged_layers(features, samples)
        return layers, layers[0].z

    def _merged_layers(self, features: torch.Tensor, samples: int | None) -> list[Layer]:
        """Bottom-up or ladder inference from the encoder's features of x (B, F)."""
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
        """sum_l log p(z_l|·) - log q(z_l|·), (K, B)."""
        return torch.stack([layer.prior.log_prob(layer.z) - layer.posterior.log_prob(layer.z)
                            for layer in layers]).sum(0)

    def loss(self, batch: Batch, step: Step) -> tuple[torch.Tensor, Metrics]:
        config = self.config
        if isinstance(config.objective, IWAEConfig):
            layers, inputs = self._pass(self.encoder(batch.x), config.objective.iw_samples)
            log_px_z = self.likelihood(inputs).log_prob(batch.x)
            terms = ElboTerms(log_px_z.mean(0), self.kl_parts(layers, True))
            loss, metrics = bound_loss(config, step, terms, (log_px_z, self._log_ratio(layers)))
        else:
            terms = self.elbo_terms(batch, config.samples)
            loss, metrics = bound_loss(config, step, terms)
        metrics.update({f"kl_{name}": part.sum(-1).mean().detach()
                        for name, part in terms.kl.items()})
        return loss, metrics

    def elbo_terms(self, batch: Batch, samples: int = 1) -> ElboTerms:
        """The ELBO E_q[log p(x|·)] - sum_l KL_l from L = ``samples`` draws of the hierarchy."""
        layers, inputs = self._pass(self.encoder(batch.x), samples)
        rec = self.likelihood(inputs).log_prob(batch.x).mean(0)
        return ElboTerms(rec, self.kl_parts(layers, self.config.estimator == "analytic"))

    def log_marginal(self, batch: Batch, samples: int) -> torch.Tensor:
        draw = self.proposal(batch.x)

        def log_weights(k: int) -> torch.Tensor:
            inputs, log_ratio = draw(k)
            return self.likelihood(inputs).log_prob(batch.x) + log_ratio

        return importance_sampled(log_weights, samples, batch.x.numel(), batch.x.device)

    def proposal(self, x: torch.Tensor) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
        """k ↦ k draws of the whole hierarchy from q given x, x encoded once for every call:
        the decoder's inputs (k, B, F) and sum_l log p(z_l|·) - log q(z_l|·) (k, B)."""
        features = self.encoder(x)

        def draw(k: int) -> tuple[torch.Tensor, torch.Tensor]:
            layers, inputs = self._pass(features, k)
            return inputs, self._log_ratio(layers)

        return draw

    def encode_layers(self, batch: Batch) -> dict[str, torch.Tensor]:
        layers = self.layers(batch.x, None)
        return {name: layer.z for name, layer in zip(self.names, layers, strict=True)}

    def encode(self, batch: Batch) -> torch.Tensor:
        """The posterior means (``encode_layers``) of the code: z1, or every layer (B, sum D_l)
        for residual cells."""
        codes = self.encode_layers(batch)
        return torch.cat(list(codes.values()), -1) if self.cells is not None else codes["z1"]

    def decode(self, z: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        unconditional(condition)
        if self.cells is None:
            return self.likelihood(z).mean
        given = list(z.split(list(self.cells.dims), -1))
        return self.likelihood(self.cells.generate(z.shape[:-1], given)).mean

    def reconstruct(self, batch: Batch) -> torch.Tensor:
        return self.decode(self.encode(batch))

    def _descend(self, z: torch.Tensor, layer: int) -> torch.Tensor:
        """z1 drawn ancestrally from z (..., D_layer) of layer ``layer`` (1-based) down."""
        for down in reversed(list(self.down)[: layer - 1]):
            z = down(z).sample()
        return z

    def sample(self, n: int, condition: torch.Tensor | None = None) -> torch.Tensor:
        unconditional(condition)
        if self.cells is not None:
            return self.likelihood(self.cells.generate((n,), [None] * len(self.names))).mean
        return self.decode(self._descend(self.prior().sample((n,)), len(self.names)))

    def resample_below(self, batch: Batch, layer: int, samples: int) -> torch.Tensor:
        n = len(self.names)
        if not 1 <= layer <= n:
            raise ValueError(f"layer must be in 1..{n}, got {layer}")
        size = (samples, batch.x.shape[0])
        if self.cells is not None:
            means = [None] * layer + [q.z for q in self.layers(batch.x, None)[layer:]]
            return self.likelihood(self.cells.generate(size, means)).mean
        if layer == n:
            return self.decode(self._descend(self.prior().sample(size), n))
        kept = self.layers(batch.x, None)[layer].z  # z_{layer+1}, (B, D)
        z = self.down[layer - 1](kept.expand(*size, -1)).sample()
        return self.decode(self._descend(z, layer))

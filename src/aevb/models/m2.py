"""M2 of Kingma, Rezende, Mohamed & Welling (2014), *Semi-supervised learning with deep
generative models*: p(x|y,z) p(y) p(z), q(z|x,y) and a classifier q(y|x), trained on labelled
and unlabelled examples together (sec. 3.1.2, eqs. 6-9)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical, Distribution, kl_divergence

from aevb.errors import ConfigError, check_positive
from aevb.inference.objectives import ElboTerms, elbo_terms, importance_sampled, log_weights
from aevb.inference.schedules import Step
from aevb.models.base import (
    Batch,
    Classifier,
    Conditional,
    DataSpec,
    Encoder,
    Generative,
    Likelihood,
    Metrics,
    Model,
)
from aevb.models.bound import BoundConfig, LatentConfig
from aevb.models.cvae import CVAE, CVAEConfig
from aevb.nn.custom import CustomNetConfig, flat_features
from aevb.nn.nets import MLPConfig, mlp

__all__ = ["M2", "M2Config"]


@dataclass(frozen=True)
class M2Config(BoundConfig, LatentConfig):
    """The bound keys (``BoundConfig``) are those of p(x|y,z) and of L(x,y), with L the z
    samples per datapoint and class; M2 trains eqs. 7 and 9 as they are: beta 1, no warm-up,
    no free bits."""

    name: str = "m2"
    latent_dim: int = 50
    """Dimensions of z (the paper: 50)."""
    net: MLPConfig | CustomNetConfig = MLPConfig(activation="softplus")
    """The networks of q(z|x,y), p(x|y,z) and q(y|x) (each the same hidden layers; softplus
    units as the paper's, 1.6 points of error better than tanh with 100 MNIST labels,
    docs/semi-supervised-mnist.md). Or your own (``--net custom``): the encoder's features
    feed q(z|x,y) beside y, a second copy of the encoder q(y|x), and the decoder reads
    [z, y]."""
    label_input: bool = True
    """Where y enters q(z|x,y): true, at the encoder's first layer too, as the paper's
    q(z|x,y) reads [x, y] (a learned vector per class added to the first layer's
    pre-activation; x's product is computed once for every class); false, only beside the
    encoder's last features, as the cvae (runs saved before this key)."""
    alpha: float = 50.0
    """Weight on log q(y|x) of each labelled example in the minibatch's mean loss. The paper's
    alpha = 0.1 N on a sum over the data weighs the mean over labelled examples by 0.1; with m
    labelled examples in a minibatch of M (``data.labelled_per_batch``) this weight is
    alpha m / M: 5 for the default 10 of 100, the classifier weighted up as is common practice
    for 100 labels."""

    @classmethod
    def from_saved(cls, section: dict[str, Any]) -> dict[str, Any]:
        """A ``[model]`` table a run saved: before ``label_input`` was a key, y joined only the
        encoder's last features."""
        return section if "label_input" in section else {**section, "label_input": False}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("model.latent_dim", self.latent_dim)
        if self.weighted:
            raise ConfigError("m2 trains its bounds as they are (eqs. 7 and 9): it takes beta 1,"
                              " kl_warmup 0 and free_bits 0")
        if self.label_input and isinstance(self.net, CustomNetConfig):
            raise ConfigError("m2: label_input adds y at the first layer of its MLP encoder;"
                              " with your own networks set label_input false (y then joins"
                              " your encoder's features)")
        if self.alpha < 0:
            raise ConfigError(f"model.alpha must be >= 0, got {self.alpha}")


class M2(Model, Encoder, Generative, Likelihood, Conditional, Classifier):
    """M2: the conditional VAE (``cvae.CVAE``, standard prior, c = one-hot y) plus a
    classifier q(y|x) = Cat(softmax(MLP(x))) and a uniform p(y).

    Labels of -1 (``data.UNLABELLED``) mark unlabelled examples. With L(x,y) = E_q(z|x,y)[
    log p(x|y,z)] + log p(y) - KL(q(z|x,y) || p(z)) (eq. 6), each example's loss is

        labelled:   -(L(x,y) + alpha log q(y|x))                       (eq. 9)
        unlabelled: -U(x) = -(sum_y q(y|x) L(x,y) + H(q(y|x)))          (eq. 7)

    L is computed for every class at once, with classes in a leading dimension (C, B).
    """

    description = ("M2 (Kingma et al. 2014): semi-supervised p(x|y,z), q(z|x,y), classifier"
                   " q(y|x); labels of -1 are unlabelled")
    config_class = M2Config
    selection = ("marginal_elbo", "max")
    metric_names = {
        "loss": ("loss (minimised)", ""),
        "elbo": ("bound: L(x,y) where labelled, U(x) where not", "nats"),
        "marginal_elbo": ("U(x), the bound on log p(x) summed over y", "nats"),
        "accuracy": ("accuracy of q(y|x) on the labelled examples (0 without any)", ""),
    }

    def __init__(self, config: M2Config, data: DataSpec) -> None:
        super().__init__(config, data)
        if not data.num_classes or data.condition_dim:
            raise ConfigError("m2 needs class labels (y) and no conditioning vectors (c)")
        self.num_classes: int = data.num_classes
        self.classes = self.condition_dim = data.num_classes
        bound = {f.name: getattr(config, f.name) for f in fields(BoundConfig)}
        self.cvae = CVAE(CVAEConfig(latent_dim=config.latent_dim, net=config.net, **bound),
                         DataSpec(data.event_shape, data.kind, data.num_classes))
        if isinstance(config.net, CustomNetConfig):  # q(y|x) on a copy of your encoder
            encoder = config.net.encoder.build("model.net.encoder")
            features = flat_features(encoder, torch.zeros(2, *data.event_shape), "encoder",
                                     config.net.encoder.module)
            self.label_embedding = None
            self.classifier = nn.Sequential(encoder, nn.Linear(features, self.num_classes))
            return
        hidden = list(config.net.hidden)
        features = math.prod(data.event_shape)
        if config.label_input and not hidden:
            raise ConfigError("m2: label_input adds y at the encoder's first hidden layer, and"
                              " net.hidden is empty")
        self.label_embedding = (nn.Parameter(torch.zeros(self.num_classes, hidden[0]))
                                if config.label_input else None)
        self.classifier = nn.Sequential(
            nn.Flatten(), mlp([features, *hidden], config.net.activation),
            nn.Linear(hidden[-1] if hidden else features, self.num_classes))

    # -- the distributions -----------------------------------------------------------------

    def q_y(self, x: torch.Tensor) -> Categorical:
        """q(y|x): batch shape (B,) over ``classes`` classes."""
        return Categorical(logits=self.classifier(x).float())

    def p_y(self, like: torch.Tensor) -> Categorical:
        """The uniform p(y), batch shape (B,) for ``like`` (B, ...)."""
        return Categorical(logits=like.new_zeros(len(like), self.num_classes).float())

    def _every_class(self, x: torch.Tensor) -> tuple[Distribution, torch.Tensor]:
        """q(z|x,y) with batch shape (C, B) for every class y, and the one-hots (C, 1, C)."""
        c = torch.eye(self.num_classes, device=x.device)[:, None]
        if self.label_embedding is None:
            features = self.cvae.encoder(x).expand(self.num_classes, -1, -1)  # once for all y
        else:
            features = self._label_features(x, self.label_embedding[:, None])
        both = torch.cat([features, c.expand(-1, len(x), -1).to(features.dtype)], -1)
        return self.cvae.posterior_head(both), c

    def _label_features(self, x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """The encoder's features with y's vectors ``shift`` (..., B or 1, H) added to its first
        pre-activation (Flatten, Linear, activation, ...): x's product computed once."""
        encoder = self.cvae.encoder
        assert isinstance(encoder, nn.Sequential)  # the MLP's, as label_input needs
        pre = encoder[:2](x)
        return encoder[2:](pre + shift.to(pre.dtype))

    def posterior(self, x: torch.Tensor, labels: torch.Tensor) -> Distribution:
        """q(z|x,y) for integer labels y (B,): batch shape (B,), event shape (latent_dim,)."""
        c = self.condition_of(labels)
        if self.label_embedding is None:
            return self.cvae.posterior(x, c)
        features = self._label_features(x, self.label_embedding[labels])
        return self.cvae.posterior_head(torch.cat([features, c.to(features.dtype)], -1))

    def class_terms(self, x: torch.Tensor, samples: int = 1) -> ElboTerms:
        """E_q[log p(x|y,z)] (C, B) and KL(q(z|x,y) || p(z)) (C, B, D) for every class y."""
        posterior, c = self._every_class(x)
        return elbo_terms(x, posterior, self.cvae.prior(c.expand(-1, len(x), -1)),
                          lambda z: self.cvae.likelihood(z, c), samples, self.config.estimator)

    # -- the contract and the abilities ----------------------------------------------------

    def loss(self, batch: Batch, step: Step) -> tuple[torch.Tensor, Metrics]:
        x = batch.x
        y = batch.y if batch.y is not None else x.new_full((len(x),), -1, dtype=torch.long)
        labelled = y >= 0
        q_y = self.q_y(x)
        bound_y = self.class_terms(x, self.config.samples).elbo - math.log(self.num_classes)  # (C, B)
        marginal = (q_y.probs.T * bound_y).sum(0) + q_y.entropy()  # U(x), (B,)
        known = y.clamp(min=0)
        joint = bound_y.gather(0, known[None]).squeeze(0)  # L(x, y), (B,)
        bound = torch.where(labelled, joint, marginal)
        log_q = q_y.log_prob(known)
        loss = -(bound + self.config.alpha * labelled * log_q).mean()
        correct = (q_y.logits.argmax(-1) == y) & labelled
        metrics: Metrics = {
            "loss": loss.detach(),
            "elbo": bound.mean().detach(),
            "marginal_elbo": marginal.mean().detach(),
            "accuracy": (correct.sum() / labelled.sum().clamp(min=1)).detach(),
        }
        return loss, metrics

    def classify(self, batch: Batch) -> torch.Tensor:
        return self.q_y(batch.x).probs

    def elbo_terms(self, batch: Batch, samples: int = 1) -> ElboTerms:
        """The parts of U(x), labels ignored: rec = sum_y q(y|x) E_q[log p(x|y,z)], KL parts
        "z" = sum_y q(y|x) KL(q(z|x,y) || p(z)) (B, D) and "y" = KL(q(y|x) || p(y)) (B, 1)."""
        q_y = self.q_y(batch.x)
        terms = self.class_terms(batch.x, samples)
        weights = q_y.probs.T  # (C, B)
        return ElboTerms((weights * terms.rec).sum(0), {
            "z": (weights[..., None] * terms.kl["z"]).sum(0),
            "y": kl_divergence(q_y, self.p_y(batch.x))[:, None],
        })

    def log_marginal(self, batch: Batch, samples: int) -> torch.Tensor:
        """log p(x) = log sum_y p(y) p(x|y) (B,): the sum over classes exact, each p(x|y)
        importance-sampled from q(z|x,y) with K = ``samples`` (K × classes decoder passes)."""
        x = batch.x
        posterior, c = self._every_class(x)
        prior = self.cvae.prior(c.expand(-1, len(x), -1))
        log_px_y = importance_sampled(  # (C, B): the K draws lead, the classes follow
            lambda k: log_weights(x, posterior, prior, lambda z: self.cvae.likelihood(z, c), k),
            samples, x.numel() * self.num_classes, x.device)
        return torch.logsumexp(log_px_y, 0) - math.log(self.num_classes)

    def labels(self, batch: Batch) -> torch.Tensor:
        """The batch's labels where known (>= 0), else q(y|x)'s most probable class (B,)."""
        guess = self.q_y(batch.x).logits.argmax(-1)
        return guess if batch.y is None else torch.where(batch.y >= 0, batch.y, guess)

    def encode(self, batch: Batch) -> torch.Tensor:
        """The mean of q(z|x,y), y the label where known, else q(y|x)'s guess."""
        return self.posterior(batch.x, self.labels(batch)).mean

    def reconstruct(self, batch: Batch) -> torch.Tensor:
        labels = self.labels(batch)
        return self.decode(self.posterior(batch.x, labels).mean, self.condition_of(labels))

    def condition_of(self, labels: torch.Tensor) -> torch.Tensor:
        return F.one_hot(labels.long(), self.num_classes).float()

    def decode(self, z: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder means at z (..., D) given one-hot y broadcastable to (..., C)."""
        return self.cvae.decode(z, condition)

    def sample(self, n: int, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder means of z ~ p(z) with y one-hot (n, C) or (C,); without one, y ~ p(y)."""
        return self.cvae.sample(n, condition)

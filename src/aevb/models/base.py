"""The model contract: one method for the loop, ``loss(batch, step)`` (also ``forward``, for
data-parallel wrappers), and abilities (the ABCs below) that a model inherits and the rest of the
library tests for with ``isinstance(model, Ability)``, never by the model's name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn
from torch.distributions import Distribution

from aevb.errors import ConfigError
from aevb.inference.objectives import ElboTerms
from aevb.inference.schedules import Step
from aevb.nn.corruption import Corruption

__all__ = ["Batch", "Classifier", "ClosedForm", "Conditional", "Corrupting", "DataSpec", "Encoder",
           "Generative", "Hierarchical", "Likelihood", "Metrics", "Model", "PerExampleState",
           "Posterior", "Step", "unconditional"]

Metrics = dict[str, torch.Tensor]
"""Named per-batch values (means over the batch, detached scalars)."""


class Batch(NamedTuple):
    """A minibatch: ``x`` (B, *event_shape); labels ``y`` (B,) where the data has them;
    ``indices`` (B,), the examples' positions in their split (for per-example state); and
    conditioning vectors ``c`` float32 (B, C) where the data brings its own."""

    x: torch.Tensor
    y: torch.Tensor | None = None
    indices: torch.Tensor | None = None
    c: torch.Tensor | None = None


class DataSpec(NamedTuple):
    """What a model needs to know of its data to build itself."""

    event_shape: tuple[int, ...]
    kind: str
    """"binary", "unit" ([0, 1]) or "real"."""
    num_classes: int | None = None
    condition_dim: int | None = None
    """C, the length of the data's own conditioning vectors (``Batch.c``); None without them."""
    train_size: int | None = None
    """N, the training split's size, for models with per-example state (one HMC chain per
    example); None where unknown."""


class Model(nn.Module, ABC):
    """A trainable model built from its own frozen config (``config_class``) and the data spec.

    ``selection`` names the validation metric that picks the best checkpoint and drives early
    stopping, and whether higher ("max") or lower ("min") is better. It must be a quantity that
    does not move with the training schedule (a VAE: the ELBO, not its weighted loss).
    ``metric_names`` describes the metrics, so the report and figures need know none.
    """

    description: ClassVar[str] = ""
    config_class: ClassVar[type]
    selection: ClassVar[tuple[str, str]] = ("loss", "min")
    metric_names: dict[str, tuple[str, str]] = {"loss": ("loss (minimised)", "")}
    """Readable name and unit ("nats" per example, or "") of every metric ``loss`` returns;
    the loop keeps them in the run's checkpoints for the report and the curves. A class
    table, or set per instance where the metrics depend on the config (one per layer)."""

    def __init__(self, config: Any, data: DataSpec) -> None:
        super().__init__()
        self.config = config
        self.data = data

    @abstractmethod
    def loss(self, batch: Batch, step: Step) -> tuple[torch.Tensor, Metrics]:
        """Scalar loss to minimise and metrics for one minibatch; ``step`` drives schedules.

        The metrics include ``loss`` and the model's ``selection`` metric.
        """

    def forward(self, batch: Batch, step: Step) -> tuple[torch.Tensor, Metrics]:
        return self.loss(batch, step)


class Encoder(ABC):
    """Has an encoder: data → codes, and back to the data's scale."""

    @abstractmethod
    def encode(self, batch: Batch) -> torch.Tensor:
        """The code of each example (B, code_dim); a VAE's posterior mean."""

    @abstractmethod
    def reconstruct(self, batch: Batch) -> torch.Tensor:
        """Each example's reconstruction (B, *event_shape) on the data's scale (a mean)."""


class Posterior(ABC):
    """Gives its approximate posterior q(z|x) as a distribution, not only a code: the codes
    of M1+M2 are drawn from it (``data.features_sample``)."""

    @abstractmethod
    def posterior_of(self, batch: Batch) -> Distribution:
        """q(z|x): batch shape (B,), event shape (code_dim,); its mean is ``encode``'s code."""


class Generative(ABC):
    """Has a prior to sample from and a decoder from codes to data."""

    @abstractmethod
    def sample(self, n: int, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder means of n draws z ~ p(z | condition), shape (n, *event_shape)."""

    @abstractmethod
    def decode(self, z: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder means at codes z (..., code_dim) → (..., *event_shape)."""


def unconditional(condition: torch.Tensor | None) -> None:
    """The check of an unconditional model's ``sample`` and ``decode``: no condition."""
    if condition is not None:
        raise ConfigError("this model is unconditional: it takes no condition")


class Likelihood(ABC):
    """Has a likelihood: evaluation reports its ELBO and importance-sampled log p(x)."""

    @abstractmethod
    def elbo_terms(self, batch: Batch, samples: int = 1) -> ElboTerms:
        """The ELBO's parts per example, in nats, with ``samples`` z draws per example."""

    @abstractmethod
    def log_marginal(self, batch: Batch, samples: int) -> torch.Tensor:
        """An estimate of log p(x) per example (B,) in nats from ``samples`` = K draws."""


class Hierarchical(ABC):
    """Has stochastic layers z1 (next to x) … zn (the top), named "z1" … "zn" as the KL parts
    of its ``elbo_terms`` are, and as its ``kl_<name>`` metrics (each layer's KL) are."""

    layer_names: list[str]
    """The layers' names, z1 first."""

    @abstractmethod
    def encode_layers(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Each layer's posterior mean (B, D_l), by name, z1 first: the means of one
        deterministic pass through the inference network, each layer's parent at its mean."""

    @abstractmethod
    def resample_below(self, batch: Batch, layer: int, samples: int) -> torch.Tensor:
        """Decoder means (samples, B, *event_shape) with z_{layer+1} … zn fixed at the
        posterior means of ``batch`` and z_layer … z1 drawn from the generative model;
        ``layer`` in 1..n (n: nothing is kept, plain samples)."""


class ClosedForm(ABC):
    """Fitted to the training data in closed form, once, before the first step of a fresh run.

    A resumed run has the fitted state in its checkpoint's buffers. A model without trainable
    parameters takes no optimizer steps; the loop runs one epoch to measure its loss.
    """

    @abstractmethod
    def fit_data(self, x: torch.Tensor) -> None:
        """Fit to the whole training split x (N, *event_shape), as stored (under dynamic
        binarization: the grey levels, not a binary sample)."""


class Corrupting(ABC):
    """Trains on a corrupted copy of its input; figures show noisy, denoised and clean images."""

    corruption: Corruption


class Conditional(ABC):
    """Conditioned on a vector c (``condition_dim`` long): a class's one-hot vector where the
    data has labels and no vectors of its own, else the data's ``Batch.c``. Its ``sample`` and
    ``decode`` take c (..., condition_dim) as their ``condition``."""

    condition_dim: int
    classes: int | None
    """How many classes c encodes as one-hot vectors; None when c comes with the data."""

    @abstractmethod
    def condition_of(self, labels: torch.Tensor) -> torch.Tensor:
        """The condition c (..., condition_dim) of integer class labels (...)."""


class Classifier(ABC):
    """Predicts the class of x; evaluation reports its test classification error."""

    @abstractmethod
    def classify(self, batch: Batch) -> torch.Tensor:
        """Class probabilities (B, classes) from ``batch.x`` alone (its labels are not read)."""


class PerExampleState(ABC):
    """Keeps tensors indexed by training example, updated at the rows of each batch
    (``Batch.indices``); under data parallelism the loop syncs those rows after each step."""

    @abstractmethod
    def per_example_state(self) -> list[torch.Tensor]:
        """The tensors (N, ...), N the training split's size; empty where there are none."""

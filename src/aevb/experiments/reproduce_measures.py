"""What ``aevb reproduce`` measures after each stage: lower bounds (fig2, 4, 5) and the
marginal likelihood by the paper's appendix D and by importance sampling (fig3), nats per
example."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from aevb.data.splits import Dataset, Split
from aevb.engine.rng import seeded
from aevb.errors import ConfigError
from aevb.evaluation.evaluate import log_likelihood
from aevb.experiments.reproduce_plan import TRAIN_POINTS, Settings
from aevb.inference.marginal import appendix_d_log_marginal
from aevb.models.base import Batch, Encoder, Likelihood, Model

__all__ = ["appendix_d", "lower_bound", "mean_log_likelihood", "measure_bounds",
           "measure_marginal"]


def _fixed_sample(split: Split, points: int, seed: int) -> torch.Tensor:
    """The first ``points`` examples of ``split`` as the model sees them, binarized once with
    ``seed`` where the split resamples every batch."""
    index = torch.arange(min(points, len(split)))
    return split.batch(index.to(split.device), torch.Generator(split.device).manual_seed(seed))


@torch.no_grad()
def lower_bound(model: Likelihood, x: torch.Tensor, seed: int = 0, batch: int = 1000) -> float:
    """The mean ELBO (estimator B, one sample) over ``x``, in nats per example."""
    with seeded(seed, x.device):
        values = [model.elbo_terms(Batch(x[i:i + batch]), 1).elbo for i in range(0, len(x), batch)]
    return torch.cat(values).double().mean().item()


def mean_log_likelihood(model: Likelihood, x: torch.Tensor, samples: int, seed: int = 0
                        ) -> float:
    """The mean importance-sampled log p(x) with the recognition model as proposal."""
    with seeded(seed, x.device):
        return log_likelihood(model, Batch(x), samples).double().mean().item()


def appendix_d(model: Model, x: torch.Tensor, samples: int, burn_in: int, seed: int = 0
               ) -> tuple[float, float]:
    """The mean appendix-D log p(x) over ``x`` with L = ``samples`` and the HMC acceptance
    rate; the chains start at the recognition model's means."""
    log_joint: Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor] | None = getattr(
        type(model), "log_joint", None)
    if log_joint is None or not isinstance(model, Encoder):
        raise ConfigError(f"{type(model).__name__} has no log p(x, z) and encoder to run HMC on")
    with torch.no_grad():
        start = model.encode(Batch(x))
    result = appendix_d_log_marginal(
        lambda z: log_joint(model, x, z), start, samples=samples, burn_in=burn_in,
        generator=torch.Generator(x.device).manual_seed(seed))
    return result.log_marginal.double().mean().item(), result.accept_rate.mean().item()


def measure_bounds(model: Model, dataset: Dataset, settings: Settings) -> dict[str, float]:
    """fig2's measurements: the lower bound on training points and on the test set."""
    assert isinstance(model, Likelihood)
    return {"train_bound": round(lower_bound(model, _fixed_sample(dataset.train, TRAIN_POINTS, 1)), 4),
            "test_bound": round(lower_bound(model, dataset.test.values()), 4)}


def measure_marginal(model: Model, dataset: Dataset, settings: Settings) -> dict[str, float]:
    """fig3's measurements: log p(x) by appendix D and by importance sampling on
    ``settings.marginal_points`` training and test points, and the bounds."""
    assert isinstance(model, Likelihood)
    row = measure_bounds(model, dataset, settings)
    points = settings.marginal_points
    for split, x in (("train", _fixed_sample(dataset.train, points, 1)),
                     ("test", dataset.test.values()[:points])):
        estimate, accept = appendix_d(model, x, settings.hmc_samples, settings.hmc_burn_in)
        row[f"{split}_log_px_appendix_d"] = round(estimate, 4)
        row[f"{split}_hmc_accept"] = round(accept, 3)
        row[f"{split}_log_px_is"] = round(mean_log_likelihood(model, x, settings.is_samples), 4)
    return row

"""Data as the codes of a trained model: M1+M2 (Kingma et al. 2014, sec. 3.2) and the like.

With ``data.features`` = a run directory, every split's x is replaced by that run's encoder
means (``Encoder.encode``), encoded from its grey levels: the model of this run (M2, say, with a
Gaussian likelihood) is trained on codes, and ``data.binarize`` does not apply. With
``data.features_sample`` the training split keeps q(z|x)'s standard deviations too, and every
minibatch draws fresh codes from it (``Split.spread``), as Kingma et al. train M2 on M1's
posterior; ``data.features_min_std`` keeps only the dimensions whose means vary over the
training examples (the paper's 0.1: M1's active units).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from aevb.config.schema import DataConfig
from aevb.data.datasets import load_dataset
from aevb.data.splits import SPLITS, Dataset, Split
from aevb.engine.checkpoint import load_model
from aevb.errors import ConfigError, DataError
from aevb.models import Batch, Encoder, Posterior

__all__ = ["ENCODE_BATCH", "encode_dataset", "load_run_data"]

ENCODE_BATCH = 1000  # examples encoded at a time


def features_dir(features: str, base_dir: str | Path | None = None) -> Path:
    """The run directory ``features`` names: a relative one in ``base_dir`` (the run that uses
    it) first, then in the working directory, as data files are."""
    path = Path(features).expanduser()
    if base_dir is not None and not path.is_absolute() and (Path(base_dir) / path).exists():
        return Path(base_dir) / path
    return path


@torch.no_grad()
def encode_dataset(dataset: Dataset, run_dir: str | Path, device: str | torch.device = "cpu",
                   sample: bool = False, min_std: float = 0.0) -> Dataset:
    """``dataset`` with every split's x the encoder means (N, code_dim) float32 of the run in
    ``run_dir`` (best checkpoint), kind "real", binarize "none"; labels and conditions kept.
    ``sample``: the training split draws its codes from q(z|x) at every batch; ``min_std``:
    only the dimensions whose training means have a standard deviation above it."""
    config, model, _ = load_model(run_dir, "best", device)
    if not isinstance(model, Encoder):
        raise ConfigError(f"data.features: the run {run_dir} is a {config.model.name}, which has"
                          " no encoder to give codes; use a run of a model that has one (vae)")
    if sample and not isinstance(model, Posterior):
        raise ConfigError(f"data.features_sample: the run {run_dir} is a {config.model.name},"
                          " whose encoder gives codes but no posterior to draw them from; use a"
                          " vae's run, or train on the codes themselves (features_sample false)")
    if tuple(model.data.event_shape) != tuple(dataset.event_shape):
        raise DataError(f"data.features: the run {run_dir} encodes examples of shape"
                        f" {tuple(model.data.event_shape)}, but {dataset.name} has"
                        f" {tuple(dataset.event_shape)}")
    train, valid, test = (_encode_split(model, getattr(dataset, s).to(device), sample and s == "train")
                          for s in SPLITS)
    if min_std > 0:
        keep = train.values().std(0) > min_std
        if not keep.any():
            raise DataError(f"data.features_min_std={min_std}: no code dimension of the run"
                            f" {run_dir} varies that much over the training examples (largest"
                            f" standard deviation {train.values().std(0).max().item():.3g})")
        train, valid, test = (_dimensions(split, keep) for split in (train, valid, test))
    return replace(dataset, train=train, valid=valid, test=test,
                   event_shape=train.event_shape, kind="real")


def _encode_split(model: Encoder, split: Split, sample: bool) -> Split:
    """The split as codes: the posterior's means, and with ``sample`` its standard deviations."""
    codes, spreads = [], []
    for start in range(0, len(split), ENCODE_BATCH):
        index = torch.arange(start, min(start + ENCODE_BATCH, len(split)), device=split.device)
        batch = Batch(split.values(index), None if split.y is None else split.y[index], index,
                      None if split.c is None else split.c[index])
        if sample:
            assert isinstance(model, Posterior)
            posterior = model.posterior_of(batch)
            codes.append(posterior.mean.float())
            spreads.append(_standard_deviation(posterior))
        else:
            codes.append(model.encode(batch).float())
    return replace(split, raw=torch.cat(codes), binarize="none", scale=1,
                   spread=torch.cat(spreads) if sample else None)


def _standard_deviation(posterior: torch.distributions.Distribution) -> torch.Tensor:
    """q(z|x)'s standard deviations (B, D), where drawing mean + std·eps is drawing from it:
    a diagonal Gaussian only."""
    base = posterior.base_dist if isinstance(posterior, torch.distributions.Independent) else posterior
    if not isinstance(base, torch.distributions.Normal):
        raise ConfigError("data.features_sample draws codes as mean + std * noise, which needs"
                          f" a diagonal Gaussian posterior; this run's is a {type(base).__name__}")
    return base.stddev.expand(posterior.batch_shape + posterior.event_shape).float()


def _dimensions(split: Split, keep: torch.Tensor) -> Split:
    assert isinstance(split.raw, torch.Tensor)
    spread = None if split.spread is None else split.spread[:, keep].contiguous()
    return replace(split, raw=split.raw[:, keep].contiguous(), spread=spread)


def load_run_data(config: DataConfig, base_dir: str | Path | None = None,
                  device: str | torch.device = "cpu") -> Dataset:
    """:func:`load_dataset` on ``device``; with ``config.features``, that run's codes."""
    if config.features is None:
        if config.features_sample or config.features_min_std:  # checked here, not in the
            # config, so that a config file can leave data.features to the command line
            raise ConfigError("data.features_sample and data.features_min_std choose how a"
                              " run's codes are used: they need data.features (a run directory)")
        return load_dataset(config, base_dir=base_dir).to(device)
    # Grey levels for every split: under "dynamic" the training split would be encoded from
    # grey levels and the others from a fixed binary sample, codes of two different inputs.
    dataset = load_dataset(replace(config, binarize="none"), base_dir=base_dir).to(device)
    return encode_dataset(dataset, features_dir(config.features, base_dir), device,
                          config.features_sample, config.features_min_std)

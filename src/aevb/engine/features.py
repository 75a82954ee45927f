"""Data as the codes of a trained model: M1+M2 (Kingma et al. 2014, sec. 3.2) and the like.

With ``data.features`` = a run directory, every split's x is replaced by that run's encoder
means (``Encoder.encode``), encoded from its grey levels: the model of this run (M2, say, with a
Gaussian likelihood) is trained on codes, and ``data.binarize`` does not apply.
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
from aevb.models import Batch, Encoder

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
def encode_dataset(dataset: Dataset, run_dir: str | Path,
                   device: str | torch.device = "cpu") -> Dataset:
    """``dataset`` with every split's x the encoder means (N, code_dim) float32 of the run in
    ``run_dir`` (best checkpoint), kind "real", binarize "none"; labels and conditions kept."""
    config, model, _ = load_model(run_dir, "best", device)
    if not isinstance(model, Encoder):
        raise ConfigError(f"data.features: the run {run_dir} is a {config.model.name}, which has"
                          " no encoder to give codes; use a run of a model that has one (vae)")
    if tuple(model.data.event_shape) != tuple(dataset.event_shape):
        raise DataError(f"data.features: the run {run_dir} encodes examples of shape"
                        f" {tuple(model.data.event_shape)}, but {dataset.name} has"
                        f" {tuple(dataset.event_shape)}")
    train, valid, test = (_encode_split(model, getattr(dataset, s).to(device)) for s in SPLITS)
    return replace(dataset, train=train, valid=valid, test=test,
                   event_shape=train.event_shape, kind="real")


def _encode_split(model: Encoder, split: Split) -> Split:
    codes = []
    for start in range(0, len(split), ENCODE_BATCH):
        index = torch.arange(start, min(start + ENCODE_BATCH, len(split)), device=split.device)
        batch = Batch(split.values(index), None if split.y is None else split.y[index], index,
                      None if split.c is None else split.c[index])
        codes.append(model.encode(batch).float())
    return replace(split, raw=torch.cat(codes), binarize="none", scale=1)


def load_run_data(config: DataConfig, base_dir: str | Path | None = None,
                  device: str | torch.device = "cpu") -> Dataset:
    """:func:`load_dataset` on ``device``; with ``config.features``, that run's codes."""
    if config.features is None:
        return load_dataset(config, base_dir=base_dir).to(device)
    # Grey levels for every split: under "dynamic" the training split would be encoded from
    # grey levels and the others from a fixed binary sample, codes of two different inputs.
    dataset = load_dataset(replace(config, binarize="none"), base_dir=base_dir).to(device)
    return encode_dataset(dataset, features_dir(config.features, base_dir), device)

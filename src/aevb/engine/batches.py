"""A split's examples as the models' ``Batch``: x (binarized afresh under dynamic binarization),
labels, conditions and the examples' indices."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from aevb.data.splits import Split
from aevb.models import Batch

__all__ = ["batches", "split_batch"]


def batches(split: Split, batch_size: int, n: int | None = None) -> Iterator[Batch]:
    """The first ``n`` (default all) examples of ``split``, in order, ``batch_size`` at a time."""
    n = len(split) if n is None else n
    for start in range(0, n, batch_size):
        index = torch.arange(start, min(start + batch_size, n), device=split.device)
        yield split_batch(split, index)


def split_batch(split: Split, index: torch.Tensor, generator: torch.Generator | None = None
                ) -> Batch:
    """The examples ``index`` of ``split`` as a Batch (x resampled under dynamic binarization)."""
    return Batch(split.batch(index, generator), None if split.y is None else split.y[index], index,
                 None if split.c is None else split.c[index])

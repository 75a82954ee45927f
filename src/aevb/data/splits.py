"""A dataset as tensors on one device: its splits and what the models need to know of it.

Each split is one tensor ``raw`` (N, *event_shape) that a model sees as the float32 ``raw / scale``
(images are (N, 1, H, W) in [0, 1]), and optional int64 labels ``y`` (N,); a minibatch is an
index slice, never a Python loop over examples. A user's ``.npy`` too large to load stays on disk
as :class:`MappedRows`, whose minibatches are read through a memory map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aevb.data import batching

__all__ = ["SPLITS", "UNLABELLED", "Arrays", "Dataset", "MappedRows", "NpyFile", "Split"]

SPLITS = ("train", "valid", "test")
UNLABELLED = -1
"""The label of a training example whose label is hidden (``DataConfig.labelled``)."""
Arrays = dict[str, Any]
"""x_*, y_*, c_* → np.ndarray, or :class:`MappedRows` for the x of a memory-mapped file."""


@dataclass(frozen=True)
class NpyFile:
    """A ``.npy`` too large to load: where its C-ordered data lies (``offset`` bytes in)."""

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int

    @property
    def ndim(self) -> int:
        return len(self.shape)


WINDOW_BYTES = 1 << 24
"""The most of a memory-mapped file mapped at once: a gather maps a window at a time, so
that the process's address space (``ulimit -v``) need not hold the file."""


@dataclass(frozen=True, eq=False)
class MappedRows:
    """Some rows of a ``.npy`` file, read from disk one minibatch at a time: ``index`` int64 (n,)
    are the file's rows that make this split, in its order; ``device`` is where gathered rows go.
    Shaped like an array (``shape``, ``ndim``, ``dtype``, row slices), so that
    :func:`~aevb.data.arrays.check_arrays` reads it in chunks like one."""

    file: NpyFile
    index: np.ndarray
    device: torch.device = torch.device("cpu")

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.file.shape[1:])

    @property
    def ndim(self) -> int:
        return self.file.ndim

    @property
    def dtype(self) -> np.dtype:
        return self.file.dtype

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, rows: slice | np.ndarray) -> np.ndarray:
        """The rows ``rows`` of this split as an in-memory array of the file's dtype: sorted,
        mapped (``np.memmap``) one window of at most WINDOW_BYTES at a time, copied out."""
        wanted = self.index[rows]
        order = np.argsort(wanted, kind="stable")
        ascending = wanted[order]
        event = self.file.shape[1:]
        gathered = np.empty((len(wanted), *event), self.dtype)
        row_bytes = max(1, self.dtype.itemsize * math.prod(event))
        window = ascending // max(1, WINDOW_BYTES // row_bytes)
        starts = np.flatnonzero(np.diff(window, prepend=-1))
        for a, b in zip(starts.tolist(), [*starts[1:].tolist(), len(ascending)], strict=True):
            first, last = int(ascending[a]), int(ascending[b - 1])
            mapped = np.memmap(self.file.path, self.dtype, "r", self.file.offset + first * row_bytes,
                               (last - first + 1, *event))
            gathered[order[a:b]] = mapped[ascending[a:b] - first]
            del mapped  # unmapped here, not at the next collection
        return gathered

    def gather(self, index: torch.Tensor | None) -> torch.Tensor:
        """Rows ``index`` (all when None) as float32 on ``device``: the file's values cast
        by numpy, as a split loaded whole casts them."""
        rows = slice(None) if index is None else index.cpu().numpy()
        values = torch.from_numpy(self[rows].astype(np.float32, copy=False))
        return values.to(self.device)


@dataclass(frozen=True, eq=False)
class Split:
    """One split on one device: examples ``raw`` (N, *event_shape), y int64 (N,) or None
    (``UNLABELLED`` where a label is hidden), and the data's own conditioning vectors c float32
    (N, C) or None.

    A model sees ``raw / scale`` as float32 (:meth:`values`): ``raw`` is float32 with ``scale``
    1, or uint8 grey levels k with ``scale`` 255 (16 for digits; 1 for binarized data) divided
    on the device per batch, 4x smaller than float32 and the same numbers (float32 division is
    correctly rounded, as numpy's was), or :class:`MappedRows` gathered per batch. ``binarize``
    "dynamic": the values are probabilities and every :meth:`batch` draws a fresh Bernoulli
    sample; any other mode: used as they are. ``labelled_per_batch`` is m of :meth:`epoch_order`.
    ``spread`` float32 like ``raw``, or None: every :meth:`batch` draws x ~ N(values, spread²)
    (codes drawn from an encoder's posterior, M1+M2).
    """

    raw: torch.Tensor | MappedRows
    y: torch.Tensor | None = None
    binarize: str = "none"
    c: torch.Tensor | None = None
    labelled_per_batch: int | None = None
    scale: int = 1
    spread: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.raw.shape[0]

    def __repr__(self) -> str:
        return f"Split(n={len(self)}, event_shape={self.event_shape}, binarize={self.binarize!r})"

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.raw.shape[1:])

    @property
    def device(self) -> torch.device:
        return self.raw.device

    def values(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """The rows ``index`` (all when None) as the model sees them before any dynamic
        binarization: float32 (len(index), *event_shape), ``raw / scale``. A new tensor
        unless ``raw`` is float32 and index None (then ``raw`` itself)."""
        if isinstance(self.raw, MappedRows):
            return self.raw.gather(index)
        x = (self.raw if index is None else self.raw[index]).to(torch.float32)
        if self.scale == 1:
            return x
        # A divisor tensor on x's device: CUDA divides by a CPU scalar as a multiplication by
        # its reciprocal, which is not always the correctly rounded quotient.
        return x / torch.tensor(self.scale, dtype=torch.float32, device=x.device)

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """values(index), (B, *event_shape); resampled on every call when binarize is dynamic
        or a ``spread`` is given."""
        x = self.values(index)
        if self.spread is not None:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            return x + self.spread[index] * noise
        return torch.bernoulli(x, generator=generator) if self.binarize == "dynamic" else x

    def epoch_order(self, generator: torch.Generator, batch_size: int) -> torch.Tensor:
        """One epoch's indices, cut into minibatches of ``batch_size`` in order
        (:func:`aevb.data.batching.epoch_order`)."""
        return batching.epoch_order(self.y, len(self), batch_size, generator,
                                    self.labelled_per_batch)

    def steps_per_epoch(self, batch_size: int) -> int:
        """The minibatches of :meth:`epoch_order`."""
        return batching.steps_per_epoch(self.y, len(self), batch_size, self.labelled_per_batch)

    def to(self, device: str | torch.device) -> Split:
        y = None if self.y is None else self.y.to(device)
        c = None if self.c is None else self.c.to(device)
        spread = None if self.spread is None else self.spread.to(device)
        if isinstance(self.raw, MappedRows):  # the file stays where it is; batches move
            return replace(self, raw=replace(self.raw, device=torch.device(device)), y=y, c=c,
                           spread=spread)
        return replace(self, raw=self.raw.to(device), y=y, c=c, spread=spread)


@dataclass(frozen=True)
class Dataset:
    """Three splits plus what a model needs to know about them: ``kind`` "binary" (values in
    {0, 1} as trained on, after any binarization), "unit" ([0, 1]) or "real"; ``num_classes``
    None without labels; ``condition_dim`` C of the splits' vectors ``c``, None without them."""

    name: str
    train: Split
    valid: Split
    test: Split
    event_shape: tuple[int, ...]
    kind: str
    num_classes: int | None
    condition_dim: int | None = None

    def to(self, device: str | torch.device) -> Dataset:
        return replace(self, **{s: getattr(self, s).to(device) for s in SPLITS})

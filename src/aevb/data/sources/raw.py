"""The raw file formats datasets ship in: gzipped IDX files, and pickles of numpy arrays read
by an unpickler that rebuilds arrays and refuses everything else."""

from __future__ import annotations

import gzip
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from aevb.errors import DataError

try:  # numpy >= 2, where numpy.core still imports but warns
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

__all__ = ["read_idx", "unpickle_arrays"]


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes (magic 0x0000080<ndim>), gzipped, as a uint8 array."""
    try:
        data = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path} is not a readable gzip file: {error}") from None
    magic = bytes([0, 0, 8, ndim])
    if data[:4] != magic or len(data) < 4 + 4 * ndim:
        raise DataError(f"{path}: IDX header {data[:4].hex()}; expected magic {magic.hex()}")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = 4 + 4 * ndim + int(np.prod(shape))
    if len(data) != expected:
        raise DataError(f"{path}: {len(data)} bytes; an IDX file of shape {shape} has {expected}")
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Python 3 writes bytes in protocol-2 pickles as _codecs.encode(text, "latin1").
    if encoding != "latin1":
        raise DataError(f"refusing _codecs.encode with encoding {encoding!r} in a pickle")
    return text.encode("latin1")


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and nothing else: any other global is refused before it is called."""

    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # as numpy 1.x pickles it
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # as numpy 2 pickles it
        ("_codecs", "encode"): _latin1_encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.allowed:
            raise DataError(f"refusing to unpickle {module}.{name}: only numpy arrays are allowed")
        return self.allowed[module, name]


def unpickle_arrays(path: Path) -> Any:
    """A gzipped pickle of numpy arrays (tuples, lists, dicts of them), nothing executable."""
    try:
        with gzip.open(path, "rb") as handle:
            return _ArrayUnpickler(handle, encoding="latin1").load()
    except DataError as error:
        raise DataError(f"{path}: {error}") from None
    except Exception as error:  # a broken pickle can raise almost anything
        raise DataError(f"{path} is not a readable gzipped pickle: {error}") from None

"""Brendan Frey's face video frames, the Frey Face data of Kingma & Welling (2014, section 5).

The usual source is Sam Roweis' ``frey_rawface.mat``: a MATLAB (v5) file whose variable ``ff``
is uint8 (560, 1965), 1965 frames of 28 × 20 pixels, each column one frame in row-major order,
so ``ff.T.reshape(-1, 28, 20)`` gives the faces upright. It comes from, in order:

* ``$AEVB_FREY_PATH``: a local ``frey_rawface.mat`` or a directory holding it;
* ``url``: ``FREY_BASE_URL + FREY_FILE``, kept as ``<cache>/raw/frey-face/frey_rawface.mat``.

Every file is checked for that structure (not only its size or name); its sha256 is recorded
in the cached dataset's source text (``dataset_info``), so two caches can be compared. Splits are
a fixed permutation (seed 0): the last 10 % test, the 10 % before valid, the rest train
(1573/196/196); no labels; pixels k/255 (kind "unit"). :func:`frey_available` says without the
network whether ``load_dataset`` would find the data (skip at once, not after a timeout).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import scipy.io

from aevb.data.downloads import default_cache_dir, download
from aevb.data.splits import SPLITS, Arrays
from aevb.errors import DataError

__all__ = ["FREY_BASE_URL", "FREY_FILE", "FREY_SHA256", "FREY_SHAPE", "build", "frey_available",
           "frey_unavailable_reason", "read_frey"]

NAME = "frey-face"
"""The dataset's name in ``aevb.data.datasets``; its cache is ``<cache>/frey-face.npz``."""
FREY_BASE_URL = "https://cs.nyu.edu/~roweis/data/"
FREY_FILE = "frey_rawface.mat"
FREY_SHA256: str | None = None
"""The sha256 of ``FREY_FILE`` as served: unknown (this was written offline, and a guessed
digest would reject the real file), so a download is checked by its structure alone. Its
digest is recorded in the cached dataset's source text (``aevb data info frey-face``) and
logged by pooch at download; to pin it, set ``frey.FREY_SHA256`` to that digest: a download
that differs is then refused and not kept."""
FREY_SHAPE = (560, 1965)
"""``ff``: 28 × 20 pixels (rows) by frames (columns)."""
IMAGE_SHAPE = (28, 20)
VARIABLE = "ff"
HOW_TO_FIX = f"set AEVB_FREY_PATH to a local {FREY_FILE} (or the directory holding it)"


def read_frey(path: Path) -> np.ndarray:
    """The frames of a ``frey_rawface.mat`` as uint8 (N, 28, 20), upright; DataError naming
    the file and what is wrong when it is not a MAT file whose ``ff`` is uint8 ``FREY_SHAPE``."""
    try:
        found = scipy.io.loadmat(path, variable_names=[VARIABLE])
    except Exception as error:  # a file that is not MAT v5 can make loadmat raise almost anything
        raise DataError(f"{path} is not a readable MATLAB (v5) file: {error}") from None
    ff = found.get(VARIABLE)
    if not isinstance(ff, np.ndarray):
        names = sorted(name for name, _, _ in scipy.io.whosmat(path))
        raise DataError(f"{path} has no variable {VARIABLE!r} (it holds {names});"
                        f" expected {VARIABLE!r}, uint8 {FREY_SHAPE}")
    if ff.dtype != np.uint8:
        raise DataError(f"{path}: {VARIABLE!r} has dtype {ff.dtype}; expected uint8")
    if ff.shape != FREY_SHAPE:
        raise DataError(f"{path}: {VARIABLE!r} has shape {ff.shape}; expected {FREY_SHAPE}"
                        " (28 x 20 pixels by frames)")
    return np.ascontiguousarray(ff.T).reshape(-1, *IMAGE_SHAPE)


def build(root: Path) -> tuple[Arrays, str]:
    """(x_* uint8 (N, 1, 28, 20) splits, source text with the file's sha256)."""
    path, origin = _source_file(root)
    faces = read_frey(path)[:, None]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    # A fixed seed, not split_seed: every run is evaluated on the same test faces.
    n = len(faces)
    order, tenth = np.random.default_rng(0).permutation(n), n // 10
    cuts = (order[: n - 2 * tenth], order[n - 2 * tenth : n - tenth], order[n - tenth :])
    arrays = {f"x_{s}": faces[i] for s, i in zip(SPLITS, cuts, strict=True)}
    return arrays, f"{origin} (sha256 {digest})"


def frey_unavailable_reason(cache_dir: str | Path = "") -> str | None:
    """None when Frey Face is cached or ``$AEVB_FREY_PATH`` (or an earlier download) holds a
    valid file; else one line saying why not and how to fix it. Never uses the network."""
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    if (root / f"{NAME}.npz").is_file():
        return None
    try:
        path, _ = _source_file(root, allow_download=False)
        read_frey(path)
    except DataError as error:
        return str(error)
    return None


def frey_available(cache_dir: str | Path = "") -> bool:
    """Whether ``load_dataset`` finds Frey Face without the network (why not:
    :func:`frey_unavailable_reason`)."""
    return frey_unavailable_reason(cache_dir) is None


def _source_file(root: Path, allow_download: bool = True) -> tuple[Path, str]:
    """The file to read and where it came from: $AEVB_FREY_PATH, an earlier download, the URL."""
    local = os.environ.get("AEVB_FREY_PATH")
    if local:
        path = Path(local).expanduser()
        if path.is_dir():
            path = path / FREY_FILE
        if not path.is_file():
            raise DataError(f"AEVB_FREY_PATH={local}: no {FREY_FILE} there")
        return path, f"local file {path}"
    url = FREY_BASE_URL.rstrip("/") + "/" + FREY_FILE
    raw = root / "raw" / NAME / FREY_FILE
    if not raw.is_file():
        if not allow_download:
            raise DataError(f"Frey Face is not cached and AEVB_FREY_PATH is not set: {HOW_TO_FIX},"
                            f" or let aevb download {url}")
        try:
            download(FREY_FILE, (FREY_BASE_URL,), raw, FREY_SHA256)
        except DataError as error:
            raise DataError(f"could not fetch Frey Face from {url}: {error}; {HOW_TO_FIX}") from None
        try:
            read_frey(raw)
        except DataError:
            raw.unlink()  # not what was asked for (an error page?): fetch again next time
            raise
    return raw, url

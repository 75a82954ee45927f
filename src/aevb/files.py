"""Files written atomically: a reader sees the old file or the whole new one, never a part."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = ["atomic_file", "atomic_write_text", "create_new", "fsync_dir"]


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



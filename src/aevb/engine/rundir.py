"""A run directory as a small database: one writer at a time, and changes committed whole.

A run is ``config.toml``, ``metrics.csv`` and ``checkpoints/{last,best}.{safetensors,json}``;
an epoch changes several of them, which must agree, so they are written in a :func:`transaction`:

1. each file is written to a staged name ``.NAME.staged`` beside its own and fsynced;
2. a journal ``RUN/.commit.json`` listing the renames (staged → final) is written atomically
   and its directory fsynced: this is the commit point;
3. the renames are done, the directories fsynced, and the journal deleted.

A kill before 2 leaves the previous state and some staged files, which :func:`recover` deletes
(roll back); a kill after 2 leaves the journal, which :func:`recover` finishes (roll forward).
Rolling forward is idempotent: a staged file that is gone was renamed already, and no staged
name is reused until its journal is deleted. :func:`locked` takes ``RUN/.lock`` (released by the
OS when its process dies) and recovers, so whoever holds the lock never sees half a commit.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from aevb.errors import CheckpointError
from aevb.files import atomic_file, create_new, fsync_dir

__all__ = ["JOURNAL", "LOCK", "RunDirInUse", "Transaction", "check_writable", "locked", "recover",
           "transaction"]

LOCK = ".lock"
JOURNAL = ".commit.json"
_STAGED = ".staged"


class RunDirInUse(CheckpointError):
    """Another process (or thread) holds the run directory's lock."""


_points = 0


def _write_point(name: str) -> None:
    """A point where a crash must leave the run consistent; ``name`` says which, for tests.
    Fault injection: with ``AEVB_FAULT_KILL_AT=N`` the process SIGKILLs itself at its N-th
    write point (from 1), as a crash would. Never set it outside tests."""
    global _points
    _points += 1
    if os.environ.get("AEVB_FAULT_KILL_AT") == str(_points):
        os.kill(os.getpid(), signal.SIGKILL)


def _staged(final: Path) -> Path:
    return final.with_name(f".{final.name}{_STAGED}")


class Transaction:
    """Files for a run directory that appear together or not at all (see the module doc)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir).absolute()
        self.renames: dict[str, str] = {}  # final → staged, relative to run_dir

    def write(self, name: str | Path, data: bytes | str) -> None:
        """Stage ``data`` (str as UTF-8) for ``name`` (in the run directory): on disk and
        fsynced now, visible only once the transaction commits."""
        inside = Path(name).absolute()
        final = inside if inside.is_relative_to(self.run_dir) else self.run_dir / name
        staged = _staged(final)
        raw = data.encode("utf-8") if isinstance(data, str) else data
        final.parent.mkdir(parents=True, exist_ok=True)
        # Kept in the staged-files list before it exists, so an error while writing discards it.
        self.renames[str(final.relative_to(self.run_dir))] = str(staged.relative_to(self.run_dir))
        with os.fdopen(create_new(staged, exclusive=False), "wb") as handle:
            handle.write(raw[: len(raw) // 2])
            handle.flush()
            _write_point(f"stage {final.relative_to(self.run_dir)}")  # a torn staged file
            handle.write(raw[len(raw) // 2 :])
            handle.flush()
            os.fsync(handle.fileno())

    def commit(self) -> None:
        """Make the staged files durable, write the journal (the commit point), rename."""
        if not self.renames:
            return
        pairs = [[staged, final] for final, staged in self.renames.items()]
        try:
            for folder in {(self.run_dir / s).parent for s in self.renames.values()}:
                fsync_dir(folder)
            with atomic_file(self.run_dir / JOURNAL) as handle:
                handle.write(json.dumps({"renames": pairs}).encode("utf-8"))
                handle.flush()
                _write_point("journal")  # written, not yet renamed into place: not committed
        except BaseException:
            self.discard()
            raise
        _write_point("commit")
        _roll_forward(self.run_dir, pairs)

    def discard(self) -> None:
        for staged in self.renames.values():
            (self.run_dir / staged).unlink(missing_ok=True)
        self.renames.clear()


@contextmanager
def transaction(run_dir: str | Path) -> Iterator[Transaction]:
    """``with transaction(run) as tx: tx.write(name, data)...``: committed when the block ends,
    discarded if it raises. Hold :func:`locked` around it."""
    tx = Transaction(Path(run_dir))
    try:
        yield tx
    except BaseException:
        tx.discard()
        raise
    tx.commit()


def _roll_forward(run_dir: Path, pairs: list[list[str]]) -> None:
    for staged, final in pairs:
        if (run_dir / staged).exists():  # else renamed before a crash
            os.replace(run_dir / staged, run_dir / final)
        _write_point(f"rename {final}")
    for folder in {(run_dir / final).parent for _, final in pairs}:
        fsync_dir(folder)
    (run_dir / JOURNAL).unlink()
    fsync_dir(run_dir)


def recover(run_dir: str | Path) -> None:
    """Finish a commit interrupted after its commit point, undo one interrupted before it, delete
    interrupted atomic writes' ``.NAME.*.part``. Idempotent; hold the lock (:func:`locked` does)."""
    run_dir = Path(run_dir)
    journal = run_dir / JOURNAL
    if journal.is_file():
        try:
            pairs = json.loads(journal.read_text("utf-8"))["renames"]
            inside = all(".." not in Path(p).parts and not Path(p).is_absolute()
                         for pair in pairs for p in pair)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"cannot recover {run_dir}: its journal {journal} is"
                                  f" unreadable ({error}); remove it to roll back") from None
        if not inside:
            raise CheckpointError(f"cannot recover {run_dir}: {journal} names paths outside it")
        _roll_forward(run_dir, pairs)
    for folder in (run_dir, run_dir / "checkpoints"):
        if folder.is_dir():
            for leftover in [*folder.glob(f".*{_STAGED}"), *folder.glob(".*.part")]:
                leftover.unlink(missing_ok=True)


def _owner(lock_path: Path) -> str:
    try:
        pid = lock_path.read_text("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


@contextmanager
def locked(run_dir: str | Path) -> Iterator[Path]:
    """Hold the run directory's lock, after recovering it, or fail at once if another holds it.
    Everything that writes into a run directory holds it; the same thread may re-enter it. The
    lock file holds its owner's pid, for the error message, and stays behind: deleting a lock
    file races with the next process opening it."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():  # filelock would create the missing directories
        raise CheckpointError(f"no run directory at {run_dir}")
    path = run_dir.resolve() / LOCK
    lock = FileLock(path, timeout=0, is_singleton=True)
    try:
        lock.acquire()
    except Timeout:
        raise RunDirInUse(f"run directory {run_dir} is in use by another aevb process"
                          f"{_owner(path)}; wait for it to end or choose another") from None
    except OSError as error:
        raise CheckpointError(f"run directory {run_dir} is not writable: {error.strerror}") from None
    try:
        if lock.lock_counter == 1:
            path.write_text(f"{os.getpid()}\n", "ascii")
            recover(run_dir)
        yield run_dir
    finally:
        lock.release()


def check_writable(run_dir: Path, names: Iterable[str]) -> None:
    """Fail with one clear line, before any work, unless every file ``names`` (relative to
    ``run_dir``) can be written: each is a file or absent, its folders are writable folders."""
    for name in names:
        path = run_dir / name
        if path.is_dir():
            raise CheckpointError(f"cannot write {path}: it is a directory, not a file")
        for folder in reversed(path.relative_to(run_dir).parents):
            folder = run_dir / folder
            if folder.exists() and not folder.is_dir():
                raise CheckpointError(f"cannot write {path}: {folder} is a file, not a directory")
            if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
                raise CheckpointError(f"run directory {folder} is not writable")

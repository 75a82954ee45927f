"""The run directory as a small database: one writer, epochs committed whole, crash-safe.

The key test kills training with SIGKILL at every write point of an epoch and checks that the
resumed run ends bit-identical to one never interrupted. Its driver runs in a fresh interpreter
(``python tests/test_rundir.py ROOT``) that forks one child per run, so torch is imported once
and no child inherits the OpenMP threads of a process that has already computed.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

from aevb.config.overrides import apply_overrides
from aevb.config.run import Config
from aevb.engine import rundir
from aevb.errors import CheckpointError
from aevb.files import atomic_write_text

TINY = {"dataset": "digits", "hidden": "16", "latent_dim": "2", "epochs": "2", "batch_size": "100",
        "is_samples": "5", "precision": "float32", "threads": "1"}


def tiny_config(**overrides: object) -> Config:
    return apply_overrides(Config(), {**TINY, **{k: str(v) for k, v in overrides.items()}})


def leftovers(run: Path) -> list[str]:
    """Temp files, staged files and journals: none may outlive a recovery."""
    names = [p.name for folder in (run, run / "checkpoints") if folder.is_dir()
             for p in folder.iterdir()]
    return sorted(n for n in names if n.endswith((".part", ".staged")) or n == rundir.JOURNAL)


# --- commit and recovery --------------------------------------------------------------------

def test_a_transaction_appears_whole_or_not_at_all(tmp_path):
    (tmp_path / "a").write_text("old a")
    with pytest.raises(KeyboardInterrupt), rundir.transaction(tmp_path) as tx:
        tx.write("a", "new a")
        tx.write("sub/b", b"new b")
        raise KeyboardInterrupt
    assert (tmp_path / "a").read_text() == "old a" and not (tmp_path / "sub/b").exists()
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "sub") == []
    with rundir.transaction(tmp_path) as tx:
        tx.write("a", "new a")
        tx.write("sub/b", b"new b")
    assert (tmp_path / "a").read_text() == "new a" and (tmp_path / "sub/b").read_text() == "new b"
    assert leftovers(tmp_path) == []


def test_recover_rolls_a_journal_forward_and_staged_files_back(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.csv").write_text("old")
    (run / "checkpoints" / ".last.safetensors.staged").write_text("new last")
    (run / "checkpoints" / "last.safetensors").write_text("old last")
    # metrics.csv was renamed before the crash; last.safetensors was not
    (run / rundir.JOURNAL).write_text(json.dumps({"renames": [
        ["checkpoints/.last.safetensors.staged", "checkpoints/last.safetensors"],
        [".metrics.csv.staged", "metrics.csv"]]}))
    rundir.recover(run)
    assert (run / "checkpoints" / "last.safetensors").read_text() == "new last"
    assert (run / "metrics.csv").read_text() == "old"
    assert leftovers(run) == []
    rundir.recover(run)  # idempotent
    # staged files without a journal were never committed; .part files are orphans
    (run / ".metrics.csv.staged").write_text("uncommitted")
    (run / "checkpoints" / ".last.safetensors.1a2b3c4d.part").write_text("orphan")
    rundir.recover(run)
    assert (run / "metrics.csv").read_text() == "old" and leftovers(run) == []


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_get_the_users_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "atomic.txt", "x")
        with rundir.transaction(tmp_path) as tx:
            tx.write("committed.txt", "x")
    finally:
        os.umask(previous)
    for name in ("atomic.txt", "committed.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


# --- the lock -------------------------------------------------------------------------------

HOLD = """
import sys, time
from aevb.engine.rundir import locked
with locked(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_fails_at_once_naming_the_holder(tmp_path):
    from aevb.engine.loop import train

    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        started = time.perf_counter()
        with pytest.raises(rundir.RunDirInUse, match=rf"in use by another aevb process \(pid {holder.pid}\)"):
            train(tiny_config(), run, progress=False)
        assert time.perf_counter() - started < 5
        assert not (run / "config.toml").exists()
    finally:
        holder.kill()
        holder.wait()
    with rundir.locked(run):  # the OS released the dead holder's lock
        pass


def test_the_lock_is_reentrant_in_a_thread_and_exclusive_across_threads(tmp_path):
    errors: list[BaseException] = []

    def other() -> None:
        try:
            with rundir.locked(tmp_path):
                pass
        except BaseException as error:
            errors.append(error)

    with rundir.locked(tmp_path), rundir.locked(tmp_path):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert len(errors) == 1 and isinstance(errors[0], rundir.RunDirInUse)
    with rundir.locked(tmp_path):  # released by both exits
        pass


# --- the run's layout -----------------------------------------------------------------------

@pytest.mark.parametrize("make", ["checkpoints-file", "metrics-dir", "last-dir"])
def test_a_path_of_the_wrong_kind_fails_before_training(tmp_path, monkeypatch, make):
    from aevb.engine import loop as training

    run = tmp_path / "run"
    run.mkdir()
    if make == "checkpoints-file":
        (run / "checkpoints").write_text("")
    elif make == "metrics-dir":
        (run / "metrics.csv").mkdir()
    else:
        (run / "checkpoints" / "last.safetensors").mkdir(parents=True)
    monkeypatch.setattr(training, "load_run_data", lambda *a, **k: pytest.fail("too late"))
    kind = "a file, not a directory" if make == "checkpoints-file" else "a directory, not a file"
    with pytest.raises(CheckpointError, match=kind):
        training.train(tiny_config(), run, progress=False)


def test_resume_without_a_finished_epoch_starts_from_scratch(tmp_path):
    from aevb.engine.loop import train

    with pytest.raises(CheckpointError, match="cannot resume"):
        train(tiny_config(epochs=1), tmp_path / "missing", resume=True, progress=False)
    (tmp_path / "started").mkdir()
    (tmp_path / "started" / "config.toml").write_text("")  # killed before epoch 1 ended
    resumed = train(tiny_config(epochs=1), tmp_path / "started", resume=True, progress=False)
    fresh = train(tiny_config(epochs=1), tmp_path / "fresh", progress=False)
    assert resumed.history[0]["valid_elbo"] == fresh.history[0]["valid_elbo"]


# --- fault injection ------------------------------------------------------------------------

def _fork(work: Callable[[], None]) -> int:
    """Run ``work`` in a forked child; its exit code (negative: the signal that killed it)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            work()
            code = 0
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _fault_driver(root: Path) -> None:
    """Train uninterrupted (recording the write points), then for each chosen point K: train,
    killed at K, and resume. Writes ``ROOT/report.json``; the test compares the runs."""
    import torch._dynamo  # noqa: F401 - imported by the first optimizer: 2 s a child, else

    from aevb.data import load_dataset
    from aevb.engine.loop import train

    config = tiny_config()
    dataset = load_dataset(config.data)

    def run(out: Path, resume: bool, kill_at: int | None = None, trace: bool = False) -> int:
        def work() -> None:
            if kill_at is not None:
                os.environ["AEVB_FAULT_KILL_AT"] = str(kill_at)
            if trace:
                names: list[str] = []
                point = rundir._write_point
                rundir._write_point = lambda name: (names.append(name), point(name))[1]
            train(config, out, resume=resume, progress=False, dataset=dataset)
            if trace:
                (root / "points.json").write_text(json.dumps(names))
        return _fork(work)

    assert run(root / "straight", resume=False, trace=True) == 0
    points = json.loads((root / "points.json").read_text())
    # the points of each transaction: config.toml, then one per epoch
    txs: list[list[int]] = []
    for k, name in enumerate(points, start=1):
        if not txs or name.startswith("stage") and points[k - 2].startswith("rename"):
            txs.append([])
        txs[-1].append(k)
    chosen = txs[0] + txs[1][:1] + [k for k in txs[1] if points[k - 1] == "commit"] + txs[2]
    report: dict[str, object] = {"points": points, "transactions": txs, "runs": {}}
    for k in chosen:
        out = root / f"kill-{k}"
        killed = run(out, resume=False, kill_at=k)
        resumed = run(out, resume=True)
        report["runs"][str(k)] = [points[k - 1], killed, resumed]  # type: ignore[index]
    (root / "report.json").write_text(json.dumps(report, indent=1))


def _run_state(run: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    from aevb.engine.checkpoint import checkpoint_path, read_checkpoint

    state: dict[str, object] = {}
    for which in ("last", "best"):
        state[which] = load_file(checkpoint_path(run, which))
        header = read_checkpoint(checkpoint_path(run, which))[1]
        state[f"{which}_at"] = [header[k] for k in ("epoch", "step", "best_epoch", "best_value")]
        sidecar = json.loads(checkpoint_path(run, which).with_suffix(".json").read_text())
        state[f"{which}.json"] = [sidecar[k] for k in ("epoch", "step", "best_epoch")]
    with open(run / "metrics.csv", newline="") as handle:
        state["metrics"] = [{k: v for k, v in row.items() if k != "seconds"}
                            for row in csv.DictReader(handle)]
    return state


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL")
def test_a_kill_at_any_write_point_resumes_to_the_uninterrupted_run(tmp_path):
    import torch

    done = subprocess.run([sys.executable, __file__, str(tmp_path)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONHASHSEED": "0"})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    points, txs = report["points"], report["transactions"]
    assert len(txs) == 3  # config.toml, then 2 epochs: a kill in the last one is not repaired
    # by a later epoch rewriting the files
    epoch2 = [points[k - 1] for k in txs[2]]
    assert "stage checkpoints/best.safetensors" in epoch2  # best improves in the killed epoch
    assert epoch2 == ["stage checkpoints/last.safetensors", "stage checkpoints/last.json",
                      "stage checkpoints/best.safetensors", "stage checkpoints/best.json",
                      "stage metrics.csv", "journal", "commit",
                      "rename checkpoints/last.safetensors", "rename checkpoints/last.json",
                      "rename checkpoints/best.safetensors", "rename checkpoints/best.json",
                      "rename metrics.csv"]
    straight = _run_state(tmp_path / "straight")
    assert straight["last_at"][2] == 2  # type: ignore[index]
    assert len(report["runs"]) == len(txs[0]) + 2 + len(txs[2])
    for k, (point, killed, resumed) in report["runs"].items():
        where = f"killed at write point {k} ({point})"
        assert killed == -signal.SIGKILL, where
        assert resumed == 0, where
        run = tmp_path / f"kill-{k}"
        assert leftovers(run) == [], where
        state = _run_state(run)
        for key, value in straight.items():
            if isinstance(value, dict):
                assert value.keys() == state[key].keys(), where  # type: ignore[attr-defined]
                for name, tensor in value.items():
                    assert torch.equal(tensor, state[key][name]), f"{where}: {key} {name}"  # type: ignore[index]
            else:
                assert state[key] == value, f"{where}: {key}"


if __name__ == "__main__":
    _fault_driver(Path(sys.argv[1]))

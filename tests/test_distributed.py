"""Data-parallel training under torchrun: two gloo processes on CPU against one process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from aevb.cli.main import main
from aevb.config.overrides import apply_overrides
from aevb.config.run import Config
from aevb.engine import distributed
from aevb.engine.loop import RUN_FILES, train
from aevb.errors import ConfigError

# A partial last minibatch of 1 example (101 = 2 x 50 + 1): one rank then has no example and
# must still join the gradient all-reduce. digits is binarized dynamically: both runs must
# draw the same Bernoulli samples. ae's loss has no noise of its own, so the two runs take
# the same steps up to the order of float sums.
RUN = ["--dataset", "digits", "--model", "ae", "--train_size", "101", "--batch_size", "50",
       "--epochs", "2", "--precision", "float32", "--threads", "1", "--plots", "false",
       "--max_points", "50", "--is_samples", "10"]

# Rank 1 runs under an audit hook that logs, and refuses, every write into the run directory.
WORKER = textwrap.dedent('''
    import os, sys
    from pathlib import Path
    RUN, LOG = Path(os.environ["TEST_RUN_DIR"]).resolve(), os.environ["TEST_WRITES_LOG"]
    WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def inside(path):
        try:
            return Path(os.fsdecode(path)).resolve().is_relative_to(RUN)
        except (TypeError, ValueError):
            return False

    def audit(event, args):
        if event == "open":
            touched = args[2] & WRITE and inside(args[0])
        elif event in ("os.mkdir", "os.remove", "os.rmdir", "os.rename", "os.truncate"):
            touched = isinstance(args[0], (str, bytes, os.PathLike)) and inside(args[0])
        else:
            return
        if touched:
            with open(LOG, "a") as log:
                log.write(f"{event} {args[0]}\\n")
            raise PermissionError(f"rank {os.environ['RANK']} wrote {args[0]}")

    if os.environ["RANK"] != "0":
        sys.addaudithook(audit)
    from aevb.cli.main import main
    sys.exit(main())
''')


def _torchrun(tmp_path: Path, target: list[str], args: list[str], **env: str
              ) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    # --standalone: a rendezvous on a free port of this machine, chosen by torchrun
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               "2", *target, *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120,
                          cwd=tmp_path)
    if done.returncode != 0:
        Path("/tmp/ddp_fail_stderr.txt").write_text(done.stdout + "\n=====\n" + done.stderr)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def _weights(run: Path) -> dict[str, torch.Tensor]:
    tensors = load_file(run / "checkpoints" / "last.safetensors")
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def test_two_processes_train_as_one_and_only_rank_0_writes(tmp_path: Path) -> None:
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    two, writes = tmp_path / "two", tmp_path / "writes.log"
    done = _torchrun(tmp_path, [str(worker)], ["train", *RUN, "--out", str(two), "--quiet"],
                     TEST_RUN_DIR=str(two), TEST_WRITES_LOG=str(writes))
    one = tmp_path / "one"
    overrides = dict(zip(RUN[::2], RUN[1::2], strict=True))
    train(apply_overrides(Config(), {k.removeprefix("--"): v for k, v in overrides.items()}), one,
          progress=False)

    assert not writes.exists()
    assert done.stdout.count("trained ae on digits") == 1  # rank 0 alone reports
    # the same files as one process's run, with rank 1's RNG state added to the checkpoint
    written = {str(p.relative_to(two)) for p in two.rglob("*") if p.is_file()}
    assert set(RUN_FILES) - {".commit.json"} <= written
    assert {"report.md", "evaluation.json"} <= written
    tensors = load_file(two / "checkpoints" / "last.safetensors")
    assert "rng.torch.rank1" in tensors and "rng.torch.rank2" not in tensors
    # Two steps an epoch on 50 examples each, two epochs, Adam: the weights agree to float
    # rounding (a sum over 2 x 25 examples instead of 50; Adam's first steps are ~lr sign(g),
    # so a rounding error moves a weight by at most ~1e-7 of lr-sized steps).
    ours, theirs = _weights(two), _weights(one)
    assert ours.keys() == theirs.keys()
    for name, weight in theirs.items():
        scale = weight.abs().max().item()
        torch.testing.assert_close(ours[name], weight, rtol=0, atol=1e-5 * scale, msg=name)
    rows = [line.split(",") for line in (two / "metrics.csv").read_text().splitlines()]
    ref = [line.split(",") for line in (one / "metrics.csv").read_text().splitlines()]
    assert rows[0] == ref[0] and len(rows) == len(ref) == 3
    for row, expected in zip(rows[1:], ref[1:], strict=True):
        loss = ref[0].index("train_loss")
        assert float(row[loss]) == pytest.approx(float(expected[loss]), rel=1e-5)


def test_resume_under_two_processes_continues_exactly(tmp_path: Path) -> None:
    # A vae: each rank draws its own reparameterization noise, kept in the checkpoint per rank.
    run = ["train", "--dataset", "digits", "--train_size", "200", "--batch_size", "50",
           "--precision", "float32", "--no-eval", "--plots", "false", "--quiet"]
    _torchrun(tmp_path, ["-m", "aevb"], [*run, "--epochs", "2", "--out", "straight"])
    _torchrun(tmp_path, ["-m", "aevb"], [*run, "--epochs", "1", "--out", "resumed"])
    _torchrun(tmp_path, ["-m", "aevb"], [*run, "--epochs", "2", "--out", "resumed", "--resume"])
    straight, resumed = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_shards_split_a_minibatch_in_strides(monkeypatch: pytest.MonkeyPatch) -> None:
    assert distributed.shard(7) == (slice(0, 7, 1), 7)  # one process: the whole minibatch
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    for n in (1, 2, 7, 9):
        seen = []
        for r in range(3):
            monkeypatch.setattr(distributed, "rank", lambda r=r: r)
            share, count = distributed.shard(n)
            positions = list(range(n))[share]
            assert count in (len(positions), 0) and (count or positions == [0])
            seen += positions if count else []
        assert sorted(seen) == list(range(n))  # each position exactly once


def test_a_minibatch_must_split_evenly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    config = apply_overrides(Config(), {"dataset": "digits", "batch_size": "25"})
    with pytest.raises(ConfigError, match="batch_size=25 must be a multiple of the 2 processes"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # nothing was written


def test_under_torchrun_only_train_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Any other command would run once per rank, every rank writing the same files: refused
    with what to do instead, before anything is read or written."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["evaluate", str(tmp_path / "run")]) == 2
    assert "only `aevb train` runs data-parallel" in capsys.readouterr().err
    assert main(["reproduce", "fig2", "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()

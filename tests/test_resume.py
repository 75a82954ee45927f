"""Resume honours what the user changed, refuses what it cannot honour, and checks the data;
a checkpoint that does not fit what aevb writes is one CheckpointError, never a traceback."""

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from aevb.cli.main import main
from aevb.config.overrides import apply_overrides
from aevb.config.run import Config
from aevb.data import load_dataset
from aevb.engine.checkpoint import checkpoint_path, read_checkpoint
from aevb.engine.loop import train
from aevb.engine.resume import check_same_data, data_fingerprint
from aevb.errors import AevbError, ConfigError, DataError
from aevb.reporting.report import write_report

TINY = {"dataset": "digits", "latent_dim": "2", "hidden": "16", "precision": "float32",
        "threads": "1", "batch_size": "100"}


def tiny(**overrides: Any) -> Config:
    return apply_overrides(Config(), {**TINY, **{k: str(v) for k, v in overrides.items()}})


def last_header(run: Path) -> dict[str, Any]:
    return read_checkpoint(checkpoint_path(run, "last"))[1]


def test_resume_applies_a_changed_lr_and_weight_decay_and_records_them(tmp_path):
    run = tmp_path / "run"
    train(tiny(epochs=2), run, progress=False)
    train(tiny(epochs=4, lr=1e-4, weight_decay=1e-5), run, resume=True, progress=False)
    header = last_header(run)
    groups = header["optimizer"]["param_groups"]
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(1e-4, 1e-5)]
    assert header["changes"] == [
        {"epoch": 3, "key": "lr", "old": 1e-3, "new": 1e-4},
        {"epoch": 3, "key": "weight_decay", "old": 0.0, "new": 1e-5},
        {"epoch": 3, "key": "epochs", "old": 2, "new": 4},
    ]
    # changes accumulate over resumes; an unchanged setting adds nothing
    train(tiny(epochs=5, lr=1e-4, weight_decay=1e-5, patience=3), run, resume=True,
          progress=False)
    changes = last_header(run)["changes"]
    assert [(c["epoch"], c["key"]) for c in changes[3:]] == [(5, "epochs"), (5, "patience")]
    report = write_report(run).read_text()
    assert "lr 0.001 → 0.0001 at epoch 3" in report
    assert "epochs 4 → 5 at epoch 5" in report


def test_a_lower_lr_rescues_a_run_that_diverged(tmp_path):
    run = tmp_path / "run"
    train(tiny(epochs=1, lr=0.3), run, progress=False)
    with pytest.raises(AevbError, match="diverged"):
        train(tiny(epochs=3, lr=1e3), run, resume=True, progress=False)
    result = train(tiny(epochs=3, lr=1e-4), run, resume=True, progress=False)
    assert all(math.isfinite(row["train_loss"]) for row in result.history)
    header = last_header(run)
    assert header["optimizer"]["param_groups"][0]["lr"] == 1e-4
    assert {"epoch": 2, "key": "lr", "old": 0.3, "new": 1e-4} in header["changes"]


@pytest.mark.parametrize(("key", "value"), [("optimizer", "sgd"), ("optimizer", "adagrad"),
                                            ("seed", 1), ("batch_size", 50)])
def test_resume_refuses_a_change_it_cannot_honour(tmp_path, key, value):
    run = tmp_path / "run"
    train(tiny(epochs=1), run, progress=False)
    with pytest.raises(ConfigError, match=f"train.{key}"):
        train(tiny(epochs=2, **{key: value}), run, resume=True, progress=False)


def test_resume_with_another_precision_and_patience_just_works(tmp_path):
    run = tmp_path / "run"
    train(tiny(epochs=1), run, progress=False)
    result = train(tiny(epochs=2, precision="bfloat16", patience=4), run, resume=True,
                   progress=False)
    assert len(result.history) == 2
    assert [c["key"] for c in last_header(run)["changes"]] == ["epochs", "patience", "precision"]


def test_the_fingerprint_sees_one_changed_value_and_hashes_what_is_stored():
    config = tiny()
    dataset = load_dataset(config.data)
    assert config.data.binarize == "dynamic"
    prints = data_fingerprint(dataset)
    assert prints["train"]["x"]["shape"] == list(dataset.train.values().shape)
    assert set(prints["valid"]) == {"x", "y"}
    header = {"data_fingerprint": prints}
    check_same_data(header, dataset, "digits")  # the same data passes
    check_same_data({}, dataset, "digits")  # a checkpoint from before fingerprints passes
    dataset.valid.raw[3, 0, 4, 4] ^= 1  # stored {0, 1} as uint8: one value flipped
    with pytest.raises(DataError, match="valid split's x holds other values"):
        check_same_data(header, dataset, "digits")


def test_resume_refuses_changed_data(tmp_path):
    path = tmp_path / "x.npy"
    x = np.random.default_rng(0).random((200, 6)).astype(np.float32)
    np.save(path, x)
    config = apply_overrides(tiny(), {"dataset": str(path), "binarize": "none", "epochs": "1",
                                      "likelihood": "gaussian-learned"})
    train(config, tmp_path / "run", progress=False)
    assert "data_fingerprint" in last_header(tmp_path / "run")
    x[17, 2] += 0.1
    np.save(path, x)
    with pytest.raises(DataError, match=r"x\.npy is not the data .* split's x holds other"):
        train(apply_overrides(config, {"epochs": "2"}), tmp_path / "run", resume=True,
              progress=False)


def _one_epoch_checkpoint(run: Path) -> tuple[Path, dict[str, str], dict[str, torch.Tensor]]:
    """A tiny run trained for one epoch: its last checkpoint's path, metadata and tensors, to
    edit and write back."""
    train(tiny(epochs=1), run, progress=False)
    path = checkpoint_path(run, "last")
    with safe_open(str(path), framework="pt") as handle:
        return path, handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118


def test_a_run_moved_from_a_gpu_resumes_on_the_cpu(tmp_path):
    """The data order's generator state is a device's own: on another device it is seeded
    afresh from the seed and the step, and the move is recorded."""
    run = tmp_path / "run"
    path, metadata, tensors = _one_epoch_checkpoint(run)
    tensors["rng.data"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's seed, offset
    tensors["rng.cuda"] = torch.zeros(16, dtype=torch.uint8)
    save_file(tensors, str(path), metadata=metadata)
    result = train(tiny(epochs=2), run, resume=True, progress=False)
    assert math.isfinite(result.history[-1]["valid_elbo"])
    assert {"epoch": 2, "key": "device", "old": "cuda", "new": "cpu"} in last_header(run)["changes"]


def test_a_checkpoint_written_before_train_size_was_recorded_resumes(tmp_path):
    """Checkpoints from before ``data_spec.train_size`` existed have none: resume takes the
    data's, and a real difference in the spec is still refused."""
    run = tmp_path / "run"
    path, metadata, tensors = _one_epoch_checkpoint(run)
    header = json.loads(metadata["aevb"])
    assert header["data_spec"].pop("train_size") is not None
    save_file(tensors, str(path), metadata={**metadata, "aevb": json.dumps(header)})
    result = train(tiny(epochs=2), run, resume=True, progress=False)
    assert [row["epoch"] for row in result.history] == [1, 2]
    header["data_spec"]["num_classes"] = 7
    save_file(tensors, str(path), metadata={**metadata, "aevb": json.dumps(header)})
    with pytest.raises(AevbError, match="data spec"):
        train(tiny(epochs=3), run, resume=True, progress=False)


def test_the_cli_resumes_with_a_new_lr_and_refuses_another_optimizer(tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny(epochs=1), run, progress=False)
    assert main(["train", "--out", str(run), "--resume", "--optimizer", "sgd", "--no-eval",
                 "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("aevb: error: cannot resume with train.optimizer = 'sgd'")
    assert error.count("\n") == 1
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--lr", "5e-4",
                 "--no-eval", "--quiet"]) == 0
    assert last_header(run)["optimizer"]["param_groups"][0]["lr"] == 5e-4

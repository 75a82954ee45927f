"""Every bad input gets one clear error (``aevb: error: ...``, exit status 2) before anything
runs or is written; and the small things users hit (file names, --threads)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aevb.cli.main import main
from aevb.config.overrides import apply_overrides
from aevb.config.run import Config, load_config
from aevb.engine.memory import check_model_fits, model_bytes
from aevb.errors import ConfigError, DataError
from aevb.evaluation.evaluate import evaluation_file
from aevb.models import DataSpec, build_model

TINY = ["--dataset", "digits", "--latent_dim", "2", "--hidden", "16", "--is_samples", "4",
        "--quiet"]


def one_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI on ``argv``; it must fail with exit status 2 and one line on stderr."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aevb: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("inputs") / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), *TINY]) == 0
    return out


# A. numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--lr", "nan", "train.lr must be a finite number"),
    ("--lr", "inf", "train.lr must be a finite number"),
    ("--beta", "nan", "model.beta must be a finite number"),
    ("--noise_level", "-inf", "noise_level must be a finite number"),
    ("--kl_warmup", "2", "kl_warmup is a fraction"),
    ("--sigma", "0", "sigma"),
    ("--latent_dim", "1" + "0" * 30, "model.latent_dim is too large"),
])
def test_numbers_are_finite_and_in_range_before_anything_runs(capsys, tmp_path, flag, value,
                                                              message):
    line = one_error(capsys, ["train", "--dataset", "digits", flag, value,
                              "--out", str(tmp_path / "run")])
    assert message in line
    assert not (tmp_path / "run").exists()


def test_a_config_file_with_nan_is_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nlr = nan\n")
    with pytest.raises(ConfigError, match="train.lr must be a finite number"):
        load_config(path)
    path.write_text("[model]\nname = \"wae-mmd\"\nlambda_ = -1.0\n")
    with pytest.raises(ConfigError, match="lambda must be >= 0"):
        load_config(path)


# B. hidden sizes -------------------------------------------------------------------------


def test_an_empty_hidden_is_an_error_and_no_layers_is_said_as_brackets(capsys, tmp_path):
    line = one_error(capsys, ["train", "--dataset", "digits", "--hidden", "",
                              "--out", str(tmp_path / "run")])
    assert "model.net.hidden must be a comma-separated list" in line and "[]" in line
    assert apply_overrides(Config(), {"hidden": "[]"}).model.net.hidden == ()
    with pytest.raises(ConfigError, match="positive sizes"):
        apply_overrides(Config(), {"hidden": "400,0"})


# C. sizes that cannot fit ----------------------------------------------------------------


def test_model_bytes_count_weights_gradients_optimizer_state_and_buffers():
    config = Config()
    spec = DataSpec((1, 8, 8), "binary")
    model = build_model(config.model, spec)
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers())
    assert model_bytes(config.model, spec, "adam") == 4 * (4 * params + buffers)
    assert model_bytes(config.model, spec, "sgd") == 4 * (2 * params + buffers)


def test_a_model_too_large_for_memory_is_refused_with_both_sizes(monkeypatch):
    spec = DataSpec((1, 28, 28), "binary")
    huge = apply_overrides(Config(), {"latent_dim": 100_000_000})
    with pytest.raises(ConfigError, match=r"needs about 2,2\d\d GiB .*; [\d.,]+ GiB are available"):
        check_model_fits(huge, spec)
    check_model_fits(Config(), spec)  # the paper's net fits
    monkeypatch.setattr("aevb.engine.memory.available_bytes", lambda device: 1000)
    with pytest.raises(ConfigError, match=r"0.0122 GiB .*; 9.31e-07 GiB are available"):
        check_model_fits(Config(), spec)


def test_train_refuses_a_model_too_large_before_allocating(capsys, tmp_path):
    line = one_error(capsys, ["train", "--dataset", "digits", "--latent_dim", "100000000",
                              "--out", str(tmp_path / "run"), "--quiet"])
    assert "GiB for its parameters, gradients and optimizer state" in line


# D. data files ---------------------------------------------------------------------------


def test_complex_data_and_text_files_are_clear_data_errors(capsys, tmp_path):
    from aevb.data.datasets import DataConfig, load_dataset

    np.save(tmp_path / "complex.npy", np.ones((20, 3), dtype=np.complex64))
    with pytest.raises(DataError, match="complex64; expected real numbers"):
        load_dataset(DataConfig(name=str(tmp_path / "complex.npy"), binarize="none"))
    (tmp_path / "text.npy").write_text("1,2,3\n4,5,6\n")
    with pytest.raises(DataError, match=r"text.npy is not a .npy/.npz array file"):
        load_dataset(DataConfig(name=str(tmp_path / "text.npy"), binarize="none"))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}] * 12, dtype=object))
    with pytest.raises(DataError, match="holds Python objects"):
        load_dataset(DataConfig(name=str(tmp_path / "objects.npy"), binarize="none"))
    line = one_error(capsys, ["train", "--dataset", str(tmp_path / "text.npy"),
                              "--out", str(tmp_path / "run")])
    assert "allow_pickle" not in line and "is not a .npy/.npz array file" in line


# E. sample -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", ["0", "-5", "many"])
def test_sample_needs_a_positive_n(capsys, run, n):
    assert "argument --n: must be a positive integer" in one_error(
        capsys, ["sample", str(run), "--n", n])


def test_sample_writes_its_own_file_and_never_creates_directories(capsys, run, tmp_path):
    drawn = (run / "samples.png").read_bytes()
    assert main(["sample", str(run), "--n", "4"]) == 0
    assert str(run / "samples-n4-seed0.png") in capsys.readouterr().out
    assert (run / "samples-n4-seed0.png").stat().st_size > 0
    assert (run / "samples.png").read_bytes() == drawn
    missing = tmp_path / "no" / "dir"
    assert f"directory {missing} does not exist" in one_error(
        capsys, ["sample", str(run), "--out", str(missing / "x.png")])
    assert not (tmp_path / "no").exists()


# F. compare ------------------------------------------------------------------------------


@pytest.mark.parametrize("models", ["ae,pca,nope", "../../escaped", "ae,ae", ""])
def test_compare_checks_every_model_before_training_or_creating(capsys, tmp_path, models):
    out = tmp_path / "a" / "b"
    line = one_error(capsys, ["compare", "--dataset", "digits", "--models", models,
                              "--out", str(out), "--epochs", "1"])
    assert "unknown model" in line or "one or more different models" in line
    assert list(tmp_path.iterdir()) == []


def test_sweep_checks_every_beta_first(capsys, tmp_path):
    line = one_error(capsys, ["sweep", "--beta", "1,nan", "--dataset", "digits",
                              "--out", str(tmp_path / "rd")])
    assert "finite numbers >= 0" in line and not (tmp_path / "rd").exists()


# G. evaluate files -----------------------------------------------------------------------


def test_evaluation_file_names_what_differs_from_the_runs_own():
    from aevb.config.schema import EvalConfig

    own = EvalConfig(is_samples=1000)
    assert evaluation_file(own, own) == "evaluation.json"
    assert evaluation_file(own, own, "valid") == "evaluation-valid.json"
    assert evaluation_file(own, EvalConfig(is_samples=10)) == "evaluation-test-k10.json"
    assert (evaluation_file(own, EvalConfig(max_points=5), "train", "last", "x/my data.npz")
            == "evaluation-train-n5-last-my_data.json")


def test_evaluate_other_splits_and_k_beside_the_runs_own(capsys, run):
    own = (run / "evaluation.json").read_text()
    assert main(["evaluate", str(run), "--split", "valid", "--quiet"]) == 0
    assert str(run / "evaluation-valid.json") in capsys.readouterr().out
    assert main(["evaluate", str(run), "--k", "2", "--max-points", "30", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["file"] == "evaluation-test-k2-n30.json"
    assert json.loads((run / "evaluation-test-k2-n30.json").read_text())["points"] == 30
    assert json.loads((run / "evaluation-valid.json").read_text())["split"] == "valid"
    assert (run / "evaluation.json").read_text() == own
    assert main(["evaluate", str(run), "--dataset", "digits", "--max-points", "20",
                 "--quiet"]) == 0
    assert (run / "evaluation-test-n20-digits.json").is_file()


# H. --threads ----------------------------------------------------------------------------


def test_every_command_takes_threads_and_restores_them(capsys, run, tmp_path):
    before = torch.get_num_threads()
    for argv in (["evaluate", str(run), "--max-points", "10", "--quiet"],
                 ["sample", str(run), "--n", "2", "--out", str(tmp_path / "s.npy")],
                 ["plot", str(run)], ["models"], ["data", "list"]):
        assert main([*argv, "--threads", "1"]) == 0, argv
        assert torch.get_num_threads() == before
    assert "--threads: must be a positive integer" in one_error(
        capsys, ["plot", str(run), "--threads", "0"])


# I. the tests' cache ---------------------------------------------------------------------


def test_the_tests_fetch_into_their_own_cache(capsys):
    assert main(["data", "info", "digits"]) == 0
    path = Path(json.loads(capsys.readouterr().out)["path"])
    assert path.is_relative_to(os.environ["AEVB_CACHE"])


@pytest.mark.skipif(os.environ.get("AEVB_INNER") == "1", reason="the inner run")
def test_a_users_aevb_cache_is_left_alone(tmp_path):
    user_cache = tmp_path / "user-cache"
    env = {k: v for k, v in os.environ.items() if k != "AEVB_TEST_CACHE"}
    env.update(AEVB_CACHE=str(user_cache), AEVB_INNER="1")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"{__file__}::test_the_tests_fetch_into_their_own_cache"],
        capture_output=True, text=True, env=env, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stdout + done.stderr
    assert not user_cache.exists()


# K. data info of a folder of images -------------------------------------------------------


def test_data_info_reads_a_folder_as_train_would(capsys, tmp_path):
    from PIL import Image

    folder = tmp_path / "pictures"
    folder.mkdir()
    for k in range(12):
        Image.fromarray(np.full((6, 5), 20 * k, dtype=np.uint8)).save(folder / f"{k:02d}.png")
    cache = str(tmp_path / "cache")
    assert main(["data", "info", str(folder), "--cache-dir", cache, "--image-channels", "3",
                 "--image-size", "4,4"]) == 0
    assert json.loads(capsys.readouterr().out)["event_shape"] == [3, 4, 4]
    assert "image_size must be empty or two positive sizes" in one_error(
        capsys, ["data", "info", str(folder), "--image-size", "4"])


def test_every_models_scales_are_checked():
    with pytest.raises(ConfigError, match="model.sigma and model.min_sigma must be positive"):
        apply_overrides(Config(), {"model": "m2", "sigma": 0})
    with pytest.raises(ConfigError, match="model.p must be >= 1"):
        apply_overrides(Config(), {"model": "swae", "p": 0.5})
    with pytest.raises(ConfigError, match="sparsity_target must be in"):
        apply_overrides(Config(), {"model": "sparse-ae", "sparsity_target": 1.5})


def test_a_run_on_vectors_samples_to_an_array_and_its_changed_data_is_refused(capsys, tmp_path):
    """Samples of a run on non-image data need --out FILE.npy; once its data file changes,
    evaluate, plot and --resume each refuse it in one line."""
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).random((200, 6)).astype(np.float32))
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(data), "--binarize", "none", "--likelihood",
                 "gaussian-fixed", "--epochs", "1", "--hidden", "8", "--latent_dim", "2",
                 "--no-eval", "--plots", "false", "--quiet", "--out", str(out)]) == 0
    capsys.readouterr()
    assert "not images" in one_error(capsys, ["sample", str(out), "--n", "4"])
    assert main(["sample", str(out), "--n", "4", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (4, 6)
    np.save(data, np.random.default_rng(0).random((200, 7)).astype(np.float32))
    for argv in (["evaluate", str(out), "--k", "2"], ["plot", str(out)],
                 ["train", "--out", str(out), "--resume", "--epochs", "2", "--quiet"]):
        assert "not the data this run was trained on" in one_error(capsys, argv)

"""Every command runs once on tiny data; errors are one line with a non-zero exit."""

import json
import subprocess
import sys

import pytest
import torch

from aevb.cli.main import main

TINY = ["--dataset", "digits", "--latent_dim", "2", "--is_samples", "16", "--quiet"]
MLP = ["--hidden", "16"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--epochs", "2", "--out", str(out), *TINY, *MLP]) == 0
    return out


def test_train_writes_every_artefact(run_dir):
    expected = ["config.toml", "metrics.csv", "evaluation.json", "report.md",
                "checkpoints/best.safetensors", "checkpoints/best.json",
                "checkpoints/last.safetensors", "checkpoints/last.json",
                "reconstructions.png", "samples.png", "curves.png", "latent.png", "manifold.png"]
    for name in expected:
        assert (run_dir / name).is_file(), name
        assert (run_dir / name).stat().st_size > 0, name
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    for column in ("epoch", "seconds", "train_elbo", "train_rec", "train_kl", "valid_elbo",
                   "valid_rec", "valid_kl"):
        assert column in header
    report = (run_dir / "report.md").read_text()
    assert "manifold.png" in report and "log p(x)" in report


def test_the_issue_commands_as_written(tmp_path):
    out = tmp_path / "DIR"
    done = subprocess.run([sys.executable, "-m", "aevb.cli", "train", "--dataset", "digits",
                           "--epochs", "2", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([sys.executable, "-m", "aevb.cli", "evaluate", str(out), "--json"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["elbo_nats"] < 0 and result["log_px_nats"] < 0
    # importance sampling with K = 1000 lies above the ELBO on average over 250 test points
    assert result["log_px_nats"] > result["elbo_nats"]


def test_evaluate_with_k_and_max_points(run_dir, capsys):
    assert main(["evaluate", str(run_dir), "--k", "8", "--max-points", "40", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["is_samples"] == 8 and result["points"] == 40
    # beside the run's own evaluation.json (all 250 test points), not over it
    assert json.loads((run_dir / "evaluation-test-k8-n40.json").read_text())["points"] == 40
    assert json.loads((run_dir / "evaluation.json").read_text())["points"] == 250


def test_evaluate_runs_where_it_is_asked_and_says_when_it_cannot(run_dir, capsys):
    """--device auto (the default) is a GPU where there is one; cpu is the CPU; a GPU asked for
    where there is none is refused before any work."""
    assert main(["evaluate", str(run_dir), "--k", "4", "--max-points", "20", "--device", "cpu",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["points"] == 20
    if not torch.cuda.is_available():
        assert main(["evaluate", str(run_dir), "--k", "4", "--device", "cuda", "--json"]) == 2
        assert "no CUDA device" in capsys.readouterr().err


def test_sample_plot_models_and_data(run_dir, tmp_path, capsys):
    assert main(["sample", str(run_dir), "--n", "9", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0
    assert main(["sample", str(run_dir), "--n", "5", "--out", str(tmp_path / "s.npy")]) == 0
    import numpy as np

    assert np.load(tmp_path / "s.npy").shape == (5, 1, 8, 8)
    assert main(["plot", str(run_dir)]) == 0
    capsys.readouterr()
    assert main(["models"]) == 0
    assert "vae" in capsys.readouterr().out
    assert main(["data", "list"]) == 0
    assert "mnist" in capsys.readouterr().out
    assert main(["data", "info", "digits"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["event_shape"] == [1, 8, 8]


def test_resume_from_the_cli(run_dir, capsys):
    assert main(["train", "--out", str(run_dir), "--resume", "--epochs", "3", "--no-eval",
                 "--quiet"]) == 0
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--dataset", "nope", "--out", "{tmp}/a"], "unknown dataset"),
        (["train", "--dataset", "digits", "--latent_dimm", "3", "--out", "{tmp}/b"],
         "unknown config key"),
        (["train", "--dataset", "digits", "--epochs", "two", "--out", "{tmp}/c"],
         "must be an integer"),
        (["train", "{tmp}/missing.toml"], "config file not found"),
        (["evaluate", "{tmp}/no-run"], "no run directory"),
        (["train", "--dataset", "digits", "--binarize", "none", "--out", "{tmp}/d"],
         "bernoulli likelihood needs binary data"),
    ],
)
def test_errors_are_one_clear_line(tmp_path, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    done = subprocess.run([sys.executable, "-m", "aevb.cli", *argv, "--quiet"]
                          if argv[0] == "train" else [sys.executable, "-m", "aevb.cli", *argv],
                          capture_output=True, text=True)
    assert done.returncode == 2  # as the README promises
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert message in lines[0]
    assert "Traceback" not in done.stderr


def test_help_everywhere():
    for command in ([], ["train"], ["evaluate"], ["sample"], ["plot"], ["data"], ["models"],
                    ["compare"], ["sweep"], ["reproduce"]):
        done = subprocess.run([sys.executable, "-m", "aevb.cli", *command, "--help"],
                              capture_output=True, text=True)
        assert done.returncode == 0 and "usage: aevb" in done.stdout


AUTOENCODER_FLAGS = {"conv-ae": ["--channels", "4,8"], "stacked-ae": ["--pretrain_steps", "5", *MLP],
                     "pca": []}


@pytest.mark.parametrize("name", ["ae", "linear-ae", "pca", "sparse-ae", "contractive-ae",
                                  "stacked-ae", "conv-ae"])
def test_every_autoencoder_trains_from_the_cli(name, tmp_path, capsys):
    out = tmp_path / name
    argv = ["train", "--model", name, "--epochs", "1", "--plots", "false", "--out", str(out),
            *TINY, *AUTOENCODER_FLAGS.get(name, MLP)]
    assert main(argv) == 0
    assert f"trained {name} on digits" in capsys.readouterr().out
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["latent_dim"] == 2 and evaluation["recon_error_per_image"] > 0
    assert "elbo_nats" not in evaluation
    assert (out / "report.md").is_file() and (out / "checkpoints/best.safetensors").is_file()


def test_denoising_autoencoder_run_directory(tmp_path, capsys):
    out = tmp_path / "dae"
    assert main(["train", "--model", "denoising-ae", "--epochs", "2", "--out", str(out),
                 *TINY, *MLP]) == 0
    for name in ("reconstructions.png", "denoising.png", "latent.png", "curves.png"):
        assert (out / name).stat().st_size > 0, name
    for name in ("samples.png", "manifold.png"):  # no prior to sample from
        assert not (out / name).exists(), name
    report = (out / "report.md").read_text()
    assert "denoising.png" in report and "log p(x), importance" not in report
    assert "| `corruption.noise` | masking |" in report
    assert "reconstruction error per image" in report
    capsys.readouterr()
    assert main(["sample", str(out)]) == 2
    assert "no prior" in capsys.readouterr().err
    assert main(["models"]) == 0
    listed = capsys.readouterr().out
    for name in ("ae", "linear-ae", "pca", "sparse-ae", "denoising-ae", "contractive-ae",
                 "stacked-ae", "conv-ae", "vae"):
        assert f"\n{name} " in f"\n{listed}", name


def test_compare_prints_one_table(tmp_path, capsys):
    out = tmp_path / "compare"
    assert main(["compare", "--models", "ae,pca", "--dataset", "digits", "--binarize", "none",
                 "--epochs", "2", "--hidden", "16", "--latent_dim", "3", "--out", str(out),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    table = (out / "comparison.md").read_text()
    assert table in printed
    rows = [line for line in table.splitlines() if line.startswith("| ae ") or
            line.startswith("| pca ")]
    assert len(rows) == 2 and all("| 3 |" in row for row in rows)
    for name in ("ae", "pca"):
        assert (out / name / "report.md").is_file()
        evaluation = json.loads((out / name / "evaluation.json").read_text())
        assert f"{evaluation['recon_error_per_image']:.2f}" in table


def test_a_key_the_model_does_not_have_is_an_error_naming_its_keys(tmp_path):
    done = subprocess.run([sys.executable, "-m", "aevb.cli", "train", "--model", "vae",
                           "--channels", "8", "--out", str(tmp_path / "x")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "unknown config key 'channels'" in done.stderr and "model 'vae'" in done.stderr
    assert "net.hidden" in done.stderr and not (tmp_path / "x").exists()


def test_models_name_prints_its_keys_defaults_and_docs(capsys):
    assert main(["models", "vae"]) == 0
    out = capsys.readouterr().out
    assert 'objective.kind = "elbo"' in out and "net.hidden = [500]" in out
    assert "Fraction of the run over which the KL weight rises" in out
    # each kind of the objective with its own keys, not only the default kind's
    assert "iw_samples = 5" in out and "hmc_step_size = 0.1" in out
    assert main(["models", "nope"]) == 2


def test_iwae_with_warmup_and_free_bits_reports_rate_distortion_and_units(tmp_path, capsys):
    out = tmp_path / "iwae"
    assert main(["train", "--dataset", "digits", "--objective", "iwae", "--iw_samples", "5",
                 "--kl_warmup", "0.3", "--free_bits", "0.1", "--epochs", "3", "--quiet",
                 "--out", str(out)]) == 0
    evaluation = json.loads((out / "evaluation.json").read_text())
    # -ELBO = distortion + rate
    assert evaluation["distortion_nats"] + evaluation["rate_nats"] == pytest.approx(
        -evaluation["elbo_nats"], abs=1e-6)
    assert len(evaluation["kl_per_dim_nats"]["z"]) == 20
    report = (out / "report.md").read_text()
    for text in ("| rate: KL(q(z\\|x) \\|\\| p(z)) |", "| distortion: -E_q[log p(x\\|z)] |",
                 "KL of each dimension of z", "kl_per_dimension.png", "| active latent units |",
                 "| bound trained on (IWAE) (nats) |", "| ELBO (nats) |"):
        assert text in report, text
    metrics = (out / "metrics.csv").read_text().splitlines()[0]
    assert "train_bound" in metrics and "valid_elbo" in metrics and "train_kl_weight" in metrics

"""report.md from a fake run directory: numbers, links to the pictures there, and only those."""

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imsave

from aevb.errors import CheckpointError
from aevb.reporting.report import write_report

CONFIG = """\
[data]
name = "mnist"
binarize = "dynamic"

[model]
name = "vae"
latent_dim = 20
likelihood = "bernoulli"
estimator = "analytic"
samples = 1
beta = 1.0

[model.net]
hidden = [500, 250]
activation = "tanh"

[train]
optimizer = "adagrad"
lr = 0.02
batch_size = 100
epochs = 50

[eval]
is_samples = 5000
"""

EVALUATION = {
    "split": "test",
    "points": 10000,
    "elbo_nats": -98.1234,
    "elbo_se": 0.31,
    "log_px_nats": -93.2468,
    "log_px_se": 0.29,
    "is_samples": 5000,
    "nll_nats": 93.2468,
    "active_units": 17,
    "latent_dim": 20,
    "seconds": 41.0,
    "rate_nats": 25.25,
    "distortion_nats": 72.87,
    "kl_per_dim_nats": {"z": [3.0, 0.0, 1.25]},
    "custom_nats": 1.5,
}


def write_metrics(path: Path, valid_losses: list[float]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "step", "seconds", "train_loss", "train_elbo", "valid_loss",
                         "valid_elbo"])  # fmt: skip
        for epoch, loss in enumerate(valid_losses, start=1):
            writer.writerow([epoch, 600 * epoch, 2.5 * epoch, loss - 1, 1 - loss, loss, -loss])


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "mnist-vae-run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.toml").write_text(CONFIG)
    write_metrics(run / "metrics.csv", [120.0, 105.5, 101.25, 102.0])
    (run / "evaluation.json").write_text(json.dumps(EVALUATION))
    best = {"epoch": 3, "step": 1800, "metrics": {"valid_loss": 101.25, "valid_elbo": -101.25}}
    (run / "checkpoints" / "best.json").write_text(json.dumps(best))
    for name in ("reconstructions.png", "samples.png", "my plot.png"):
        imsave(run / name, np.zeros((4, 4)), cmap="gray")
    return run


def linked_pictures(report: str) -> set[str]:
    return set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report))


def test_full_report(run_dir):
    path = write_report(run_dir)
    assert path == run_dir / "report.md"
    text = path.read_text()
    assert text.startswith("# Run `mnist-vae-run`: vae on mnist")
    for expected in [
        "| `latent_dim` | 20 |",
        "| `net.hidden` | 500, 250 |",
        "| `net.activation` | tanh |",
        "| optimizer | adagrad |",
        "| learning rate | 0.02 |",
        "| epochs run | 4 (configured: 50) |",
        "Last epoch 4, step 2400, 10.0 s of training.",
        "| ELBO (nats) | -101.00 | -102.00 |",
        "Best validation epoch 3: valid ELBO (nats) -101.25.",
        "| ELBO | -98.12 ± 0.31 nats |",
        "| log p(x), importance sampled | -93.25 ± 0.29 nats |",
        "| NLL = -log p(x) | 93.25 nats |",
        "| importance samples per point (K) | 5000 |",
        "| active latent units | 17 |",
        "| evaluation time | 41 s |",
        "| rate: KL(q(z\\|x) \\|\\| p(z)) | 25.25 nats |",
        "| distortion: -E_q[log p(x\\|z)] | 72.87 nats |",
        "KL of each dimension of z (nats, dimensions 1-3): 3.00, 0.00, 1.25.",
        "| custom_nats | 1.50 nats |",  # an unknown key still prints, its unit read off its name
        "On the test split (10000 points).",
        "higher is better",
    ]:
        assert expected.lower() in text.lower(), expected
    assert linked_pictures(text) == {"reconstructions.png", "samples.png", "my%20plot.png"}
    assert "test inputs (top) and the decoder means of their reconstructions" in text.lower()
    for absent in ("latent.png", "manifold.png", "curves.png", "denoising.png"):
        assert absent not in text
    # Written atomically: no temporary file is left beside it.
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []


def test_report_without_metrics_or_evaluation(run_dir):
    (run_dir / "metrics.csv").unlink()
    (run_dir / "evaluation.json").unlink()
    (run_dir / "checkpoints" / "best.json").unlink()
    (run_dir / "samples.png").unlink()
    text = write_report(run_dir).read_text()
    assert "| `name` | vae |" in text
    assert "| epochs run | - (configured: 50) |" in text
    assert "## Results" not in text and "Evaluation" not in text
    assert linked_pictures(text) == {"reconstructions.png", "my%20plot.png"}


def test_best_epoch_from_metrics_without_checkpoint(run_dir):
    (run_dir / "checkpoints" / "best.json").unlink()
    write_metrics(run_dir / "metrics.csv", [120.0, 99.5, 101.0])
    text = write_report(run_dir).read_text()
    assert "Best validation epoch 2: valid ELBO (nats) -99.50." in text


def test_report_needs_config(tmp_path):
    with pytest.raises(CheckpointError, match="config.toml"):
        write_report(tmp_path)


def test_precision_is_shown_as_the_loop_resolved_it(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.toml").write_text(CONFIG.replace('epochs = 50', 'epochs = 50\nprecision = "auto"'))
    text = write_report(run).read_text()
    assert "| training matmul precision | auto |" in text
    (run / "checkpoints" / "best.json").write_text(json.dumps({"epoch": 1, "precision": "bfloat16"}))
    text = write_report(run).read_text()
    assert "| training matmul precision | auto (bfloat16) |" in text


def test_metrics_are_labelled_as_the_model_described_them(run_dir):
    write_metrics(run_dir / "metrics.csv", [120.0, 99.5])
    best = {"epoch": 2, "selection": ["elbo", "max"],
            "metrics": {"valid_elbo": -99.5, "valid_loss": 99.5},
            "metric_names": {"elbo": ["lower bound", "nats"], "loss": ["what is minimised", ""]}}
    (run_dir / "checkpoints" / "best.json").write_text(json.dumps(best))
    text = write_report(run_dir).read_text()
    assert "| lower bound (nats) | -98.50 | -99.50 |" in text
    assert "| what is minimised | 98.5 | 99.5 |" in text
    assert "Best validation epoch 2: valid lower bound (nats) -99.50." in text


def test_the_config_shows_only_the_keys_its_objective_uses(tmp_path):
    from aevb.config.overrides import apply_overrides
    from aevb.config.run import Config, dump_toml

    def report(objective: str) -> str:
        run = tmp_path / objective
        run.mkdir()
        config = apply_overrides(Config(), {"objective": objective})
        (run / "config.toml").write_text(dump_toml(config))
        return write_report(run).read_text()

    elbo, mcem = report("elbo"), report("mcem")
    assert "hmc_" not in elbo and "iw_samples" not in elbo and "`objective.kind` | elbo" in elbo
    assert "`objective.hmc_leapfrog_steps` | 10" in mcem and "`objective.kind` | mcem" in mcem

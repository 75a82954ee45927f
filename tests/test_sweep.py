"""The rate-distortion sweep: one run per beta, the curve, the table, and its command."""

import json
from pathlib import Path

import pytest

from aevb.cli.main import main
from aevb.config.overrides import apply_overrides
from aevb.config.run import Config
from aevb.engine.checkpoint import load_model
from aevb.errors import ConfigError
from aevb.experiments.sweep import sweep, sweep_table
from aevb.reporting import charts

BETAS = [0.1, 1.0, 10.0]
# Grey-level digits with an L2 decoder (sigma 0.1, so distortion is 50 x squared error + const);
# 30 short epochs (13 steps each) are enough for the rates of the three betas to part by
# several nats on every seed tried (about 13-14, 9-10 and 3.5-3.7 nats).
GREY = {"dataset": "digits", "binarize": "none", "likelihood": "gaussian-fixed", "sigma": 0.1}
SETTINGS = {**GREY, "hidden": "32", "latent_dim": 4, "epochs": 30, "lr": 3e-3,
            "is_samples": 16, "plots": False}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    return out, sweep(apply_overrides(Config(), SETTINGS), BETAS, out)


def test_one_run_directory_and_one_row_per_beta(swept):
    out, rows = swept
    assert [row["beta"] for row in rows] == BETAS
    for name in ("beta-0.1", "beta-1", "beta-10"):
        for artefact in ("evaluation.json", "report.md", "checkpoints/best.safetensors"):
            assert (out / name / artefact).is_file(), (name, artefact)
    assert (out / "rate_distortion.png").read_bytes()[:8] == PNG
    table = sweep_table(rows)
    assert len([line for line in table.splitlines() if line.startswith("|")]) == 2 + len(BETAS)
    assert "| 10 | " in table and "/4 |" in table and "(K=16)" in table
    markdown = (out / "sweep.md").read_text()
    assert table in markdown and "](rate_distortion.png)" in markdown


def test_rate_falls_as_beta_grows(swept):
    rates = [row["rate_nats"] for row in swept[1]]
    # a larger KL weight buys less rate, by more than a nat at each tenfold step
    assert rates[0] > rates[1] + 1 > rates[2] + 2, rates


def test_rate_plus_distortion_is_minus_the_elbo(swept):
    out, rows = swept
    for row in rows:
        evaluation = json.loads((Path(row["run_dir"]) / "evaluation.json").read_text())
        assert Path(row["run_dir"]).parent == out
        assert row["rate_nats"] == evaluation["rate_nats"]
        assert evaluation["rate_nats"] + evaluation["distortion_nats"] == pytest.approx(
            -evaluation["elbo_nats"], abs=1e-6)


def test_repeated_betas_are_an_error_before_any_training(tmp_path):
    with pytest.raises(ConfigError, match="different betas"):
        sweep(apply_overrides(Config(), GREY), [1, 1.0], tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_rate_distortion_plot_checks_its_inputs(tmp_path):
    path = charts.rate_distortion([3.0], [40.0], ["β=1"], tmp_path / "one.png")
    assert path.read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="as many"):
        charts.rate_distortion([1.0, 2.0], [3.0], ["a", "b"], tmp_path / "bad.png")


def test_the_sweep_command(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["sweep", "--beta", "0.5,2", *[f"--{k}={v}" for k, v in GREY.items()],
                 "--epochs", "1", "--hidden", "16", "--latent_dim", "2", "--is_samples", "8",
                 "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert (out / "sweep.md").is_file() and (out / "rate_distortion.png").is_file()
    table = sweep_table([{"beta": b, **json.loads((out / f"beta-{b:g}" / "evaluation.json")
                                                  .read_text())} for b in (0.5, 2.0)])
    assert table in printed and table in (out / "sweep.md").read_text()
    assert (out / "beta-2" / "samples.png").is_file()  # the usual pictures (plots on)


def test_a_model_without_beta_is_a_one_line_error(tmp_path, capsys):
    assert main(["sweep", "--beta", "0.1,1", "--model", "ae", "--dataset", "digits",
                 "--out", str(tmp_path / "ae"), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1
    assert "model 'ae' has no beta key" in error and "vae" in error
    assert not (tmp_path / "ae").exists()


def test_a_sweep_over_a_runs_codes_trains_on_the_codes(tmp_path):
    codes_run = tmp_path / "codes"
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--hidden", "16",
                 "--latent_dim", "3", "--plots", "false", "--out", str(codes_run),
                 "--quiet"]) == 0
    settings = {"dataset": "digits", "features": str(codes_run), "binarize": "none",
                "likelihood": "gaussian-learned", "hidden": "8", "latent_dim": 2, "epochs": 1,
                "is_samples": 4, "plots": False}
    rows = sweep(apply_overrides(Config(), settings), [1.0], tmp_path / "sweep")
    _, model, _ = load_model(Path(rows[0]["run_dir"]), "best", "cpu")
    assert tuple(model.data.event_shape) == (3,)  # the codes run's latent size, not 8x8 pixels

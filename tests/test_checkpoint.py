"""Run directories written before the model contract was reshaped still load, evaluate, draw
and report, to the numbers the old code gave (tests/fixtures/runs-v1/README.md)."""

import json
import shutil
from pathlib import Path

import pytest

from aevb.checkpoint import FORMAT_1, checkpoint_path, load_model, read_checkpoint, run_config
from aevb.cli import main
from aevb.errors import CheckpointError
from aevb.models import Likelihood
from aevb.training import train

FIXTURES = Path(__file__).parent / "fixtures" / "runs-v1"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


@pytest.fixture
def old_run(tmp_path, request):
    run = tmp_path / request.param
    shutil.copytree(FIXTURES / request.param, run)
    return run


@pytest.mark.parametrize("old_run", sorted(EXPECTED), indirect=True)
def test_an_old_run_evaluates_to_the_numbers_the_old_code_gave(old_run, capsys):
    assert read_checkpoint(checkpoint_path(old_run, "best"))[1]["format"] == FORMAT_1
    config, model, _ = load_model(old_run)
    assert config.model.name == old_run.name
    assert main(["evaluate", str(old_run), "--k", "8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    expected = EXPECTED[old_run.name]
    # the reconstruction of the posterior mean involves no randomness: the same weights and
    # the same network give the same figure
    assert result["recon_error_per_image"] == pytest.approx(expected["recon_error_per_image"],
                                                            rel=1e-6)
    if isinstance(model, Likelihood):  # same seed, same draws in the same order
        for key in ("elbo_nats", "log_px_nats"):
            assert result[key] == pytest.approx(expected[key], rel=1e-6), key
    assert main(["plot", str(old_run)]) == 0
    assert (old_run / "report.md").is_file() and (old_run / "latent.png").is_file()


@pytest.mark.parametrize("old_run", ["vae"], indirect=True)
def test_an_old_run_is_not_resumed(old_run):
    shutil.copy(checkpoint_path(old_run, "best"), checkpoint_path(old_run, "last"))
    with pytest.raises(CheckpointError, match="checkpoint format 1"):
        train(run_config(old_run), old_run, resume=True, progress=False)

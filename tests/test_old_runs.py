"""Runs written before the re-layout (tests/fixtures/runs-v2/README.md) load, evaluate, draw and
resume with today's code to the numbers the old code gave: the ELBO, IWAE and MCEM objectives of
the vae, the hvae and the cvae."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import aevb
from aevb.cli.main import main
from aevb.engine.checkpoint import run_config
from aevb.engine.loop import train

FIXTURES = Path(__file__).parent / "fixtures" / "runs-v2"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


@pytest.mark.parametrize("old_run", [f"runs-v2/{n}" for n in sorted(EXPECTED)],
                         indirect=True)
def test_an_old_run_evaluates_and_draws_as_the_old_code_did(old_run, capsys):
    # on the CPU, where the old code drew them: a GPU draws other random numbers
    assert main(["evaluate", str(old_run), "--k", "8", "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key, value in EXPECTED[old_run.name]["evaluate"].items():
        assert result[key] == pytest.approx(value, rel=1e-6), key
    assert main(["plot", str(old_run)]) == 0
    assert (old_run / "report.md").is_file()
    assert aevb.load(old_run, device="cpu").model is not None


@pytest.mark.parametrize("old_run", [f"runs-v2/{n}" for n in sorted(EXPECTED)],
                         indirect=True)
def test_an_old_run_resumes_to_the_epoch_the_old_code_trained(old_run):
    config = aevb.apply_overrides(run_config(old_run), {"epochs": 2, "threads": 1})
    train(config, old_run, resume=True, progress=False)
    with (old_run / "metrics.csv").open() as handle:
        last = list(csv.DictReader(handle))[-1]
    expected = EXPECTED[old_run.name]["resumed_epoch_2"]
    assert {k: float(last[k]) for k in expected} == expected

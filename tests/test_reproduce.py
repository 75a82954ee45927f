"""``aevb reproduce``: every experiment end to end at a tiny budget, on the digits."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from torch.distributions import MultivariateNormal

from aevb.cli.main import main
from aevb.config.run import model_config
from aevb.data.splits import Dataset, Split
from aevb.errors import ConfigError
from aevb.experiments.reproduce import Budget, Settings, reproduce, stages
from aevb.experiments.reproduce_measures import measure_marginal
from aevb.models import Likelihood, model_class
from aevb.models.base import Batch, DataSpec
from aevb.nn.nets import MLPConfig


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_budget_parses_samples_and_minutes() -> None:
    assert Budget.parse("1e6") == Budget(samples=1_000_000)
    assert Budget.parse("2500") == Budget(samples=2500)
    assert Budget.parse("60m") == Budget(minutes=60.0)
    assert Budget.parse("1.5min") == Budget(minutes=1.5)
    for bad in ("", "0", "-3", "1.5", "ten", "nan", "inf", "5h"):
        with pytest.raises(ConfigError, match="--budget"):
            Budget.parse(bad)


def test_stages_are_four_per_decade_and_end_at_the_budget() -> None:
    assert stages(500) == [500]
    assert stages(10**5) == [10_000, 17_783, 31_623, 56_234, 100_000]
    assert stages(150_000)[-2:] == [100_000, 150_000]


def test_fig2_runs_end_to_end_and_resumes_with_a_larger_budget(tmp_path: Path) -> None:
    out = tmp_path / "rep"
    args = ["reproduce", "fig2", "--dataset", "digits", "--sizes", "2", "--out", str(out),
            "--quiet", "--threads", "1"]
    assert main([*args, "--budget", "300"]) == 0
    rows = _rows(out / "fig2.csv")
    assert {r["method"] for r in rows} == {"aevb", "wake-sleep"}
    assert all(r["samples"] == "300" for r in rows)
    for row in rows:
        assert math.isfinite(float(row["train_bound"])) and float(row["train_bound"]) < 0
        assert math.isfinite(float(row["test_bound"])) and float(row["test_bound"]) < 0
        assert float(row["lr"]) in (0.01, 0.02, 0.1)
    assert (out / "fig2-digits.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "fig2-digits.png" in report and "wake-sleep" in report

    run = out / "runs" / "digits-aevb-z2-h500"
    first = _rows(run / "stages.csv")
    assert main([*args, "--budget", "600"]) == 0  # continues: the 300 stage is kept as it was
    extended = _rows(run / "stages.csv")
    assert [r["samples"] for r in extended] == ["300", "600"]
    assert extended[0] == first[0]
    assert [r["samples"] for r in _rows(out / "fig2.csv")] == ["300", "600"] * 2


def test_fig3_estimates_the_marginal_likelihood_both_ways(tmp_path: Path) -> None:
    settings = Settings(out=tmp_path / "rep", budget=Budget(samples=300), dataset="digits",
                        train_sizes=(200,), marginal_points=8, is_samples=50, hmc_samples=30,
                        hmc_burn_in=20, threads=1, progress=False)
    report = reproduce("fig3", settings)
    rows = _rows(settings.out / "fig3.csv")
    assert {r["method"] for r in rows} == {"aevb", "wake-sleep", "mcem"}
    for row in rows:
        for column in ("train_log_px_appendix_d", "test_log_px_appendix_d",
                       "train_log_px_is", "test_log_px_is"):
            assert math.isfinite(float(row[column])) and float(row[column]) < 0
        assert 0 < float(row["test_hmc_accept"]) <= 1
    for name in ("fig3-appendix-d.png", "fig3-is.png"):
        assert (settings.out / name).stat().st_size > 0
    assert "App. D" in report.read_text()


def test_fig4_and_fig5_draw_manifold_and_samples(tmp_path: Path) -> None:
    out = tmp_path / "rep"
    base = ["--dataset", "digits", "--out", str(out), "--quiet", "--budget", "200"]
    assert main(["reproduce", "fig4", *base]) == 0
    assert (out / "fig4-digits.png").stat().st_size > 0
    assert main(["reproduce", "fig5", "--sizes", "2,3", *base]) == 0
    assert (out / "fig5.png").stat().st_size > 0
    # fig5's 2-D model is fig4's: one run directory, trained once
    assert len(_rows(out / "runs" / "digits-aevb-z2-h500" / "stages.csv")) == 1
    assert "fig5.png" in (out / "report.md").read_text()


def test_reproduce_refuses_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    assert main(["reproduce", "fig2", "--budget", "soon", "--out", str(tmp_path)]) == 2
    assert "--budget" in capsys.readouterr().err
    assert main(["reproduce", "fig2", "--sizes", "0", "--out", str(tmp_path)]) == 2
    assert main(["reproduce", "fig9", "--out", str(tmp_path)]) == 2


def test_frey_face_panels_are_skipped_with_the_reason_or_planned_when_it_loads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aevb.data.sources import frey
    from aevb.experiments import reproduce as rep

    monkeypatch.delenv("AEVB_FREY_PATH", raising=False)
    monkeypatch.setattr(frey, "FREY_BASE_URL", (tmp_path / "offline").as_uri() + "/")
    rep._frey_note.cache_clear()
    settings = Settings(out=tmp_path, budget=Budget(samples=100), cache_dir=str(tmp_path / "c"))
    note = rep._frey_note(settings.cache_dir)
    assert note is not None and "skipped" in note and "AEVB_FREY_PATH" in note
    assert all(spec.dataset == "mnist" for spec in rep.fig2_runs(settings))

    fixture = Path(__file__).parent / "fixtures" / "frey" / "frey_rawface.mat"
    monkeypatch.setenv("AEVB_FREY_PATH", str(fixture))
    monkeypatch.setattr(frey, "FREY_SHAPE", (560, 30))
    rep._frey_note.cache_clear()
    assert rep._frey_note(settings.cache_dir) is None
    frey_runs = [s for s in rep.fig2_runs(settings) if s.dataset == "frey-face"]
    assert sorted({s.latent_dim for s in frey_runs}) == [2, 5, 10, 20]
    assert {s.hidden for s in frey_runs} == {200}
    assert rep.paper_config(frey_runs[0], settings, 0.02, 100).model.likelihood == "gaussian-sigmoid"
    rep._frey_note.cache_clear()


def test_a_diverging_step_size_loses_the_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    from types import SimpleNamespace

    from aevb.errors import AevbError
    from aevb.experiments import reproduce as rep

    def fake_train(config, run_dir, **kwargs):
        if config.train.lr == 0.1:
            raise RuntimeError("normal expects all elements of std >= 0.0")
        return SimpleNamespace(history=[{"train_elbo": -100 * config.train.lr}])

    monkeypatch.setattr(rep, "train", fake_train)
    settings = Settings(out=tmp_path, budget=Budget(samples=100), dataset="digits")
    spec = rep.RunSpec("digits", "wake-sleep", 2, 10)
    dataset = SimpleNamespace(train=[0] * 50)
    assert rep.choose_step_size(spec, settings, dataset, tmp_path / "a", 100) == 0.01
    monkeypatch.setattr(rep, "train", lambda *a, **k: (_ for _ in ()).throw(ValueError("nan")))
    with pytest.raises(AevbError, match="diverged at every step size"):
        rep.choose_step_size(spec, settings, dataset, tmp_path / "b", 100)


def _linear_gaussian_vae() -> tuple[Likelihood, Dataset, torch.Tensor]:
    """A ``vae`` with an affine decoder mu(z) = W z + b and sigma 0.5 (z 2-D, x 5-D), 40
    examples drawn from it, and their exact log p(x) = log N(x; b, W W^T + sigma^2 I) (40,) in
    nats. The encoder (the importance sampler's proposal) is fitted by the ELBO, the decoder
    held."""
    config = model_config("vae", latent_dim=2, likelihood="gaussian-fixed", sigma=0.5,
                          net=MLPConfig(hidden=()))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = model_class("vae")(config, DataSpec((5,), "real", train_size=40))
        encoder = [*model.encoder.parameters(), *model.posterior_head.parameters()]
        with torch.no_grad():
            for parameter in model.parameters():
                if all(parameter is not p for p in encoder):  # the decoder's W and b: order one
                    parameter.copy_(torch.randn(parameter.shape))
            b = model.decode(torch.zeros(1, 2))[0].double()
            w = (model.decode(torch.eye(2)).double() - b).T
            x = model.decode(torch.randn(40, 2)) + 0.5 * torch.randn(40, 5)
        optimizer = torch.optim.Adam(encoder, lr=0.05)
        for _ in range(300):
            optimizer.zero_grad()
            (-model.elbo_terms(Batch(x), 1).elbo.mean()).backward()
            optimizer.step()
    exact = MultivariateNormal(b, w @ w.T + 0.25 * torch.eye(5, dtype=torch.float64))
    split = Split(x)
    return model.eval(), Dataset("linear-gaussian", split, split, split, (5,), "real", None), \
        exact.log_prob(x.double())


def test_fig3s_estimates_are_the_exact_log_px_of_a_linear_gaussian_model(tmp_path: Path
                                                                           ) -> None:
    model, dataset, log_px = _linear_gaussian_vae()
    settings = Settings(out=tmp_path, budget=Budget(samples=1), marginal_points=20,
                        is_samples=5000, hmc_samples=200, hmc_burn_in=50, progress=False)
    row = measure_marginal(model, dataset, settings)
    exact = float(log_px[:20].mean())  # the points measured: the first 20 of each split
    for split in ("train", "test"):
        for estimator in ("appendix_d", "is"):
            assert row[f"{split}_log_px_{estimator}"] == pytest.approx(exact, abs=0.05)
    assert row["test_bound"] < exact - 0.1  # the ELBO stays below: q is not p(z|x)

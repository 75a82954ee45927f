"""TensorBoard logging: the events read back (tensorboard's own reader) hold every metrics.csv
column per epoch with its values, per-step metrics, images, the embedding and hparams; a run
logged this way trains bit for bit as one that is not."""

from __future__ import annotations

import csv

import pytest
import torch

from aevb.cli.main import main
from aevb.config.overrides import apply_overrides
from aevb.config.run import Config
from aevb.engine.loop import train

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="tensorboard is optional: pip install -e .[tensorboard]")

TINY = {"dataset": "digits", "epochs": "2", "hidden": "16", "latent_dim": "2", "threads": "1",
        "precision": "float32", "is_samples": "4", "kl_warmup": "0.5"}


def test_the_events_hold_what_metrics_csv_holds(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--tensorboard", "--quiet", "--no-eval",
                 *[a for k, v in TINY.items() for a in (f"--{k}", v)]]) == 0
    events = event_accumulator.EventAccumulator(str(run / "tensorboard"), size_guidance={
        event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0})
    events.Reload()
    rows = list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))
    tags = events.Tags()
    for column in rows[0]:
        if column == "epoch":
            continue
        logged = events.Scalars(f"epoch/{column}")
        assert [e.step for e in logged] == [int(r["epoch"]) for r in rows]
        assert [e.value for e in logged] == pytest.approx([float(r[column]) for r in rows],
                                                           rel=1e-6)
    steps = events.Scalars("step/elbo")
    assert len(steps) == int(rows[-1]["step"]) and steps[0].step == 0
    assert {"step/kl_weight", "step/lr", "step/loss"} <= set(tags["scalars"])
    assert events.Scalars("step/kl_weight")[0].value < events.Scalars("step/kl_weight")[-1].value
    assert {"samples", "reconstructions (test, then rebuilt)"} <= set(tags["images"])
    assert "metrics/text_summary" in tags["tensors"]  # the readable names
    text = events.Tensors("metrics/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "- elbo: ELBO (nats)" in text
    layout = events.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0]
    assert b"ELBO (nats)" in layout and b"epoch/valid_elbo" in layout
    projector = run / "tensorboard" / "projector_config.pbtxt"
    assert projector.exists() and "test codes" in projector.read_text()
    final = events.Scalars("final/valid_elbo")  # the hparams' metrics, the last epoch's
    assert final[0].value == pytest.approx(float(rows[-1]["valid_elbo"]), rel=1e-6)
    plugins = {tag for tag in tags["tensors"]} | set(events.PluginTagToContent("hparams"))
    assert "_hparams_/session_start_info" in plugins


def test_a_logged_run_trains_as_one_that_is_not(tmp_path):
    config = apply_overrides(Config(), TINY)
    plain = train(config, tmp_path / "plain", progress=False)
    logged = train(apply_overrides(config, {"train.tensorboard": str(tmp_path / "tb")}),
                   tmp_path / "logged", progress=False)
    for (name, a), (_, b) in zip(plain.model.state_dict().items(),
                                 logged.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert (tmp_path / "tb").is_dir()


def test_without_tensorboard_the_option_is_one_clear_error(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    status = main(["train", "--out", str(tmp_path / "run"), "--tensorboard", "--quiet",
                   "--dataset", "digits", "--epochs", "1", "--hidden", "8"])
    assert status == 2
    assert "train.tensorboard needs the package tensorboard" in capsys.readouterr().err

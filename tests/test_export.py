"""ONNX export: the graphs onnxruntime runs give torch's numbers to 1e-5, for any batch size,
for a VAE (posterior parameters), a conditional VAE (z and c) and an autoencoder (the code)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from aevb.cli.main import main
from aevb.config.overrides import apply_overrides
from aevb.config.run import Config
from aevb.engine.checkpoint import load_model
from aevb.engine.loop import train
from aevb.models import Batch

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a test dependency (.[dev])")
pytest.importorskip("onnxscript", reason="ONNX export needs .[export]")

TINY = {"dataset": "digits", "epochs": "1", "hidden": "16", "threads": "1",
        "precision": "float32", "is_samples": "4"}


@pytest.mark.parametrize("model", ["vae", "cvae", "ae"])
def test_the_exported_graphs_match_torch(tmp_path, model, capsys):
    run = tmp_path / model
    train(apply_overrides(Config(), {**TINY, "model": model, "latent_dim": "3"}), run,
          progress=False)
    assert main(["export", str(run), "--onnx", str(tmp_path / "onnx")]) == 0
    meta = json.loads((tmp_path / "onnx" / "model.json").read_text())
    _, torch_model, _ = load_model(run, "best")
    x = torch.rand(7, 1, 8, 8)
    with torch.no_grad():
        encoder = ort.InferenceSession(str(tmp_path / "onnx" / "encoder.onnx"))
        c = torch.nn.functional.one_hot(torch.arange(7) % 10, 10).float()
        got = encoder.run(None, {"x": x.numpy(), **({"c": c.numpy()} if model == "cvae" else {})})
        if model == "ae":
            assert list(meta["graphs"]["encoder"]["outputs"]) == ["code"]
            np.testing.assert_allclose(got[0], torch_model.encode(Batch(x)).numpy(), atol=1e-5)
            assert "decoder" not in meta["graphs"]  # an autoencoder has no prior to decode from
            return
        if model == "cvae":  # its code: q(z|x,c)'s mean
            np.testing.assert_allclose(got[0], torch_model.encode(Batch(x, c=c)).numpy(),
                                       atol=1e-5)
        else:
            posterior = torch_model.posterior_of(Batch(x))
            np.testing.assert_allclose(got[0], posterior.base_dist.loc.numpy(), atol=1e-5)
            np.testing.assert_allclose(got[1], posterior.base_dist.scale.numpy(), atol=1e-5)
        z = torch.randn(5, 3)
        decoder = ort.InferenceSession(str(tmp_path / "onnx" / "decoder.onnx"))
        feeds = {"z": z.numpy()}
        c = None
        if model == "cvae":
            c = torch.nn.functional.one_hot(torch.arange(5) % 10, 10).float()
            feeds["c"] = c.numpy()
        np.testing.assert_allclose(decoder.run(None, feeds)[0],
                                   torch_model.decode(z, c).numpy(), atol=1e-5)
    assert meta["graphs"]["decoder"]["outputs"]["mean"] == ["batch", 1, 8, 8]
    assert meta["likelihood"] == "bernoulli"


def test_a_part_that_cannot_be_exported_is_named_and_missing_packages_are_one_error(
        tmp_path, monkeypatch):
    import importlib.util

    from aevb.errors import AevbError
    from aevb.serve import export

    run = tmp_path / "vae"
    train(apply_overrides(Config(), {**TINY, "latent_dim": "2"}), run, progress=False)

    def refuse(module, arguments, **_):
        if isinstance(module, export._DecoderGraph):
            raise RuntimeError("data-dependent control flow\nmore detail")
        return real(module, arguments, **_)

    real = torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", refuse)
    with pytest.raises(AevbError, match="the decoder of this model cannot be exported to ONNX:"
                                        " RuntimeError: data-dependent control flow$"):
        export.export_onnx(run, tmp_path / "out")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(AevbError, match="ONNX export needs the package 'onnx'"):
        export.export_onnx(run, tmp_path / "out")

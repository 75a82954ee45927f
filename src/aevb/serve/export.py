"""A trained run's networks out of Python: the encoder (x → the posterior's parameters, or the
code) and the decoder (z [, c] → the likelihood's mean) as ONNX graphs with a dynamic batch
size, and ``model.json`` naming their inputs, outputs, shapes and the likelihood.

ONNX needs the optional packages ``onnx`` and ``onnxscript`` (``pip install -e .[export]``);
without them the export is one clear error. The graphs are made by PyTorch's exporter
(``torch.onnx.export(..., dynamo=True)``) from small wrappers over the model's abilities, so any
model that has them exports; a part whose computation cannot be exported is an error naming it.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution, Independent

from aevb.engine.checkpoint import load_model
from aevb.errors import AevbError
from aevb.models import Batch, Conditional, Encoder, Generative, Model, Posterior

__all__ = ["export_onnx"]

OPSET = 18


class _PosteriorGraph(nn.Module):
    """x → (loc, scale) of q(z|x)."""

    def __init__(self, model: Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        assert isinstance(self.model, Posterior)
        posterior: Any = self.model.posterior_of(Batch(x, c=c))
        base = posterior.base_dist if isinstance(posterior, Independent) else posterior
        return base.loc.float(), base.scale.float()


class _CodeGraph(nn.Module):
    """x → the code (a deterministic encoder)."""

    def __init__(self, model: Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        assert isinstance(self.model, Encoder)
        return self.model.encode(Batch(x, c=c)).float()


class _DecoderGraph(nn.Module):
    """z [, c] → the likelihood's mean (B, *event_shape)."""

    def __init__(self, model: Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        assert isinstance(self.model, Generative)
        return self.model.decode(z, c).float()


def export_onnx(run_dir: str | Path, out_dir: str | Path, which: str = "best"
                ) -> dict[str, Any]:
    """Write ``encoder.onnx`` (where the model has an encoder), ``decoder.onnx`` (where it is
    generative) and ``model.json`` to ``out_dir``; returns what ``model.json`` holds."""
    for package in ("onnx", "onnxscript"):
        if importlib.util.find_spec(package) is None:
            raise AevbError(f"ONNX export needs the package {package!r}: pip install -e"
                            " .[export] (onnx and onnxscript)")
    config, model, _ = load_model(Path(run_dir), which, "cpu")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    event_shape = list(model.data.event_shape)
    x = torch.zeros(2, *event_shape)
    meta: dict[str, Any] = {"run": str(Path(run_dir).resolve()), "model": config.model.name,
                            "checkpoint": which, "event_shape": event_shape,
                            "likelihood": getattr(config.model, "likelihood", None),
                            "opset": OPSET, "graphs": {}}
    code_dim = None
    previous = Distribution._validate_args
    Distribution.set_default_validate_args(False)  # no data-dependent checks in a graph
    try:
        with torch.no_grad():
            if isinstance(model, Encoder):
                posterior = isinstance(model, Posterior)
                graph = _PosteriorGraph(model) if posterior else _CodeGraph(model)
                outputs = ["loc", "scale"] if posterior else ["code"]
                code_dim = int(model.encode(Batch(x)).shape[1])
                encoder_inputs: dict[str, list[Any]] = {"x": ["batch", *event_shape]}
                encoder_arguments: tuple[torch.Tensor, ...] = (x,)
                if isinstance(model, Conditional):  # q(z|x, c)
                    encoder_inputs["c"] = ["batch", model.condition_dim]
                    encoder_arguments = (x, torch.zeros(2, model.condition_dim))
                _export(graph, encoder_arguments, list(encoder_inputs), outputs,
                        out / "encoder.onnx", "encoder")
                meta["graphs"]["encoder"] = {
                    "file": "encoder.onnx", "inputs": encoder_inputs,
                    "outputs": {name: ["batch", code_dim] for name in outputs},
                    "meaning": ("q(z|x) = N(loc, scale²), diagonal" if posterior
                                else "the code: the posterior's mean, or f(x)")}
            if isinstance(model, Generative):
                if code_dim is None:
                    code_dim = int(getattr(model, "code_dim", config.model.latent_dim))
                z = torch.zeros(2, code_dim)
                inputs: dict[str, list[Any]] = {"z": ["batch", code_dim]}
                arguments: tuple[torch.Tensor, ...] = (z,)
                if isinstance(model, Conditional):
                    arguments = (z, torch.zeros(2, model.condition_dim))
                    inputs["c"] = ["batch", model.condition_dim]
                _export(_DecoderGraph(model), arguments, list(inputs), ["mean"],
                        out / "decoder.onnx", "decoder")
                meta["graphs"]["decoder"] = {
                    "file": "decoder.onnx", "inputs": inputs,
                    "outputs": {"mean": ["batch", *event_shape]},
                    "meaning": "the mean of p(x|z" + (", c)" if "c" in inputs else ")")}
    finally:
        Distribution.set_default_validate_args(previous)
    if not meta["graphs"]:
        raise AevbError(f"model {config.model.name!r} has neither an encoder nor a decoder to"
                        " export")
    (out / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _export(module: nn.Module, arguments: tuple[torch.Tensor, ...], inputs: list[str],
            outputs: list[str], path: Path, part: str) -> None:
    batch = torch.export.Dim("batch", min=1)
    shapes = tuple({0: batch} for _ in arguments)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module.eval(), arguments, dynamo=True, opset_version=OPSET,
                                        input_names=inputs, output_names=outputs,
                                        dynamic_shapes=shapes, verbose=False)
    except Exception as error:  # what the exporter cannot trace: say which part
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise AevbError(f"the {part} of this model cannot be exported to ONNX:"
                        f" {type(error).__name__}: {first[:300]}") from None
    if program is None:
        raise AevbError(f"the {part} of this model gave no ONNX program")
    program.save(str(path))

"""TensorBoard logging of a run (``train.tensorboard``; ``aevb train --tensorboard [DIR]``):
every metric per step and per epoch, the learning rate, samples and reconstructions each
epoch, the test codes as an embedding with their images (the projector), and the run's config
as hparams with its final metrics.

Tags: ``step/<metric>`` per step and ``epoch/<column>`` per epoch, the columns of
``metrics.csv`` (``epoch/train_elbo``, ``epoch/valid_elbo``, ...); the custom-scalars tab draws
one chart per metric under its readable name and unit, as the report gives them (its train,
valid and test curves), and the text ``metrics`` lists them. The package ``tensorboard``
is optional (``pip install -e .[tensorboard]``); without it the option is one clear error.
Per-step logging reads each step's metrics to the host, a sync the loop otherwise avoids.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from aevb.config.run import Config, config_to_dict
from aevb.data.splits import Dataset
from aevb.engine.batches import split_batch
from aevb.errors import ConfigError
from aevb.models import Encoder, Generative, Model

__all__ = ["TensorBoardLog", "open_log"]

IMAGES = 16
EMBEDDED = 500


class TensorBoardLog:
    """One run's event files in ``directory``."""

    def __init__(self, directory: Path, model: Model) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("train.tensorboard needs the package tensorboard:"
                              " pip install -e .[tensorboard]") from None
        self.directory = directory
        self.writer = SummaryWriter(log_dir=str(directory))
        names = "\n".join(f"- {key}: {label}" + (f" ({unit})" if unit else "")
                          for key, (label, unit) in model.metric_names.items())
        self.writer.add_text("metrics", names, 0)
        # one chart per metric under its readable name: its train, valid and test curves
        charts = {f"{label} ({unit})" if unit else label: [
            "Multiline", [f"epoch/{split}_{key}" for split in ("train", "valid", "test")]]
            for key, (label, unit) in model.metric_names.items()}
        self.writer.add_custom_scalars({"by epoch": charts})

    def step(self, step: int, metrics: dict[str, torch.Tensor], lr: float | None) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(f"step/{name}", float(value), step)
        if lr is not None:
            self.writer.add_scalar("step/lr", lr, step)

    @torch.no_grad()
    def epoch(self, row: dict[str, float], model: Model, dataset: Dataset) -> None:
        with _own_random_stream(dataset.test.device):  # training's stream is left as it is
            self._epoch(row, model, dataset)

    def _epoch(self, row: dict[str, float], model: Model, dataset: Dataset) -> None:
        epoch = int(row["epoch"])
        for column, value in row.items():
            if column != "epoch" and math.isfinite(value):
                self.writer.add_scalar(f"epoch/{column}", value, epoch)
        was_training = model.training
        model.eval()
        test = dataset.test
        index = torch.arange(min(IMAGES, len(test)), device=test.device)
        batch = split_batch(test, index)
        images = len(batch.x.shape) == 4
        if images and isinstance(model, Encoder):
            pairs = torch.cat([batch.x.float(), model.reconstruct(batch).float()])
            self.writer.add_images("reconstructions (test, then rebuilt)",
                                   pairs.clamp(0, 1).cpu(), epoch)
        if images and isinstance(model, Generative) and not getattr(model, "condition_dim", 0):
            self.writer.add_images("samples", model.sample(IMAGES).float().clamp(0, 1).cpu(),
                                   epoch)
        model.train(was_training)

    @torch.no_grad()
    def close(self, config: Config, model: Model, dataset: Dataset,
              history: list[dict[str, float]]) -> None:
        with _own_random_stream(dataset.test.device):
            self._close(config, model, dataset, history)

    def _close(self, config: Config, model: Model, dataset: Dataset,
               history: list[dict[str, float]]) -> None:
        was_training = model.training
        model.eval()
        test = dataset.test
        if isinstance(model, Encoder) and len(test):
            index = torch.arange(min(EMBEDDED, len(test)), device=test.device)
            batch = split_batch(test, index)
            codes = model.encode(batch).float().cpu()
            labels = None if batch.y is None else [int(v) for v in batch.y.cpu()]
            pictures = batch.x.float().clamp(0, 1).cpu() if batch.x.dim() == 4 else None
            self.writer.add_embedding(codes, metadata=labels, label_img=pictures,
                                      global_step=len(history), tag="test codes")
        final = {f"final/{k}": v for k, v in (history[-1] if history else {}).items()
                 if k.startswith(("valid_", "test_", "train_")) and math.isfinite(v)}
        self.writer.add_hparams(_flat(config_to_dict(config)), final, run_name=".")
        self.writer.close()
        model.train(was_training)


def _own_random_stream(device: torch.device) -> Any:
    """Draws (samples) that leave the global random state as it was: a run logged to
    TensorBoard trains, and resumes, bit for bit as one that is not."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [],
                                 device_type=device.type)


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Config values as hparams take them: numbers, strings, booleans; lists as text."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        elif value is not None:
            flat[name] = str(value)
    return flat


def open_log(config: Config, run_dir: Path, model: Model) -> TensorBoardLog | None:
    """The run's log, or None where ``train.tensorboard`` is unset; "" is RUN/tensorboard."""
    where = config.train.tensorboard
    if where is None:
        return None
    return TensorBoardLog(Path(where) if where else run_dir / "tensorboard", model)

"""The pictures of a run: a model and its data → arrays → ``plots``; each picture for every
model with the abilities it needs (``models.base``), never for a model by name."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch

from aevb.data.splits import Dataset, Split
from aevb.engine.batches import split_batch
from aevb.engine.checkpoint import load_model
from aevb.engine.features import load_run_data
from aevb.engine.resume import check_same_data
from aevb.engine.rng import seeded
from aevb.models import (
    Batch,
    Conditional,
    Corrupting,
    Encoder,
    Generative,
    Hierarchical,
    Likelihood,
    Model,
)
from aevb.reporting import charts, latents, plots

__all__ = ["draw_figures", "draw_run_figures", "read_history"]

MANIFOLD_LABELS = (2, 3, 4)
"""The classes whose 2-D manifolds a conditional model draws side by side (as in the papers)."""


def read_history(run_dir: str | Path) -> list[dict[str, float]]:
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return []
    with path.open() as handle:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def kl_per_dimension(run_dir: Path) -> dict[str, list[float]]:
    path = run_dir / "evaluation.json"
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()).get("kl_per_dim_nats") or {})
    except (json.JSONDecodeError, AttributeError):
        return {}


@torch.no_grad()
def draw_figures(run_dir: str | Path, model: Model, dataset: Dataset, seed: int = 0,
                 max_scatter: int = 5000, manifold_size: int = 20) -> list[Path]:
    """Write the run's PNGs, each where the model has what it needs:

    - an encoder: reconstructions of test images, the scatter of test codes;
    - a corrupted input in training: noisy / denoised / clean test images;
    - a prior (generative): samples, and for a 2-D code the manifold (Kingma & Welling 2014,
      Fig. 4) over Gaussian quantiles;
    - a likelihood: the KL of each latent dimension (from ``evaluation.json``);
    - stochastic layers (hierarchical): the scatter of each layer's test codes, and what each
      layer holds: test images regenerated with the layers above one kept;
    - a condition that encodes class labels (generative): samples of each class; with an
      encoder, analogies (test images decoded with every class); for a 2-D code, the manifold
      of three classes side by side (Sohn et al. 2015; Kingma et al. 2014, fig. 1);
    - every model: the training curves (from ``metrics.csv``).

    Image pictures are drawn only for image-shaped data.
    """
    run_dir = Path(run_dir)
    model.eval()
    test = dataset.test
    device = test.device  # the model's too; a PCA has buffers but no parameters
    images = plots.is_image_shape(dataset.event_shape)
    with seeded(seed, device):
        batch = split_batch(test, torch.arange(min(12, len(test)), device=device))
        written = _image_pictures(run_dir, model, batch) if images else []
        written += _numbers_pictures(run_dir, model)
        if isinstance(model, Encoder):
            written += _code_pictures(run_dir, model, test, max_scatter, manifold_size, images)
    return written


def _image_pictures(run_dir: Path, model: Model, batch: Batch) -> list[Path]:
    """Reconstructions, denoising, samples and the class pictures of image data."""
    written = []
    if isinstance(model, Encoder):
        written.append(plots.comparison_grid(
            {"input": _numpy(batch.x), "reconstruction": _numpy(model.reconstruct(batch))},
            run_dir / "reconstructions.png", title="Test inputs and their reconstructions"))
        if isinstance(model, Corrupting) and model.corruption.active:
            noisy = batch._replace(x=model.corruption(batch.x))
            written.append(plots.comparison_grid(
                {"noisy": _numpy(noisy.x), "denoised": _numpy(model.reconstruct(noisy)),
                 "clean": _numpy(batch.x)},
                run_dir / "denoising.png", title=f"Denoising: {model.corruption}"))
    if isinstance(model, Generative):
        written.append(plots.image_grid(_numpy(model.sample(100)), run_dir / "samples.png",
                                        ncols=10, title="Decoder means of z ~ p(z)"))
        if isinstance(model, Conditional) and model.classes is not None:
            written += _class_pictures(run_dir, model, batch)
    return written


def _numbers_pictures(run_dir: Path, model: Model) -> list[Path]:
    """The training curves (``metrics.csv``) and the KL of each dimension (``evaluation.json``)."""
    written = []
    if history := read_history(run_dir):
        written.append(charts.training_curves(history, run_dir / "curves.png",
                                              model.metric_names))
    if isinstance(model, Hierarchical) and history and len(model.layer_names) > 1:
        written.append(_layer_kl_curves(run_dir, model.layer_names, history))
    if isinstance(model, Likelihood) and (kl := kl_per_dimension(run_dir)):
        written.append(charts.bar_chart(
            kl, run_dir / "kl_per_dimension.png", "KL (nats per example)",
            title="KL(q(z|x) || p(z)) of each latent dimension, test set"))
    return written


def _layer_kl_curves(run_dir: Path, names: list[str], history: list[dict[str, float]]
                     ) -> Path:
    """kl_layers.png: each layer's KL per epoch, training and validation (its ``kl_<layer>``
    metric), on a linear epoch axis."""
    curves = {}
    for name in names:
        for split in ("train", "valid"):
            points = [(row["epoch"], row[f"{split}_kl_{name}"]) for row in history
                      if f"{split}_kl_{name}" in row]
            if points:
                curves[f"{name} ({split})"] = ([p[0] for p in points], [p[1] for p in points])
    return charts.curve_panels({"KL of each layer": curves}, run_dir / "kl_layers.png", "epoch",
                               "KL (nats per example)", log_x=False,
                               title="Each stochastic layer's KL over training")


def _code_pictures(run_dir: Path, model: Encoder, test: Split, max_scatter: int,
                   manifold_size: int, images: bool) -> list[Path]:
    """The scatter of test codes, each layer's (hierarchical), the 2-D manifolds (generative)."""
    n = min(max_scatter, len(test))
    index = torch.arange(n, device=test.device)
    codes = torch.cat([model.encode(split_batch(test, index[i : i + 500]))
                       for i in range(0, n, 500)])
    labels = None if test.y is None else _numpy(test.y[:n]).astype(int)
    written = [latents.latent_scatter(_numpy(codes), labels, run_dir / "latent.png",
                                      title=f"Encoder means of {n} test points")]
    if isinstance(model, Hierarchical):
        written += _layer_pictures(run_dir, model, test, n, labels, images)
    if images and isinstance(model, Generative) and codes.shape[1] == 2:
        written += _manifolds(run_dir, model, manifold_size, test.device)
    return written


def _manifolds(run_dir: Path, model: Generative, size: int, device: torch.device
               ) -> list[Path]:
    """manifold.png, or for a model conditioned on labels manifold_by_class.png."""
    grid = latents.manifold_quantiles(size)
    axis = torch.as_tensor(grid, dtype=torch.float32, device=device)
    # images[i, j] is decoded at (z1, z2) = (grid[j], grid[i]); the plot puts z2 upwards.
    z1, z2 = torch.meshgrid(axis, axis, indexing="xy")
    z = torch.stack([z1, z2], -1)
    if not isinstance(model, Conditional):
        return [latents.manifold_grid(
            _numpy(model.decode(z)), grid, run_dir / "manifold.png",
            title="Learned 2-D manifold: decoder means over Gaussian quantiles of z")]
    if model.classes is None:
        return []
    classes = model.classes
    shown = MANIFOLD_LABELS if classes > max(MANIFOLD_LABELS) else range(min(3, classes))
    panels = {f"class {k}": _numpy(model.decode(z, model.condition_of(
        torch.tensor(k, device=device)))) for k in shown}
    return [latents.manifold_panels(
        panels, grid, run_dir / "manifold_by_class.png",
        title="Learned 2-D manifold of each class: decoder means of p(x|z,c)")]


def _class_pictures(run_dir: Path, model: Model, batch: Batch) -> list[Path]:
    """samples_by_class.png and, with an encoder and labelled test images, analogies.png."""
    assert isinstance(model, Conditional) and isinstance(model, Generative) and model.classes
    device = batch.x.device
    classes = torch.arange(model.classes, device=device)
    per_class = 10
    rows = {str(k): _numpy(model.sample(per_class, model.condition_of(
        torch.full((per_class,), k, device=device)))) for k in range(model.classes)}
    written = [plots.comparison_grid(rows, run_dir / "samples_by_class.png",
                                     title="Decoder means of z ~ p(z|c), one row per class")]
    if isinstance(model, Encoder) and batch.y is not None:
        x = batch.x[:8]
        z = model.encode(Batch(x, batch.y[:8]))  # each image with its own label
        decoded = model.decode(z[:, None].expand(-1, model.classes, -1),
                               model.condition_of(classes))  # (B, classes, *event)
        analogies = {f"test {i} ({int(y)})": _numpy(torch.cat([x[i : i + 1], decoded[i]]))
                     for i, y in enumerate(batch.y[:8])}
        written.append(plots.comparison_grid(
            analogies, run_dir / "analogies.png",
            title="Analogies: input, then its code decoded with class "
                  f"0..{model.classes - 1}",
        ))
    return written


def _layer_pictures(run_dir: Path, model: Hierarchical, test: Split, n: int,
                    labels: np.ndarray | None, images: bool) -> list[Path]:
    """With two layers or more, latent_<layer>.png for each layer and, for images, layers.png:
    for 4 test images, one row per layer l with the input, then decoder means with
    z_{l+1}..zn kept at the image's posterior means and z_l..z1 drawn from the model."""
    index = torch.arange(n, device=test.device)
    parts = [model.encode_layers(split_batch(test, index[i : i + 500])) for i in range(0, n, 500)]
    if len(parts[0]) < 2:  # one layer: latent.png is its picture, and nothing is kept above it
        return []
    written = [latents.latent_scatter(
        _numpy(torch.cat([part[name] for part in parts])), labels,
        run_dir / f"latent_{name}.png", title=f"Posterior means of layer {name}, {n} test points",
    ) for name in parts[0]]
    if not images:
        return written
    batch = split_batch(test, index[:4])
    layers = len(parts[0])
    drawn = [model.resample_below(batch, layer, 8) for layer in range(1, layers + 1)]
    kept = [f"z{layer + 1}" + (f"..z{layers}" if layer + 1 < layers else "") + " kept"
            for layer in range(1, layers)] + ["nothing kept"]
    rows = {f"#{i}: {kept[layer]}": _numpy(torch.cat([batch.x[i : i + 1], drawn[layer][:, i]]))
            for i in range(len(batch.x)) for layer in range(layers)}
    written.append(plots.comparison_grid(
        rows, run_dir / "layers.png",
        title="What each layer holds: input, then the layers below the kept ones redrawn",
    ))
    return written


def draw_run_figures(run_dir: str | Path, dataset: Dataset | None = None,
                     device: str | torch.device = "cpu") -> list[Path]:
    """The pictures of a run directory, drawn from its best checkpoint."""
    config, model, header = load_model(run_dir, "best", device)
    if dataset is None:
        dataset = load_run_data(config.data, run_dir, device)
        check_same_data(header, dataset, config.data.name)
    return draw_figures(run_dir, model, dataset, seed=config.train.seed)

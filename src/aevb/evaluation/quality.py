"""Sample quality without a likelihood: a Fréchet distance in the features of a dataset classifier.

FID (Heusel et al. 2017) compares Gaussians fitted to Inception features of samples and of real
images. Inception cannot be downloaded here and knows nothing of 8x8 digits, so we train a small
classifier on the dataset's training images (cached, checksummed) and use its penultimate layer:
"FD (<dataset> classifier)", comparable between models judged by the same classifier, never with
published FIDs. Beside it: the classifier's mean confidence on the samples and their
predicted-class histogram (lopsided for a model that draws only a few classes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from aevb.data.downloads import default_cache_dir
from aevb.data.splits import Dataset, Split
from aevb.engine.rng import seeded
from aevb.errors import AevbError
from aevb.files import atomic_file, atomic_write_text
from aevb.models import Generative, Model
from aevb.nn.nets import mlp

__all__ = ["ClassifierSettings", "QualityClassifier", "feature_statistics", "frechet_distance",
           "quality_classifier", "sample_quality"]

log = logging.getLogger(__name__)

SQRTM_RTOL = 1e-5
"""sqrtm(P) counts as failed (P singular) when ||S S - P||_F > SQRTM_RTOL ||P||_F."""
SQRTM_EPS = 1e-6
"""Added to both covariances' diagonals when (C1 C2)^{1/2} failed (see frechet_distance)."""
IMAG_TOL = 1e-3
"""Largest imaginary part of (C1 C2)^{1/2}, relative to its largest entry, taken as rounding."""


def feature_statistics(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and unbiased covariance (F, F), in float64, of features (N, F), N >= 2."""
    array = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features,
                       dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 2:
        raise AevbError(f"feature statistics need (N, F) features with N >= 2, got {array.shape}")
    return array.mean(0), np.cov(array, rowvar=False)


def _trace_sqrt_product(cov1: np.ndarray, cov2: np.ndarray) -> float | None:
    """tr (C1 C2)^{1/2}, or None when the square root failed (a singular product)."""
    product = cov1 @ cov2
    with warnings.catch_warnings():
        # scipy warns on singular input; the residual check below decides whether the root is good.
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(product)
    if not np.all(np.isfinite(root)):
        return None
    residual = np.linalg.norm(root @ root - product)
    if residual > SQRTM_RTOL * max(float(np.linalg.norm(product)), 1e-300):
        return None
    if np.iscomplexobj(root):
        # C1 C2 is similar to the PSD C1^{1/2} C2 C1^{1/2}, so its root is real up to rounding.
        imag = np.abs(root.imag).max()
        if imag > IMAG_TOL * max(np.abs(root.real).max(), 1.0):
            raise AevbError(f"(C1 C2)^(1/2) has an imaginary part of {imag:.3g}: the covariances"
                            " are not positive semi-definite")
        root = root.real
    return float(np.trace(root))


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray
                     ) -> float:
    """Fréchet (2-Wasserstein²) distance between N(mu1, C1) and N(mu2, C2), in squared feature
    units: ||mu1 - mu2||² + tr(C1 + C2 - 2 (C1 C2)^{1/2}), in float64 with scipy's sqrtm.

    When the product is singular (fewer points than features, dead units: the root is not
    finite or does not square back within ``SQRTM_RTOL``) both covariances get ``SQRTM_EPS`` * I
    and the root is taken again; a well-conditioned pair is never perturbed.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise AevbError(f"Fréchet distance: shapes {mu1.shape}, {cov1.shape}, {mu2.shape}, "
                        f"{cov2.shape} do not match (D,), (D, D)")
    trace_root = _trace_sqrt_product(cov1, cov2)
    if trace_root is None:
        # The distance between the perturbed Gaussians, traces included, so it stays a distance.
        cov1, cov2 = cov1 + SQRTM_EPS * np.eye(d), cov2 + SQRTM_EPS * np.eye(d)
        trace_root = _trace_sqrt_product(cov1, cov2)
        if trace_root is None:
            raise AevbError("Fréchet distance: (C1 C2)^(1/2) failed even with eps * I added")
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * trace_root
    # Equal distributions can round to a tiny negative number; the distance itself is >= 0.
    return max(float(distance), 0.0)


@dataclass(frozen=True)
class ClassifierSettings:
    """How the feature classifier is trained: an MLP ``hidden`` on flattened images, Adam."""

    hidden: tuple[int, ...] = (256, 128)
    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0


class QualityClassifier(nn.Module):
    """Flattened image (B, *event_shape) → ReLU MLP features (B, hidden[-1]) → class logits."""

    def __init__(self, input_dim: int, hidden: tuple[int, ...], classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), *mlp([input_dim, *hidden], "relu"))
        self.head = nn.Linear([input_dim, *hidden][-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _train_classifier(dataset: Dataset, settings: ClassifierSettings) -> QualityClassifier:
    """Adam on the cross-entropy of the training split, seeded: same data, same weights."""
    x, y = dataset.train.values(), dataset.train.y
    assert y is not None and dataset.num_classes is not None
    generator = torch.Generator().manual_seed(settings.seed)
    with seeded(settings.seed):  # the layers' initial weights
        net = QualityClassifier(int(np.prod(dataset.event_shape)), settings.hidden,
                                dataset.num_classes).to(x.device)
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.lr)
    order = torch.randperm(len(y), generator=generator)
    position = 0
    net.train()
    for _ in range(settings.steps):
        if position + settings.batch_size > len(y):  # a fresh permutation every epoch
            order, position = torch.randperm(len(y), generator=generator), 0
        index = order[position:position + settings.batch_size].to(x.device)
        position += settings.batch_size
        loss = nn.functional.cross_entropy(net(x[index]), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return net.eval()


@torch.no_grad()
def _apply(net: QualityClassifier, x: torch.Tensor, batch: int = 2000
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, F) and softmax probabilities (N, classes) of images x, in batches."""
    features, probs = [], []
    for start in range(0, len(x), batch):
        h = net.features(x[start:start + batch])
        features.append(h)
        probs.append(net.head(h).softmax(-1))
    return torch.cat(features), torch.cat(probs)


def _accuracy(net: QualityClassifier, split: Split) -> float:
    assert split.y is not None
    _, probs = _apply(net, split.values())
    return (probs.argmax(-1) == split.y).double().mean().item()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cache_path(dataset: Dataset, settings: ClassifierSettings, cache_dir: str | Path) -> Path:
    """quality-<dataset>-<hash of settings and data shape>.safetensors in the cache dir."""
    key = {"settings": asdict(settings), "train": len(dataset.train), "test": len(dataset.test),
           "event_shape": list(dataset.event_shape), "classes": dataset.num_classes}
    digest = _sha256(json.dumps(key, sort_keys=True).encode())[:12]
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(dataset.name).stem)  # a user's file is a path
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return root / f"quality-{stem}-{digest}.safetensors"


def _load_cached(path: Path, net: QualityClassifier) -> float | None:
    """The cached classifier's test accuracy after loading its weights into ``net``; None
    (and a log line) when the file is missing, fails its sha256 or cannot be read."""
    sidecar = path.with_name(path.name + ".sha256")
    if not path.is_file() or not sidecar.is_file():
        return None
    data = path.read_bytes()
    if _sha256(data) != sidecar.read_text().split()[0]:
        log.warning("%s does not match its sha256; retraining the quality classifier", path)
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = json.loads((handle.metadata() or {})["aevb_quality"])
            net.load_state_dict({k: handle.get_tensor(k) for k in handle.keys()})  # noqa: SIM118
    except (SafetensorError, KeyError, ValueError, RuntimeError) as error:
        log.warning("%s cannot be read (%s); retraining the quality classifier", path, error)
        return None
    return float(header["test_accuracy"])


def quality_classifier(dataset: Dataset, settings: ClassifierSettings | None = None,
                       cache_dir: str | Path = "") -> tuple[QualityClassifier, float]:
    """The dataset's feature classifier (eval mode) and its test accuracy in [0, 1]: from the
    cache where a file for these settings matches its ``<file>.sha256``, else trained on
    ``dataset.train`` and written atomically."""
    settings = settings or ClassifierSettings()
    if dataset.num_classes is None or dataset.train.y is None or dataset.test.y is None:
        raise AevbError(f"sample quality needs a labelled dataset to train its classifier;"
                        f" {dataset.name!r} has no labels")
    path = _cache_path(dataset, settings, cache_dir)
    net = QualityClassifier(int(np.prod(dataset.event_shape)), settings.hidden,
                            dataset.num_classes)
    accuracy = _load_cached(path, net)
    if accuracy is not None:
        return net.to(dataset.train.device).eval(), accuracy
    net = _train_classifier(dataset, settings)
    accuracy = _accuracy(net, dataset.test)
    header = {"dataset": dataset.name, "settings": asdict(settings), "test_accuracy": accuracy}
    weights = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    data = safetensors_bytes(weights, metadata={"aevb_quality": json.dumps(header)})
    with atomic_file(path) as handle:
        handle.write(data)
    atomic_write_text(path.with_name(path.name + ".sha256"), f"{_sha256(data)}  {path.name}\n")
    return net, accuracy


@torch.no_grad()
def _draw(model: Generative, n: int, batch: int, seed: int, device: torch.device) -> torch.Tensor:
    """n decoder means (n, *event_shape) from the model's prior, seeded, on ``device``."""
    cuda = torch.cuda.current_device() if torch.cuda.is_available() else None
    parts = []
    with seeded(seed, None if cuda is None else torch.device("cuda", cuda)):
        for start in range(0, n, batch):
            parts.append(model.sample(min(batch, n - start)).float().to(device))
    return torch.cat(parts)


def sample_quality(model: Model | Generative, dataset: Dataset, n: int = 10_000, seed: int = 0,
                   batch_size: int = 1000, settings: ClassifierSettings | None = None,
                   cache_dir: str | Path = "") -> dict[str, Any]:
    """Quality of n samples of ``model`` judged by the dataset's classifier (module docstring).

    ``dataset`` must hold grey levels (binarize "none"), as the samples are decoder means.
    ``fd_classifier`` is the FD of the samples' features to the test set's; ``fd_test_vs_train``
    that of the real test set to the training set, roughly what a perfect model scores (FD is
    biased upward at small N: compare models at the same n); ``sample_confidence`` the mean max
    softmax probability; ``sample_class_histogram`` the fraction of samples per predicted class.
    """
    if not isinstance(model, Generative):
        name = getattr(getattr(model, "config", None), "name", type(model).__name__)
        raise AevbError(f"sample quality needs a generative model; {name!r} has no prior to"
                        " sample from")
    if dataset.train.binarize != "none":
        raise AevbError(f"sample quality compares grey levels: load {dataset.name!r} with"
                        f" binarize 'none', not {dataset.train.binarize!r}")
    if n < 2:
        raise AevbError(f"sample quality needs at least 2 samples, got {n}")
    net, accuracy = quality_classifier(dataset, settings, cache_dir)
    if isinstance(model, nn.Module):
        model.eval()
    samples = _draw(model, n, batch_size, seed, dataset.test.device)
    if tuple(samples.shape[1:]) != tuple(dataset.event_shape):
        raise AevbError(f"samples have shape {tuple(samples.shape[1:])}, the dataset"
                        f" {tuple(dataset.event_shape)}")
    sample_features, probs = _apply(net, samples)
    test_stats = feature_statistics(_apply(net, dataset.test.values())[0])
    train_stats = feature_statistics(_apply(net, dataset.train.values())[0])
    histogram = torch.bincount(probs.argmax(-1), minlength=probs.shape[1]).double() / n
    return {
        "fd_classifier": frechet_distance(*feature_statistics(sample_features), *test_stats),
        "fd_classifier_name": f"FD ({dataset.name} classifier)",
        "fd_test_vs_train": frechet_distance(*test_stats, *train_stats),
        "sample_confidence": probs.max(-1).values.double().mean().item(),
        "sample_class_histogram": histogram.tolist(),
        "quality_classifier_accuracy": accuracy,
        "quality_samples": n,
    }

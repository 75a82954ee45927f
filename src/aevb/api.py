"""The library on arrays: ``fit`` a model to an array, then encode, sample, reconstruct and score.

numpy in, numpy out; tensors in, tensors out (on the input's device); batched, in eval mode,
without gradients. ``fit`` runs the one training loop in a run directory (a temporary one unless
given) holding the arrays as ``data.npz``, so a saved run is self-contained for ``aevb evaluate``.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from aevb.config.overrides import apply_overrides, with_networks
from aevb.config.run import Config
from aevb.config.schema import DataConfig
from aevb.data.arrays import user_splits
from aevb.data.splits import SPLITS, Dataset
from aevb.engine.checkpoint import checkpoint_path, load_model
from aevb.engine.device import resolve_device
from aevb.engine.loop import train
from aevb.engine.rng import seeded
from aevb.errors import AevbError, CheckpointError
from aevb.evaluation.evaluate import log_likelihood
from aevb.models import Batch, Conditional, Encoder, Generative, Likelihood, Model
from aevb.reporting.figures import draw_run_figures, read_history
from aevb.reporting.report import write_report

__all__ = ["Fitted", "fit", "load"]

ARRAY_FILE = "data.npz"
"""A fitted array inside its run directory (relative: found wherever the run is)."""
BATCH_SIZE = 500
ABILITIES: dict[type, str] = {
    Encoder: "has no encoder: it cannot encode or reconstruct",
    Generative: "is not generative: it has no prior to sample from and no decoder",
    Likelihood: "has no likelihood: it gives no log p(x) or ELBO",
}

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def fit(data: np.ndarray | torch.Tensor | str | os.PathLike[str],
        y: np.ndarray | torch.Tensor | None = None, *, c: np.ndarray | torch.Tensor | None = None,
        model: str | None = None, run_dir: str | os.PathLike[str] | None = None,
        config: Config | None = None, progress: bool = True,
        encoder: nn.Module | None = None, decoder: nn.Module | None = None,
        decoder_emits_parameters: bool = False, **overrides: Any) -> Fitted:
    """Train ``model`` (default: ``config``'s, else "vae") on ``data`` and return it, fitted.

    ``data`` is an array (N, *event_shape) with optional integer labels ``y`` (N,) and
    conditioning vectors ``c`` (N, C) (without ``c`` a conditional model takes the one-hot
    label), split 80/10/10 by ``data.split_seed`` (``Fitted.split_indices``); or a dataset name
    or ``.npy``/``.npz`` path. ``overrides`` are config keys as for the CLI (``latent_dim=2,
    hidden=(64,)``) applied to ``config`` (default ``Config()``). For arrays, unless set:
    real-valued data is not binarized and a model with a likelihood gets ``gaussian-learned``;
    unbinarized grey levels in [0, 1] get ``continuous-bernoulli``. Without ``run_dir`` the run
    lives in a temporary directory, removed with the result (unless saved); a run directory
    (``run_dir``, or ``save``) gets the run's pictures and ``report.md``.

    ``encoder`` and ``decoder``: your own modules in place of the model's nets (vae, cvae,
    conv-vae, m2; ``docs/extending.md``): the encoder maps x (B, *event_shape) to features
    (B, F), the decoder codes (N, latent_dim [+ classes or condition_dim]) to features (N, F'),
    or with ``decoder_emits_parameters``
    to the likelihood's parameters per value. The run records each by its class's import path
    and its constructor arguments, read back from the attributes of the same names (store each
    as ``self.<name>``; JSON values only), and trains fresh copies built from them (seeded as
    every run's nets): the modules given name the networks, their weights are not used.
    """
    base = config or Config()
    overrides = {"model": model or base.model.name, **overrides}
    temporary = run_dir is None
    path = Path(tempfile.mkdtemp(prefix="aevb-fit-") if run_dir is None else run_dir)
    tensors_on = None  # the device of a tensor fitted on; None: numpy
    try:
        if isinstance(data, (str, os.PathLike)):
            run_config = _named_data_config(base, overrides, str(data),
                                            y if c is None else c)
        else:
            x = _as_tensor(data).cpu().numpy()
            tensors_on = data.device if isinstance(data, torch.Tensor) else None
            run_config = _array_config(base, overrides, x)
            _write_arrays(path, x, _labels(y), None if c is None else _as_tensor(c))
        if encoder is not None or decoder is not None:
            run_config = with_networks(run_config, encoder, decoder, decoder_emits_parameters,
                                       "label_input" in overrides)
        result = train(run_config, path, progress=progress)
        _, best, _ = load_model(path, "best", result.device)
        if not temporary:
            _write_pictures_and_report(path, result.dataset, result.device)
    except BaseException:
        if temporary:
            shutil.rmtree(path, ignore_errors=True)
        raise
    return Fitted(path, run_config, best, result.device, temporary=temporary,
                  tensors_on=tensors_on)


def load(run_dir: str | os.PathLike[str], which: str = "best",
         device: str | torch.device = "auto") -> Fitted:
    """The model of any run directory (from ``fit`` or the CLI); ``which`` is best or last;
    ``device`` auto is a GPU where there is one, as for training."""
    resolved = resolve_device(str(device))
    config, model, _ = load_model(Path(run_dir), which, resolved)
    return Fitted(Path(run_dir), config, model, resolved)


class Fitted:
    """A trained ``model`` (its ``config``, ``device`` and ``run_dir``); every method takes a
    batch of examples (N, ...).

    Every method that draws (``sample``, ``log_likelihood``, ``elbo``) takes ``seed``, default
    0: the same call gives the same numbers, and the global random state is left alone.
    """

    def __init__(self, run_dir: Path, config: Config, model: Model, device: torch.device,
                 temporary: bool = False, tensors_on: torch.device | None = None) -> None:
        self.run_dir, self.config, self.model, self.device = run_dir, config, model, device
        self._tensors_on = tensors_on  # where ``sample``'s tensors go; None: it gives numpy
        self.model.eval()
        # only the path goes into the finalizer: a reference to self would keep it alive
        self._cleanup = (weakref.finalize(self, shutil.rmtree, str(run_dir), True)
                         if temporary else None)

    def __repr__(self) -> str:
        return f"Fitted(model={self.config.model.name!r}, run_dir={str(self.run_dir)!r})"

    @property
    def split_indices(self) -> dict[str, np.ndarray]:
        """The rows of the array given to ``fit`` in each split: "train", "valid", "test" ->
        int64 indices into it, disjoint and covering every row (train n - 2 (n // 10), about
        80 %; only its first ``data.train_size`` where that is set), drawn by
        ``data.split_seed``. Only for a run fitted on an array."""
        if self.config.data.name != ARRAY_FILE:
            raise AevbError(f"this run was trained on {self.config.data.name!r}, not on an"
                            " array given to fit: it has no split indices")
        with np.load(self.run_dir / ARRAY_FILE) as arrays:
            n = len(arrays["x"])
        # the rows' own numbers, split by the rule that split the array
        splits = user_splits(self.run_dir / ARRAY_FILE, {"x": np.arange(n)},
                             self.config.data.split_seed)
        indices = {s: splits[f"x_{s}"].astype(np.int64) for s in SPLITS}
        indices["train"] = indices["train"][:self.config.data.train_size]
        return indices

    @property
    def history(self) -> list[dict[str, float]]:
        """One dict per epoch from the run's ``metrics.csv`` (train_*/valid_* metrics)."""
        return read_history(self.run_dir)

    def encode(self, x: Array, y: Array | None = None) -> Array:
        """Codes (N, code_dim) of x (N, *event_shape); a VAE's posterior means."""
        encoder = self._ability(Encoder)
        return self._map(encoder.encode, self._examples(x), x, _labels(y))

    def reconstruct(self, x: Array, y: Array | None = None) -> Array:
        """Reconstructions of x on the data's scale (decoder means), shaped like x."""
        encoder = self._ability(Encoder)
        return self._map(encoder.reconstruct, self._examples(x), x, _labels(y)).reshape(x.shape)

    def decode(self, z: Array, condition: Array | None = None) -> Array:
        """Decoder means (N, *event_shape) at codes z (N, code_dim). A conditional model (cvae,
        m2) needs ``condition``: class labels (N,), or the vectors c (N, C) it was fitted with."""
        generative = self._ability(Generative)
        c = None
        if condition is not None:
            c = _as_tensor(condition)
            if c.ndim == 1 and isinstance(generative, Conditional):  # labels: their one-hot
                c = generative.condition_of(self._label(generative, c.long()))
        return self._map(lambda batch: generative.decode(batch.x, batch.y), _as_tensor(z), z, c)

    def sample(self, n: int, seed: int = 0, label: int | None = None) -> np.ndarray | torch.Tensor:
        """Decoder means of n draws z ~ p(z), (n, *event_shape) float32, as the type fitted on
        (a tensor on its device, else numpy; numpy for a loaded run); ``seed`` fixes the draws.
        ``label``: draws of that class from a model conditioned on labels, z ~ p(z|c(label))."""
        if n < 0:
            raise AevbError(f"n must be >= 0 samples, got {n}")
        generative = self._ability(Generative)
        condition = None if label is None else generative.condition_of(
            self._label(generative, torch.tensor(label, device=self.device)))
        with seeded(seed, self.device), torch.no_grad():  # n = 0: one empty draw, shaped (0, ...)
            parts = [generative.sample(min(BATCH_SIZE, n - start), condition).float().cpu()
                     for start in range(0, max(n, 1), BATCH_SIZE)]
        samples = torch.cat(parts)
        return samples.numpy() if self._tensors_on is None else samples.to(self._tensors_on)

    def log_likelihood(self, x: Array, k: int = 1000, seed: int = 0,
                       y: Array | None = None) -> Array:
        """log p(x) per example (N,) in nats, importance-sampled with K = ``k`` draws as ``aevb
        evaluate`` does (``evaluation.evaluate.log_likelihood``); for a model conditioned on
        labels, log p(x|y) given the labels ``y`` (N,).

        Where the run binarized its data, x is binarized first as ``aevb evaluate`` holds its
        test split: x > 0.5, or one Bernoulli sample of all of float32 x from a CPU generator
        seeded with ``seed`` (whatever the device and batching; ``seed`` also seeds the
        importance samples): the same x and seed give the numbers of that binary sample.
        """
        if k < 1:
            raise AevbError(f"k must be a positive number of importance samples, got {k}")
        likelihood = self._ability(Likelihood)
        return self._scored(lambda batch: log_likelihood(likelihood, batch, k), x, seed,
                            _labels(y))

    def elbo(self, x: Array, seed: int = 0, y: Array | None = None) -> Array:
        """The ELBO per example (N,) in nats with one z draw (L = 1); x is binarized and
        ``y`` used as in ``log_likelihood``."""
        likelihood = self._ability(Likelihood)
        return self._scored(lambda batch: likelihood.elbo_terms(batch, 1).elbo, x, seed,
                            _labels(y))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Copy the run directory to ``path`` (new or empty) and return it; ``aevb.load`` and
        the CLI read it. A temporary run moves there: its temporary directory is removed."""
        target = Path(path)
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise AevbError(f"cannot save to {target}: it exists and is not an empty directory")
        shutil.copytree(self.run_dir, target, dirs_exist_ok=True)
        if not (target / "report.md").exists():  # a temporary run has none yet
            _write_pictures_and_report(target, None, self.device)
        if self._cleanup is not None:
            self._cleanup()
            self._cleanup, self.run_dir = None, target
        return target

    # -----------------------------------------------------------------------------------------

    def _ability(self, ability: type) -> Any:
        """The model, checked to have ``ability`` (an abstract class of ``models.base``)."""
        if not isinstance(self.model, ability):
            raise AevbError(f"model {self.config.model.name!r} {ABILITIES[ability]}")
        return self.model

    def _label(self, model: Any, labels: torch.Tensor) -> torch.Tensor:
        """``labels``, checked to be classes of a model conditioned on class labels."""
        classes = model.classes if isinstance(model, Conditional) else None
        if classes is None:
            raise AevbError(f"model {self.config.model.name!r} is not conditioned on class"
                            " labels: it takes no label")
        wrong = labels[(labels < 0) | (labels >= classes)]
        if len(wrong):
            raise AevbError(f"label {wrong[0].item()} is no class of this model (0..{classes - 1})")
        return labels

    def _examples(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """x as float32 (N, *event_shape); flat rows (N, prod(event_shape)) are reshaped."""
        tensor = _as_tensor(x)
        event = tuple(self.model.data.event_shape)
        if tuple(tensor.shape[1:]) == event:
            return tensor
        if tensor.ndim == 2 and tensor.shape[1] == math.prod(event):
            return tensor.reshape(-1, *event)
        expected = ", ".join(map(str, event))
        raise AevbError(f"x has shape {tuple(tensor.shape)} but the model takes (N, {expected})"
                        f" or flat (N, {math.prod(event)})")

    def _map(self, function: Callable[[Batch], torch.Tensor], inputs: torch.Tensor,
             like: Array, labels: torch.Tensor | None = None) -> Array:
        """``function`` over batches of ``inputs`` on the model's device, joined and returned
        as the type (numpy, or a tensor on its device) of ``like``."""
        parts = []
        with torch.no_grad():
            # range(..., max(n, 1), ...): one (empty) batch gives an empty output its shape
            for start in range(0, max(len(inputs), 1), BATCH_SIZE):
                stop = start + BATCH_SIZE
                y = None if labels is None else labels[start:stop].to(self.device)
                parts.append(function(Batch(inputs[start:stop].to(self.device), y)).float())
        return _like(torch.cat(parts), like)

    def _scored(self, score: Callable[[Batch], torch.Tensor], x: Array, seed: int,
                labels: torch.Tensor | None = None) -> Array:
        inputs = self._examples(x)
        if len(inputs) == 0:  # the models' sums over K draws need at least one example
            return _like(torch.zeros(0), x)
        with seeded(seed, self.device):
            return self._map(score, self._binarized(inputs, seed), x, labels)

    def _binarized(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        """x (N, ...) binarized as the run's test split is (``load_dataset``): x > 0.5, or one
        Bernoulli sample of all of x from a CPU generator seeded with ``seed``."""
        mode = self.config.data.binarize
        if mode == "none":
            return x
        if x.min() < 0 or x.max() > 1:
            raise AevbError(f"this run binarizes its data ({mode}), which needs x in [0, 1]")
        if mode == "threshold":
            return (x > 0.5).float()
        # on the CPU: a CUDA generator would draw another sample for the same seed
        return torch.bernoulli(x.cpu(), generator=torch.Generator().manual_seed(seed))


def _write_pictures_and_report(run_dir: Path, dataset: Dataset | None,
                               device: torch.device) -> None:
    """A saved run as the CLI leaves one: its pictures (unless ``eval.plots`` is off) and
    ``report.md`` (no test evaluation: ``aevb evaluate RUN`` adds it)."""
    config, _, _ = load_model(run_dir, "best", device)
    if config.eval.plots:
        draw_run_figures(run_dir, dataset, device)
    write_report(run_dir)


def _as_tensor(values: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach().float()
    return torch.tensor(np.asarray(values, dtype=np.float32))


def _labels(y: np.ndarray | torch.Tensor | None) -> torch.Tensor | None:
    if y is None:
        return None
    return (y if isinstance(y, torch.Tensor) else torch.tensor(np.asarray(y))).long()


def _like(values: torch.Tensor, like: Array) -> Array:
    """``values`` as ``like`` is: a tensor on its device, else a numpy array."""
    if isinstance(like, torch.Tensor):
        return values.to(like.device)
    return values.cpu().numpy()


def _write_arrays(run_dir: Path, x: np.ndarray, y: torch.Tensor | None,
                  c: torch.Tensor | None = None) -> None:
    """x float32 (N, *event_shape), y int64 (N,) and c float32 (N, C) into ``data.npz``."""
    # Written before training starts: never over the data of a run already there.
    if checkpoint_path(run_dir, "last").exists():
        raise CheckpointError(f"{run_dir} already holds a run; choose another run_dir")
    arrays: dict[str, Any] = {"x": x} if y is None else {"x": x, "y": y.cpu().numpy()}
    if c is not None:
        arrays["c"] = c.cpu().numpy()
    run_dir.mkdir(parents=True, exist_ok=True)
    np.savez(run_dir / ARRAY_FILE, **arrays)


def _named_data_config(base: Config, overrides: dict[str, Any], name: str,
                       y: np.ndarray | torch.Tensor | None) -> Config:
    if y is not None:
        raise AevbError("y and c are for arrays; a named dataset or file brings its own labels")
    # a user's file or folder of images, made absolute: the run still finds it from elsewhere
    if name.endswith((".npy", ".npz")) or Path(name).expanduser().is_dir():
        name = str(Path(name).expanduser().resolve())
    return apply_overrides(base, {**overrides, "dataset": name})


def _array_config(base: Config, overrides: dict[str, Any], x: np.ndarray) -> Config:
    """The run's config for an array: ``data.npz`` in the run directory, and defaults that
    suit the array's values for the settings the user left alone."""
    if any(key.replace("-", "_") in ("dataset", "data.name") for key in overrides):
        raise AevbError("fit got an array and a dataset name; give one of them")
    config = apply_overrides(base, {**overrides, "dataset": ARRAY_FILE})
    kind = _value_kind(x)
    defaults: dict[str, Any] = {}
    if kind == "real" and not _user_set(config.data, "binarize", DataConfig(), overrides):
        defaults["binarize"] = "none"
    binarize = defaults.get("binarize", config.data.binarize)
    if (hasattr(config.model, "likelihood")
            and not _user_set(config.model, "likelihood", type(config.model)(), overrides)):
        if kind == "real":
            defaults["likelihood"] = "gaussian-learned"
        elif kind == "unit" and binarize == "none":
            defaults["likelihood"] = "continuous-bernoulli"
    return apply_overrides(config, defaults) if defaults else config


def _user_set(section: Any, name: str, defaults: Any, overrides: dict[str, Any]) -> bool:
    """Whether the user chose ``name``: overrode it ("likelihood", "model.likelihood"), or
    gave a config where it is not the default."""
    named = any(key.replace("-", "_").split(".")[-1] == name for key in overrides)
    return named or getattr(section, name) != getattr(defaults, name)


def _value_kind(x: np.ndarray) -> str:
    """"binary" (all 0 or 1), "unit" (in [0, 1]) or "real"."""
    if x.size and ((x == 0) | (x == 1)).all():
        return "binary"
    if x.size and x.min() >= 0 and x.max() <= 1:
        return "unit"
    return "real"

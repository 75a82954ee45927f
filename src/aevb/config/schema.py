"""A run's data, training and evaluation settings: frozen dataclasses, checked when made, whose
defaults are the paper's MNIST setup (Kingma & Welling 2014, sec. 5: minibatches of M=100, L=1)
trained with Adam. Nothing here knows a model (:mod:`aevb.config.run` adds the model's config).
"""

from __future__ import annotations

from dataclasses import dataclass

from aevb.errors import ConfigError, check_choice, check_positive

__all__ = ["BINARIZE_MODES", "LR_SCHEDULES", "OPTIMIZERS", "PRECISIONS", "DataConfig", "EvalConfig",
           "TrainConfig"]

BINARIZE_MODES = ("none", "static", "dynamic", "threshold")
OPTIMIZERS = ("adam", "adagrad", "sgd")
PRECISIONS = ("auto", "float32", "bfloat16")
LR_SCHEDULES = ("constant", "iwae")


@dataclass(frozen=True)
class DataConfig:
    name: str = "mnist"
    """A dataset name (``aevb data list``) or a path to a user's ``.npy``/``.npz`` file."""
    binarize: str = "dynamic"
    """none | static (one fixed Bernoulli sample) | dynamic (resampled every epoch) | threshold."""
    cache_dir: str = ""
    """Where fetched data is kept; empty means $AEVB_CACHE or ~/.cache/aevb."""
    train_size: int | None = None
    """Use only the first N training examples (quick experiments, tests)."""
    labelled: int | None = None
    """Keep labels for only N training examples (at least one per class), balanced over
    classes, chosen with label_seed; the rest of train is unlabelled (its y is -1). Valid and
    test keep theirs."""
    label_seed: int | None = None
    """Seed of the draw of the ``labelled`` examples alone, so that runs can differ in their
    labelled subset and nothing else (the paper's variance over label draws); unset: split_seed."""
    labelled_per_batch: int | None = None
    """m: labelled examples in every training minibatch of a run with ``labelled``, cycled
    through (oversampled) while the other M - m go once through the unlabelled ones per epoch.
    Default: M N / n, at least M / 10 (10 of 100 for 100 labels of MNIST)."""
    features: str | None = None
    """A run directory whose model has an encoder (a vae): train and evaluate on its codes,
    the encoder means of the data, instead of the data (M1+M2). Relative paths are looked up
    in the run directory first, like data files."""
    features_sample: bool = False
    """With ``features``: train on a fresh draw of the codes, z ~ q(z|x), for every example at
    every step (Kingma et al. 2014's M1+M2) instead of on their means; valid and test stay the
    means. Needs a run whose model gives its posterior (a vae)."""
    features_min_std: float = 0.0
    """With ``features``: keep only the code dimensions whose means vary over the training
    examples with a standard deviation above this (the paper's M1+M2: 0.1, M1's active units);
    0 keeps them all."""
    split_seed: int = 0
    """Seed of the fixed binarization and of splitting a user's array."""
    image_channels: int = 1
    """1 (grey) or 3 (RGB): how a folder of images is read (other data ignores it). Not
    ``channels``: that is a conv net's key, and ``--channels`` keeps meaning it."""
    image_size: tuple[int, ...] = ()
    """H, W to resize a folder's images to; empty: the first image's size (folders only)."""

    def __post_init__(self) -> None:
        check_choice("data.binarize", self.binarize, BINARIZE_MODES)
        for key in ("train_size", "labelled", "labelled_per_batch"):
            check_positive(f"data.{key}", getattr(self, key))
        if self.features_min_std < 0:
            raise ConfigError(f"data.features_min_std must be >= 0, got {self.features_min_std}")
        if self.image_channels not in (1, 3):
            raise ConfigError("data.image_channels must be 1 (grey) or 3 (RGB),"
                              f" got {self.image_channels}")
        if self.image_size and (len(self.image_size) != 2 or min(self.image_size) <= 0):
            raise ConfigError(
                f"data.image_size must be empty or two positive sizes H, W; got {self.image_size}"
            )


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = "adam"
    lr: float = 1e-3
    lr_schedule: str = "constant"
    """constant | iwae (Burda et al. 2016: 3^i passes at lr * 10^(-i/7) for i = 0..7, then
    lr / 10; a shorter run is theirs stopped early)."""
    adam_eps: float = 1e-8
    """Adam's epsilon (the IWAE paper: 1e-4)."""
    weight_decay: float = 0.0
    """L2 decay; the paper's N(0, I) prior on the parameters."""
    batch_size: int = 100
    """M, the minibatch size."""
    epochs: int = 20
    train_samples: int | None = None
    """A budget in training examples seen; when set it replaces ``epochs``."""
    patience: int | None = None
    """Stop after this many epochs without a better validation ELBO."""
    grad_clip: float | None = None
    """Scale each update's gradient down to this total norm where it is longer (unset: never)."""
    grad_skip: float | None = None
    """Skip each update whose gradient norm (before clipping) is above this or not finite
    (Child 2021); the run counts them (``skipped_updates``, per epoch). Unset: never."""
    seed: int = 0
    device: str = "auto"
    """auto | cpu | cuda | cuda:N | mps."""
    threads: int | None = None
    """CPU threads for PyTorch; default: all cores."""
    tensorboard: str | None = None
    """A directory for TensorBoard event files of every metric, samples, reconstructions, the
    test codes' embedding and the config (``engine.tensorboard``); "" is RUN/tensorboard;
    unset: none."""
    precision: str = "auto"
    """Training matmuls: float32 | bfloat16 (autocast; distribution parameters, losses and
    weights stay float32) | auto (bfloat16 on a CPU whose native bf16 matmuls were timed at
    1.25x float32's or faster: ``engine.device.bf16_matmuls_pay``). Validation runs in float32;
    the evaluation, in float32 unless eval.is_precision says."""

    def __post_init__(self) -> None:
        check_choice("train.optimizer", self.optimizer, OPTIMIZERS)
        check_choice("train.precision", self.precision, PRECISIONS)
        check_choice("train.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        for key in ("adam_eps", "lr", "batch_size", "epochs", "train_samples", "patience",
                    "threads", "grad_clip", "grad_skip"):
            check_positive(f"train.{key}", getattr(self, key))
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay must be >= 0, got {self.weight_decay}")


@dataclass(frozen=True)
class EvalConfig:
    is_samples: int = 1000
    """K, importance samples per test point for log p(x) (the literature uses 5000)."""
    batch_points: int = 100
    """Test points per evaluation batch."""
    max_points: int | None = None
    """Evaluate only the first N test points."""
    is_precision: str = "float32"
    """Matmuls of the importance-sampled log p(x): float32 | bfloat16 (autocast; densities stay
    float32), kept only where its log p(x) agrees with float32's within 0.02 nats per point on
    average over the first points, else the evaluation falls back to float32."""
    is_compile: bool = True
    """torch.compile the Bernoulli likelihood's softplus sum when points x K >= 10^7, where
    the seconds of compiling pay back (2x faster kernel on a CPU); false: never."""
    plots: bool = True
    test_curve: bool = False
    """Also score the test split after every epoch, as the validation split is (its metrics as
    ``test_*`` columns of metrics.csv, drawn in curves.png): the curve of a test error against
    epochs that papers report. Never used to choose the best epoch."""

    def __post_init__(self) -> None:
        check_choice("eval.is_precision", self.is_precision, ("float32", "bfloat16"))
        for key in ("is_samples", "batch_points", "max_points"):
            check_positive(f"eval.{key}", getattr(self, key))

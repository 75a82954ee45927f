"""What ``aevb reproduce`` runs: the paper's settings, the budget, the stages and the runs.

Kingma & Welling (2014), sec. 5: one tanh hidden layer, Adagrad with the step size picked from
{0.01, 0.02, 0.1}, M = 100, L = 1, N(0, 0.01^2) initialisation. Shared by the experiments
(:mod:`aevb.experiments.reproduce`) and their report (:mod:`aevb.experiments.reproduce_report`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from aevb.config.run import Config, model_config
from aevb.config.schema import DataConfig, EvalConfig, TrainConfig
from aevb.errors import ConfigError
from aevb.nn.nets import MLPConfig

__all__ = ["EXPERIMENTS", "Budget", "RunSpec", "Settings", "paper_config", "stages"]

EXPERIMENTS = ("fig2", "fig3", "fig4", "fig5")
METHODS = {"aevb": "elbo", "wake-sleep": "wake-sleep", "mcem": "mcem"}
"""The paper's methods and the ``model.objective`` that trains each."""
STEP_SIZES = (0.01, 0.02, 0.1)
"""Adagrad's step sizes, one picked per run on its first iterations (sec. 5)."""
PAPER_SAMPLES = 10**8
"""The paper's x axis ends at 10^8 training samples."""
TRAIN_POINTS = 1000
"""Training points on which a stage's train bound and train log p(x) are measured."""
VALID_POINTS = 1000
"""Validation points checked after every epoch (a 1000-point training set has an epoch of 10
steps, so the full 10,000 would cost more than the training)."""


@dataclass(frozen=True)
class Budget:
    """Training samples per run, or wall-clock minutes per command (shared by its runs)."""

    samples: int | None = None
    minutes: float | None = None

    @classmethod
    def parse(cls, text: str) -> Budget:
        """"1e6" or "1000000": samples per run; "60m" or "60min": minutes for the command."""
        match = re.fullmatch(r"\s*([0-9.eE+]+)\s*(m|min|minutes)?\s*", text)
        try:
            value = float(match.group(1)) if match else math.nan
        except ValueError:
            value = math.nan
        if not match or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"--budget takes training samples (1e6) or minutes (60m), got {text!r}")
        if match.group(2):
            return cls(minutes=value)
        if value != int(value) or value < 1:
            raise ConfigError(f"--budget in samples must be a whole number >= 1, got {text!r}")
        return cls(samples=int(value))

    def __str__(self) -> str:
        return f"{self.minutes:g} minutes" if self.minutes else f"{self.samples:.3g} samples per run"


def stages(last: int) -> list[int]:
    """Training-sample counts at which a run is measured: four per decade from 10^4, and
    ``last``."""
    points, j = [], 0
    while (value := round(10**4 * 10 ** (j / 4))) < last:
        points.append(value)
        j += 1
    return [*points, last]


@dataclass(frozen=True)
class RunSpec:
    """One training run of an experiment."""

    dataset: str
    method: str
    latent_dim: int
    hidden: int
    train_size: int | None = None

    @property
    def name(self) -> str:
        size = f"-n{self.train_size}" if self.train_size else ""
        return f"{self.dataset}-{self.method}-z{self.latent_dim}-h{self.hidden}{size}"


@dataclass(frozen=True)
class Settings:
    """What every run of one ``reproduce`` command shares."""

    out: Path
    budget: Budget
    dataset: str = "mnist"
    """The MNIST stand-in: mnist, or another binary-image dataset (the tests use digits)."""
    sizes: tuple[int, ...] | None = None
    """Latent sizes for fig2 and fig5 (default: the paper's)."""
    train_sizes: tuple[int, ...] = (1000, 50_000)
    """fig3's training-set sizes."""
    marginal_points: int = 100
    """Points of each split whose marginal likelihood fig3 estimates at every stage."""
    is_samples: int = 1000
    """K of the importance-sampled log p(x) in fig3."""
    hmc_samples: int = 200
    """L of the appendix D estimator (two sets of L posterior samples per point)."""
    hmc_burn_in: int = 100
    cache_dir: str = ""
    threads: int | None = None
    progress: bool = True
    seed: int = 0


def paper_config(spec: RunSpec, settings: Settings, lr: float, samples: int) -> Config:
    """The paper's settings for ``spec``: one tanh hidden layer, Adagrad, M = 100, L = 1."""
    frey = spec.dataset == "frey-face"
    data = DataConfig(name=spec.dataset, binarize="none" if frey else "dynamic",
                      cache_dir=settings.cache_dir, train_size=spec.train_size)
    model = model_config(
        "vae", latent_dim=spec.latent_dim,
        net=MLPConfig(hidden=(spec.hidden,), activation="tanh", init_std=0.01),
        likelihood="gaussian-sigmoid" if frey else "bernoulli",
        objective=METHODS[spec.method], estimator="analytic", samples=1)
    train_config = TrainConfig(
        optimizer="adagrad", lr=lr, weight_decay=0.0, batch_size=100, train_samples=samples,
        seed=settings.seed, threads=settings.threads, precision="float32")
    return Config(data=data, model=model, train=train_config,
                  eval=EvalConfig(batch_points=500, plots=False))

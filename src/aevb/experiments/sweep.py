"""The rate-distortion view: one run per beta, one budget, one curve and one table.

Training on rec - beta * KL weighs the rate (the KL, in nats) against the distortion
(-E_q[log p(x|z)]); with a Gaussian decoder of fixed sigma the distortion is the squared error
over 2 sigma^2 plus a constant, so beta plays the part of the L2 decoder's lambda. Each beta
gets its own run directory ``OUT/beta-<beta>``, one point and one row.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aevb.config.overrides import apply_overrides
from aevb.config.run import Config, config_keys
from aevb.data.splits import Dataset
from aevb.engine.features import load_run_data
from aevb.errors import ConfigError
from aevb.experiments.compare import train_and_evaluate
from aevb.files import atomic_write_text
from aevb.models import MODELS, Encoder, Likelihood, model_class
from aevb.reporting import charts

__all__ = ["sweep", "sweep_table"]

PICTURE = "rate_distortion.png"
TABLE = "sweep.md"
EVALUATION_KEYS = ("rate_nats", "distortion_nats", "recon_error_per_image", "elbo_nats",
                   "elbo_se", "log_px_nats", "log_px_se", "is_samples", "active_units",
                   "latent_dim")
"""What each row takes from its run's ``evaluation.json``."""


def sweep(config: Config, betas: Sequence[float], out_dir: str | Path, progress: bool = False,
          dataset: Dataset | None = None) -> list[dict[str, Any]]:
    """Train and evaluate ``config`` once per beta in ``betas``; one dict per run, in order.

    Each row has ``beta``, ``run_dir``, ``epochs`` and :data:`EVALUATION_KEYS` of the test
    evaluation (rate + distortion = -ELBO, nats per example). Writes ``OUT/rate_distortion.png``
    and ``OUT/sweep.md``.
    """
    if "beta" not in config_keys(type(config.model)):
        having = [name for name, cls in MODELS.items() if "beta" in config_keys(cls.config_class)]
        raise ConfigError(f"model {config.model.name!r} has no beta key to sweep (`aevb models"
                          f" {config.model.name}` lists its keys); models with one: "
                          f"{', '.join(sorted(having))}")
    cls = model_class(config.model.name)
    if not (issubclass(cls, Likelihood) and issubclass(cls, Encoder)):
        raise ConfigError(f"model {config.model.name!r} needs a likelihood and an encoder for"
                          " a rate-distortion sweep")
    names = [f"beta-{float(beta):g}" for beta in betas]
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"sweep needs one or more different betas, got {list(betas)}")
    out_dir = Path(out_dir)
    dataset = dataset or load_run_data(config.data)  # with data.features: the run's codes
    rows = []
    for beta, name in zip(betas, names, strict=True):
        result, evaluation, _ = train_and_evaluate(
            apply_overrides(config, {"beta": beta}), out_dir / name, progress, dataset)
        rows.append({"beta": float(beta), "run_dir": str(out_dir / name),
                     "epochs": len(result.history),
                     **{key: evaluation[key] for key in EVALUATION_KEYS}})
    charts.rate_distortion(
        [row["rate_nats"] for row in rows], [row["distortion_nats"] for row in rows],
        [f"β={row['beta']:g}" for row in rows], out_dir / PICTURE,
        squared_errors=[row["recon_error_per_image"] for row in rows],
        title=f"{config.model.name} on {Path(config.data.name).stem}: test rate and distortion")
    atomic_write_text(out_dir / TABLE, f"# Rate-distortion sweep over beta\n\n{sweep_table(rows)}"
                      f"\n![rate and distortion of each run]({PICTURE})\n")
    return rows


def sweep_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of ``sweep`` as one Markdown table (test split, nats per example)."""
    lines = ["| beta | rate (nats) | distortion (nats) | squared error per image"
             " | ELBO (nats) | log p(x) (nats) | active units |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {row['beta']:g} | {row['rate_nats']:.2f} | {row['distortion_nats']:.2f}"
              f" | {row['recon_error_per_image']:.2f} | {row['elbo_nats']:.2f} ± {row['elbo_se']:.2f}"
              f" | {row['log_px_nats']:.2f} ± {row['log_px_se']:.2f} (K={row['is_samples']})"
              f" | {row['active_units']}/{row['latent_dim']} |" for row in rows]
    return "\n".join(lines) + "\n"

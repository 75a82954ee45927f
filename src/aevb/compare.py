"""Several models, one dataset, one budget: train each, evaluate it on test, one table.

Every model gets the same data, optimizer, seed and budget (epochs or training samples), and of
the model settings every one that was changed from the first model's defaults and that the
model has (``config.apply_overrides``); its own run directory ``OUT/NAME`` with the usual
checkpoints, metrics, pictures and report, and one row of the table.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import Config, apply_overrides
from .data import Dataset, load_dataset
from .evaluate import evaluate_run
from .figures import draw_run_figures
from .models import MODELS, Likelihood
from .report import write_report
from .training import train

__all__ = ["AUTOENCODERS", "compare_models", "comparison_table"]

AUTOENCODERS = tuple(name for name, cls in MODELS.items() if not issubclass(cls, Likelihood))
"""The deterministic models, compared by default."""


def compare_models(
    config: Config,
    models: Sequence[str],
    out_dir: str | Path,
    progress: bool = False,
    dataset: Dataset | None = None,
) -> list[dict[str, Any]]:
    """Train and evaluate each of ``models`` with ``config``; one dict per model.

    Each row has the model, its code size, trainable parameters, epochs, training seconds
    (wall clock of the whole ``train`` call: a closed-form fit, every epoch's validation and
    checkpoints included) and the test reconstruction errors (squared error per pixel and per
    image) of its best checkpoint.
    """
    out_dir = Path(out_dir)
    dataset = dataset or load_dataset(config.data)
    rows = []
    for name in models:
        run_config = apply_overrides(config, {"model": name})
        started = time.perf_counter()
        result = train(run_config, out_dir / name, progress=progress, dataset=dataset)
        seconds = time.perf_counter() - started
        evaluation = evaluate_run(out_dir / name, run_config.eval, progress=progress,
                                  dataset=result.dataset, device=result.device)
        if run_config.eval.plots:
            draw_run_figures(out_dir / name, result.dataset, result.device)
        write_report(out_dir / name)
        rows.append({
            "model": name,
            "code_size": evaluation["latent_dim"],
            "parameters": sum(p.numel() for p in result.model.parameters() if p.requires_grad),
            "epochs": len(result.history),
            "train_seconds": seconds,
            "recon_error_per_pixel": evaluation["recon_error_per_pixel"],
            "recon_error_per_image": evaluation["recon_error_per_image"],
        })
    return rows


def comparison_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as one Markdown table."""
    header = ("| model | code size | parameters | epochs | train seconds"
              " | test squared error per pixel | per image |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['code_size']} | {row['parameters']:,} | {row['epochs']}"
            f" | {row['train_seconds']:.1f} | {row['recon_error_per_pixel']:.5f}"
            f" | {row['recon_error_per_image']:.2f} |"
        )
    return "\n".join(lines) + "\n"

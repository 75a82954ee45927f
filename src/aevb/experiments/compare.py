"""Several models, one dataset, one budget: train each, evaluate it on test, one table.

Every model gets the same data, optimizer, seed, budget and the changed model settings it has
(``apply_overrides``), its own run directory ``OUT/NAME`` and one row of the table.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aevb.config.overrides import apply_overrides
from aevb.config.run import Config
from aevb.data.splits import Dataset
from aevb.engine.features import load_run_data
from aevb.engine.loop import TrainResult, train
from aevb.errors import ConfigError
from aevb.evaluation.evaluate import evaluate_run
from aevb.models import MODELS, Likelihood
from aevb.models.registry import BUILTIN
from aevb.reporting.figures import draw_run_figures
from aevb.reporting.report import write_report

__all__ = ["autoencoders", "compare_models", "comparison_table", "train_and_evaluate"]


def autoencoders() -> list[str]:
    """The deterministic models that ship with aevb, compared by default."""
    return [name for name, cls in MODELS.items()
            if MODELS.origin(name) == BUILTIN and not issubclass(cls, Likelihood)]


def compare_models(config: Config, models: Sequence[str], out_dir: str | Path,
                   progress: bool = False, dataset: Dataset | None = None) -> list[dict[str, Any]]:
    """Train and evaluate each of ``models`` with ``config``; one dict per model: its code size,
    trainable parameters, epochs, training seconds (the whole ``train`` call) and the test
    squared error per pixel and per image of its best checkpoint."""
    # every name checked before anything trains: a registered model, so a plain directory name
    if not models or len(set(models)) != len(models):
        raise ConfigError(f"compare needs one or more different models, got {list(models)}")
    configs = [apply_overrides(config, {"model": name}) for name in models]
    out_dir = Path(out_dir)
    dataset = dataset or load_run_data(config.data)
    rows = []
    for name, model_config in zip(models, configs, strict=True):
        result, evaluation, seconds = train_and_evaluate(
            model_config, out_dir / name, progress, dataset)
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


def train_and_evaluate(config: Config, run_dir: Path, progress: bool = False,
                       dataset: Dataset | None = None) -> tuple[TrainResult, dict[str, Any], float]:
    """One run of a comparison or sweep: train ``config`` in ``run_dir``, evaluate its best
    checkpoint on the test split, draw its pictures (when ``config.eval.plots``) and write its
    report. Returns the training result, the evaluation and the seconds ``train`` took."""
    started = time.perf_counter()
    result = train(config, run_dir, progress=progress, dataset=dataset)
    seconds = time.perf_counter() - started
    evaluation = evaluate_run(run_dir, config.eval, progress=progress, dataset=result.dataset,
                              device=result.device)
    if config.eval.plots:
        draw_run_figures(run_dir, result.dataset, result.device)
    write_report(run_dir)
    return result, evaluation, seconds


def comparison_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as one Markdown table."""
    header = ("| model | code size | parameters | epochs | train seconds"
              " | test squared error per pixel | per image |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {row['model']} | {row['code_size']} | {row['parameters']:,} | {row['epochs']}"
              f" | {row['train_seconds']:.1f} | {row['recon_error_per_pixel']:.5f}"
              f" | {row['recon_error_per_image']:.2f} |" for row in rows]
    return "\n".join(lines) + "\n"

"""``aevb reproduce``: the experiments of Kingma & Welling (2014), sec. 5, one command each.

- ``fig2``: the lower bound on the train and test sets against the number of training samples
  seen, AEVB against the wake-sleep algorithm with the same recognition model, one panel per
  latent size (MNIST: 3, 5, 10, 20, 200; Frey Face: 2, 5, 10, 20).
- ``fig3``: the marginal likelihood of a 3-D latent model with 100 hidden units trained on 1000
  and on 50,000 MNIST points by AEVB, wake-sleep and Monte Carlo EM, estimated with the paper's
  appendix D estimator (:mod:`aevb.inference.marginal`) and with importance sampling.
- ``fig4``: the learned 2-D manifolds (MNIST, Frey Face).
- ``fig5``: samples of MNIST models with 2, 5, 10 and 20 latent dimensions.

Every run is the ``vae`` with the paper's settings (``reproduce_plan``) and ``model.objective``
elbo, wake-sleep or mcem. A run is trained in stages (four per decade of training samples), each
a resumed run measured after it into ``RUN/stages.csv``, so its curve is the run itself and an
interrupted command continues where it stopped. Experiments share runs (fig5 fig2's and fig4's).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from aevb.config.run import Config
from aevb.data.datasets import fetch, load_dataset
from aevb.data.sources.frey import frey_unavailable_reason
from aevb.data.splits import Dataset, Split
from aevb.engine.loop import train
from aevb.engine.rng import seeded
from aevb.errors import AevbError, ConfigError, DataError
from aevb.experiments.reproduce_measures import measure_bounds, measure_marginal
from aevb.experiments.reproduce_plan import (
    EXPERIMENTS,
    METHODS,
    PAPER_SAMPLES,
    STEP_SIZES,
    VALID_POINTS,
    Budget,
    RunSpec,
    Settings,
    paper_config,
    stages,
)
from aevb.experiments.reproduce_report import write_report
from aevb.files import atomic_write_text
from aevb.models.base import Generative, Model
from aevb.reporting import charts, latents, plots
from aevb.reporting.report import read_rows

__all__ = ["EXPERIMENTS", "Budget", "Settings", "reproduce"]


def _with_decay(config: Config, dataset: Dataset) -> Config:
    """Weight decay 1/N: the N(0, I) prior on the parameters, per training example."""
    return replace(config, train=replace(config.train, weight_decay=1.0 / len(dataset.train)))


def _load(spec: RunSpec, settings: Settings) -> Dataset:
    config = paper_config(spec, settings, STEP_SIZES[0], 1)
    dataset = load_dataset(config.data)
    valid = dataset.valid
    n = min(VALID_POINTS, len(valid))
    small = Split(valid.values(torch.arange(n, device=valid.device)),
                  None if valid.y is None else valid.y[:n], valid.binarize,
                  None if valid.c is None else valid.c[:n])
    return replace(dataset, valid=small)


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def choose_step_size(spec: RunSpec, settings: Settings, dataset: Dataset, run_dir: Path,
                     probe_samples: int) -> float:
    """Adagrad's step size from :data:`STEP_SIZES`: the one whose first ``probe_samples``
    training samples give the best mean training ELBO (the paper picks it "based on
    performance on the training set in the first few iterations"). Kept in
    ``RUN/step_size.json``."""
    record = run_dir / "step_size.json"
    if record.is_file():
        return float(json.loads(record.read_text())["chosen"])
    scores = {}
    for lr in STEP_SIZES:
        probe = run_dir / f"probe-lr{lr:g}"
        shutil.rmtree(probe, ignore_errors=True)  # a probe is cheap: never resumed
        config = _with_decay(paper_config(spec, settings, lr, probe_samples), dataset)
        try:
            score = train(config, probe, progress=False, dataset=dataset).history[-1]["train_elbo"]
        except (AevbError, ValueError, RuntimeError):  # diverged: a step size too large
            score = -math.inf  # (NaN parameters fail in distributions or the sampler)
        scores[f"{lr:g}"] = score if math.isfinite(score) else -math.inf
        shutil.rmtree(probe, ignore_errors=True)
    chosen = max(STEP_SIZES, key=lambda lr: scores[f"{lr:g}"])
    if not math.isfinite(scores[f"{chosen:g}"]):
        raise AevbError(f"{spec.name}: training diverged at every step size {STEP_SIZES}")
    atomic_write_text(record, json.dumps({"probe_samples": probe_samples, "train_elbo": scores,
                                          "chosen": chosen}, indent=2) + "\n")
    return chosen


Measure = Callable[[Model, Dataset, Settings], dict[str, float]]


def train_in_stages(spec: RunSpec, settings: Settings, measure: Measure, seconds: float | None
                    ) -> tuple[Path, list[dict[str, str]]]:
    """Train ``spec`` to each stage of the budget, measuring after each; return the run
    directory and its rows (one per stage). Stages already in ``RUN/stages.csv`` are kept."""
    run_dir = settings.out / "runs" / spec.name
    run_dir.mkdir(parents=True, exist_ok=True)
    table = run_dir / "stages.csv"
    rows = read_rows(table)
    done = {int(row["samples"]) for row in rows}
    dataset = _load(spec, settings)
    last = settings.budget.samples or PAPER_SAMPLES
    plan = stages(last)
    probe = max(100, min(10_000, plan[-1] // 10))
    lr = choose_step_size(spec, settings, dataset, run_dir, probe)
    spent = sum(float(row["seconds"]) for row in rows)
    for samples in plan:
        if samples in done:
            continue
        if seconds is not None and spent >= seconds:
            break
        started = time.perf_counter()
        config = _with_decay(paper_config(spec, settings, lr, samples), dataset)
        (run_dir / "train").mkdir(exist_ok=True)
        result = train(config, run_dir / "train", resume=True, progress=False, dataset=dataset)
        model = result.model.eval()
        trained = time.perf_counter() - started
        row: dict[str, Any] = {"samples": samples, "lr": lr, "train_seconds": round(trained, 2)}
        row.update(measure(model, result.dataset, settings))
        row["seconds"] = round(time.perf_counter() - started, 2)
        spent += row["seconds"]
        rows.append({k: str(v) for k, v in row.items()})
        _write_rows(table, rows)
    return run_dir, rows


@functools.cache
def _frey_note(cache_dir: str) -> str | None:
    """None when Frey Face is at hand or can be fetched now (once per command); else the
    message that says its panels are skipped and why."""
    if frey_unavailable_reason(cache_dir) is None:
        return None
    try:
        fetch("frey-face", cache_dir)
    except DataError as error:
        return f"Frey Face panels skipped: {error}"
    return None


def fig2_runs(settings: Settings) -> list[RunSpec]:
    runs = [RunSpec(settings.dataset, method, size, 500)
            for size in settings.sizes or (3, 5, 10, 20, 200) for method in ("aevb", "wake-sleep")]
    if settings.dataset == "mnist" and _frey_note(settings.cache_dir) is None:
        runs += [RunSpec("frey-face", method, size, 200)
                 for size in settings.sizes or (2, 5, 10, 20) for method in ("aevb", "wake-sleep")]
    return runs


def fig3_runs(settings: Settings) -> list[RunSpec]:
    return [RunSpec(settings.dataset, method, 3, 100, n) for n in settings.train_sizes
            for method in METHODS]


def fig4_runs(settings: Settings) -> list[RunSpec]:
    runs = [RunSpec(settings.dataset, "aevb", 2, 500)]
    if settings.dataset == "mnist" and _frey_note(settings.cache_dir) is None:
        runs.append(RunSpec("frey-face", "aevb", 2, 200))
    return runs


def fig5_runs(settings: Settings) -> list[RunSpec]:
    return [RunSpec(settings.dataset, "aevb", size, 500) for size in settings.sizes or (2, 5, 10, 20)]


RUNS = {"fig2": fig2_runs, "fig3": fig3_runs, "fig4": fig4_runs, "fig5": fig5_runs}


def _curve(rows: list[dict[str, str]], column: str) -> tuple[list[float], list[float]]:
    xs = [float(r["samples"]) for r in rows if r.get(column)]
    return xs, [float(r[column]) for r in rows if r.get(column)]


def draw_fig2(results: dict[RunSpec, list[dict[str, str]]], out: Path) -> list[Path]:
    paths = []
    for dataset in dict.fromkeys(spec.dataset for spec in results):
        panels: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
        for spec, rows in results.items():
            if spec.dataset != dataset:
                continue
            panel = panels.setdefault(f"{dataset}, N_z = {spec.latent_dim}", {})
            label = "AEVB" if spec.method == "aevb" else "wake-sleep"
            panel[f"{label} (train)"] = _curve(rows, "train_bound")
            panel[f"{label} (test)"] = _curve(rows, "test_bound")
        paths.append(charts.curve_panels(panels, out / f"fig2-{dataset}.png",
                                        "training samples evaluated", "lower bound (nats)"))
    return paths


def draw_fig3(results: dict[RunSpec, list[dict[str, str]]], out: Path) -> list[Path]:
    paths = []
    for estimator, title in (("appendix_d", "appendix D estimator"),
                             ("is", "importance sampling")):
        panels: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
        for spec, rows in results.items():
            panel = panels.setdefault(f"N_train = {spec.train_size}", {})
            for split in ("train", "test"):
                panel[f"{spec.method} ({split})"] = _curve(rows, f"{split}_log_px_{estimator}")
        paths.append(charts.curve_panels(
            panels, out / f"fig3-{estimator.replace('_', '-')}.png", "training samples evaluated",
            "marginal log-likelihood (nats)", title=f"log p(x), {title}"))
    return paths


def _load_last(run_dir: Path) -> Generative:
    from aevb.engine.checkpoint import load_model

    model = load_model(run_dir / "train", "last")[1]
    assert isinstance(model, Generative)
    return model


def draw_fig4(results: dict[RunSpec, list[dict[str, str]]], out: Path) -> list[Path]:
    paths = []
    grid = latents.manifold_quantiles(20)
    z = torch.tensor(np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2), dtype=torch.float32)
    for spec in results:
        model = _load_last(out / "runs" / spec.name)
        with torch.no_grad():
            images = model.decode(z).cpu().numpy()
        paths.append(latents.manifold_grid(images.reshape(20, 20, *images.shape[1:]), grid,
                                         out / f"fig4-{spec.dataset}.png",
                                         f"{spec.dataset}: learned 2-D manifold"))
    return paths


def draw_fig5(results: dict[RunSpec, list[dict[str, str]]], out: Path) -> list[Path]:
    panels = {}
    for spec in results:
        model = _load_last(out / "runs" / spec.name)
        with seeded(0), torch.no_grad():  # the model is on the CPU (_load_last)
            panels[f"N_z = {spec.latent_dim}"] = model.sample(100).cpu().numpy()
    return [plots.image_panels(panels, out / "fig5.png", ncols=10,
                               title="random samples (decoder means at z ~ p(z))")]


DRAW = {"fig2": draw_fig2, "fig3": draw_fig3, "fig4": draw_fig4, "fig5": draw_fig5}


def reproduce(experiment: str, settings: Settings) -> Path:
    """Run ``experiment`` (one of :data:`EXPERIMENTS`, or "all") and write its CSV, pictures and
    ``settings.out/report.md``; return the report's path."""
    chosen = EXPERIMENTS if experiment == "all" else (experiment,)
    if any(name not in EXPERIMENTS for name in chosen):
        raise ConfigError(f"unknown experiment {experiment!r}; choose one of "
                          f"{', '.join(EXPERIMENTS)} or all")
    settings.out.mkdir(parents=True, exist_ok=True)
    plan = {name: RUNS[name](settings) for name in chosen}
    unique = list(dict.fromkeys(spec for specs in plan.values() for spec in specs))
    seconds = (settings.budget.minutes * 60 / len(unique)) if settings.budget.minutes else None
    notes = [note for note in (_frey_note(settings.cache_dir),) if note and
             settings.dataset == "mnist" and {"fig2", "fig4"} & set(chosen)]
    for note in notes:
        print(note)
    measured: dict[RunSpec, list[dict[str, str]]] = {}
    bar = tqdm(unique, desc="reproduce", unit="run", disable=not settings.progress)
    for spec in bar:
        bar.set_postfix_str(spec.name)
        measure = measure_marginal if spec in plan.get("fig3", ()) else measure_bounds
        try:
            _, rows = train_in_stages(spec, settings, measure, seconds)
        except DataError as error:
            raise AevbError(f"{spec.name}: {error}") from error
        measured[spec] = rows
    bar.close()
    pictures: dict[str, list[Path]] = {}
    for name in chosen:
        results = {spec: measured[spec] for spec in plan[name]}
        _write_rows(settings.out / f"{name}.csv",
                    [{"run": spec.name, "dataset": spec.dataset, "method": spec.method,
                      "latent_dim": spec.latent_dim, "hidden": spec.hidden,
                      "train_size": spec.train_size or "", **row}
                     for spec, rows in results.items() for row in rows])
        pictures[name] = DRAW[name](results, settings.out)
    return write_report(settings.out, chosen, plan, measured, pictures, settings, notes)

"""Evaluation: test ELBO, importance-sampled log p(x), rate and distortion, reconstruction
error, active units, each for the models that have the ability it needs.

All log-likelihoods are in nats per example and come with their standard error over test
points. The importance-sampled estimate is (Rezende et al. 2014, appendix E; Burda et al. 2016)

    log p(x) ≈ log (1/K) sum_k p(x, z_k) / q(z_k|x),  z_k ~ q(z|x),

a stochastic lower bound that tightens to log p(x) as K grows; a model that knows a better
estimator of its own marginal likelihood gives it through ``log_marginal``.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from aevb.config.schema import EvalConfig
from aevb.data.splits import Dataset, Split
from aevb.engine import rundir
from aevb.engine.batches import batches
from aevb.engine.checkpoint import load_model
from aevb.engine.device import resolve_device, unchecked_args
from aevb.engine.features import load_run_data
from aevb.engine.resume import check_same_data
from aevb.engine.rng import seeded
from aevb.errors import AevbError
from aevb.evaluation.speed import compiled_kernels, fast_log_marginal
from aevb.files import atomic_write_text
from aevb.models import Batch, Classifier, Encoder, Hierarchical, Likelihood, Model, Step

__all__ = ["AGREEMENT_NATS", "AGREEMENT_POINTS", "COMPILE_SAMPLES", "active_units",
           "evaluate_model", "evaluate_run", "evaluation_file", "log_likelihood",
           "mean_and_standard_error", "precision_agreement"]

AGREEMENT_POINTS = 200
"""A bfloat16 evaluation also scores this many of its first points in float32, same draws."""
AGREEMENT_NATS = 0.02
"""The largest mean |log p(x) in bfloat16 - in float32| per point, in nats, that keeps bfloat16."""
COMPILE_SAMPLES = 10**7
"""points x K from which ``eval.is_compile`` compiles (a few seconds, paid back by then)."""


def mean_and_standard_error(values: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error of the mean of a 1-D tensor of per-example values."""
    values = values.double()
    n = values.numel()
    se = values.std(unbiased=True).item() / math.sqrt(n) if n > 1 else float("nan")
    return values.mean().item(), se


@torch.no_grad()
def log_likelihood(model: Likelihood, batch: Batch, samples: int,
                   precision: torch.dtype = torch.float32) -> torch.Tensor:
    """log p(x) per example (B,) in nats: the model's estimate with K = ``samples``
    (``speed.fast_log_marginal``), its matmuls in ``precision`` (bfloat16: autocast, the
    densities stay float32)."""
    with torch.autocast(batch.x.device.type, precision, enabled=precision != torch.float32):
        return fast_log_marginal(model, batch, samples).float()


def precision_agreement(model: Likelihood, split: Split, config: EvalConfig, seed: int = 0
                        ) -> tuple[float, int]:
    """(mean |log p(x) in bfloat16 - log p(x) in float32| in nats per point, the points): over
    the first ``AGREEMENT_POINTS`` of ``split``, both precisions from the same draws."""
    n = min(_points(split, config.max_points), AGREEMENT_POINTS)
    estimates = []
    for precision in (torch.float32, torch.bfloat16):
        with seeded(seed, split.device), unchecked_args():
            estimates.append(torch.cat([log_likelihood(model, batch, config.is_samples, precision)
                                        for batch in batches(split, config.batch_points, n)]))
    return (estimates[1] - estimates[0]).abs().mean().item(), n


def active_units(codes: torch.Tensor, threshold: float = 1e-2) -> int:
    """Latent dimensions whose posterior mean varies across data: Cov_x(E_q[z_u]) > threshold
    (Burda et al. 2016, sec. 5.2); ``codes`` are the posterior means (N, D)."""
    return int((codes.double().var(0) > threshold).sum().item())


def _points(split: Split, max_points: int | None) -> int:
    return min(len(split), max_points) if max_points else len(split)


def _batch_columns(model: Model, batch: Batch, samples: int, step: Step,
                   precision: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Per-example values of one batch for every ability the model has."""
    values: dict[str, torch.Tensor] = {}
    if isinstance(model, Encoder):
        squared = (model.reconstruct(batch) - batch.x).pow(2).flatten(1)
        values.update(sq_pixel=squared.mean(1), sq_image=squared.sum(1), code=model.encode(batch))
    if isinstance(model, Classifier) and batch.y is not None:
        labelled = batch.y >= 0  # unlabelled examples (y = -1) are not scored
        wrong = model.classify(batch).argmax(-1) != batch.y
        values.update(misclassified=wrong[labelled].float())
    if isinstance(model, Likelihood):
        terms = model.elbo_terms(batch, 1)
        values.update(elbo=terms.elbo, rec=terms.rec,
                      log_px=log_likelihood(model, batch, samples, precision))
        values.update({f"kl:{name}": part for name, part in terms.kl.items()})
    else:  # no likelihood to score: the model's own metrics (a WAE's distance to its prior)
        _, metrics = model.loss(batch, step)
        size = batch.x.shape[0]  # a batch mean stands for each of its points: means weigh by size
        values.update({f"metric:{name}": value.float().expand(size)
                       for name, value in metrics.items()})
    return values


@torch.no_grad()
def evaluate_model(model: Model, split: Split, config: EvalConfig, progress: bool = True,
                   seed: int = 0, step: Step | None = None) -> dict[str, Any]:
    """Evaluate ``model`` on (the first ``config.max_points`` of) ``split``.

    A classifier gets its classification error on the labelled points; a model with an encoder
    reconstruction errors and active units (per layer too: ``active_units_z1`` …); a model with
    a likelihood its ELBO (L = 1), split into rate (KL: in total, per latent layer, per
    dimension) and distortion (-E_q[log p(x|z)]), and its log p(x) with K = ``is_samples`` in
    ``is_precision``: bfloat16 only where it agrees with float32 within ``AGREEMENT_NATS`` per
    point (``bf16_agreement_nats``), else float32 and a warning. A model without a likelihood
    gets the means of its own metrics (``model.loss`` in eval mode at ``step``, the training
    step that gave the weights) as ``test_<metric>``.
    """
    step = step or Step(0, 1)
    model.eval()
    n = _points(split, config.max_points)
    likelihood = isinstance(model, Likelihood)
    columns: dict[str, list[torch.Tensor]] = {}
    started = time.perf_counter()
    compiling = config.is_compile and n * config.is_samples >= COMPILE_SAMPLES
    precision, agreement = torch.float32, {}
    if isinstance(model, Likelihood) and config.is_precision == "bfloat16":
        with compiled_kernels(compiling):
            difference, checked = precision_agreement(model, split, config, seed)
        agreement = {"bf16_agreement_nats": difference, "bf16_agreement_points": checked}
        if difference <= AGREEMENT_NATS:
            precision = torch.bfloat16
        else:
            warnings.warn(f"bfloat16 log p(x) differs from float32's by {difference:.4f} nats"
                          f" per point on average over the first {checked} points, more than"
                          f" {AGREEMENT_NATS}: evaluating in float32", stacklevel=2)
    with seeded(seed, split.device), unchecked_args(), compiled_kernels(compiling):
        desc = f"evaluate (K={config.is_samples})" if likelihood else "evaluate"
        for batch in tqdm(batches(split, config.batch_points, n), desc=desc, unit="batch",
                          total=math.ceil(n / config.batch_points), disable=not progress):
            for name, value in _batch_columns(model, batch, config.is_samples, step,
                                              precision).items():
                columns.setdefault(name, []).append(value.float().cpu())
            if isinstance(model, Hierarchical):
                for name, code in model.encode_layers(batch).items():
                    columns.setdefault(f"layer:{name}", []).append(code.float().cpu())
    joined = {name: torch.cat(parts).double() for name, parts in columns.items()}
    result: dict[str, Any] = {"points": n}
    if likelihood:
        result.update(_likelihood_result(joined), is_samples=config.is_samples,
                      is_precision=str(precision).removeprefix("torch."), **agreement)
    result.update({f"test_{name[7:]}": value.mean().item() for name, value in joined.items()
                   if name.startswith("metric:")})
    if "code" in joined:
        result.update(latent_dim=int(joined["code"].shape[1]),
                      recon_error_per_pixel=joined["sq_pixel"].mean().item(),
                      recon_error_per_image=joined["sq_image"].mean().item(),
                      active_units=active_units(joined["code"]))
    result.update({f"active_units_{name[6:]}": active_units(codes)
                   for name, codes in joined.items() if name.startswith("layer:")})
    if "misclassified" in joined and len(joined["misclassified"]):
        result["classification_error"] = joined["misclassified"].mean().item()
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result


def _likelihood_result(joined: dict[str, torch.Tensor]) -> dict[str, Any]:
    """ELBO and log p(x) ± s.e., rate (in total, per layer where there are several, per
    dimension) and distortion, from the points' columns."""
    elbo, elbo_se = mean_and_standard_error(joined["elbo"])
    log_px, log_px_se = mean_and_standard_error(joined["log_px"])
    if not (math.isfinite(elbo) and math.isfinite(log_px)):
        raise AevbError(f"evaluation gave a non-finite value (ELBO {elbo}, log p(x) {log_px})")
    parts = {name[3:]: joined[name] for name in joined if name.startswith("kl:")}
    result: dict[str, Any] = {
        "elbo_nats": elbo, "elbo_se": elbo_se,
        "log_px_nats": log_px, "log_px_se": log_px_se, "nll_nats": -log_px,
        "rate_nats": torch.stack([part.sum(1) for part in parts.values()]).sum(0).mean().item(),
        "distortion_nats": -joined["rec"].mean().item(),
    }
    if len(parts) > 1:
        result.update({f"rate_{name}_nats": part.sum(1).mean().item()
                       for name, part in parts.items()})
    result["kl_per_dim_nats"] = {name: part.mean(0).tolist() for name, part in parts.items()}
    return result


def evaluation_file(run_eval: EvalConfig, config: EvalConfig, split: str = "test",
                    which: str = "best", data_name: str | None = None) -> str:
    """``evaluation.json`` for the run's own evaluation (test split, the run's K and points,
    best checkpoint, own data: the report's); any other named by what differs, as in
    ``evaluation-valid-k10-last.json``."""
    differs = []
    if config.is_samples != run_eval.is_samples:
        differs.append(f"k{config.is_samples}")
    if config.max_points != run_eval.max_points:
        differs.append(f"n{config.max_points}")
    if config.is_precision != run_eval.is_precision:
        differs.append(config.is_precision)
    if which != "best":
        differs.append(which)
    if data_name is not None:
        differs.append("".join(c if c.isalnum() or c in "-_" else "_"
                               for c in Path(data_name).stem))
    if split == "test" and not differs:
        return "evaluation.json"
    return "-".join(["evaluation", split, *differs]) + ".json"


def evaluate_run(run_dir: str | Path, config: EvalConfig | None = None, split: str = "test",
                 which: str = "best", progress: bool = True, dataset: Dataset | None = None,
                 device: str | torch.device = "auto", data_name: str | None = None
                 ) -> dict[str, Any]:
    """Evaluate a run's checkpoint and write it to ``evaluation_file(...)`` in the run
    directory. ``data_name``: evaluate on that dataset (a name or a path) instead of the run's
    own. ``device``: auto is a GPU where there is one."""
    device = resolve_device(str(device))
    run_config, model, header = load_model(run_dir, which, device)
    config = config or run_config.eval
    if split not in ("train", "valid", "test"):
        raise AevbError(f"unknown split {split!r}: use train, valid or test")
    data_config = (run_config.data if data_name is None
                   else replace(run_config.data, name=data_name))
    if dataset is None:
        dataset = load_run_data(data_config, run_dir, device)
        if data_name is None:  # the run's own data must be the data it trained on
            check_same_data(header, dataset, data_config.name,
                            "pass --dataset to evaluate this run on other data")
    dataset = dataset.to(device)
    file = evaluation_file(run_config.eval, config, split, which, data_name)
    steps = int(header.get("step") or 1)
    # the schedule as at the step whose update gave these weights (as validation had it)
    step = Step(steps - 1, int(header.get("schedule_steps") or steps))
    result = {"split": split, "file": file, "checkpoint": which, "epoch": header.get("epoch"),
              **evaluate_model(model, getattr(dataset, split), config, progress,
                               run_config.train.seed, step)}
    with rundir.locked(run_dir):
        atomic_write_text(Path(run_dir) / file, json.dumps(result, indent=2) + "\n")
    return result

"""Evaluation: test ELBO, importance-sampled log p(x), reconstruction error, active units.

All log-likelihoods are in nats per example and come with their standard error over test
points. The importance-sampled estimate is (Rezende et al. 2014, appendix E; Burda et al. 2016)

    log p(x) ≈ log (1/K) sum_k p(x, z_k) / q(z_k|x),  z_k ~ q(z|x),

a stochastic lower bound that tightens to log p(x) as K grows.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .checkpoint import atomic_write_text, load_model
from .config import EvalConfig
from .data import Dataset, Split, load_dataset
from .errors import AevbError
from .models import LatentVariableModel, Model
from .objectives import iwae_bound

__all__ = [
    "active_units",
    "evaluate_model",
    "evaluate_run",
    "log_likelihood",
    "mean_and_standard_error",
]

ELEMENTS_PER_CHUNK = 1 << 23
"""How many decoder outputs (samples × points × pixels) one importance-sampling chunk holds."""


def mean_and_standard_error(values: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error of the mean of a 1-D tensor of per-example values."""
    values = values.double()
    n = values.numel()
    se = values.std(unbiased=True).item() / math.sqrt(n) if n > 1 else float("nan")
    return values.mean().item(), se


@torch.no_grad()
def log_likelihood(
    model: LatentVariableModel, x: torch.Tensor, samples: int, chunk: int | None = None
) -> torch.Tensor:
    """Importance-sampled log p(x) per example, (B,), with K = ``samples`` draws from q(z|x).

    The K samples are drawn in chunks (leading dimension) so memory stays bounded; the
    log-weights of all chunks are joined before one ``logsumexp``.
    """
    if chunk is None:
        chunk = max(1, ELEMENTS_PER_CHUNK // max(1, x[0].numel() * len(x)))
    log_w = [model.log_weights(x, min(chunk, samples - k)) for k in range(0, samples, chunk)]
    return iwae_bound(torch.cat(log_w, 0))


def active_units(codes: torch.Tensor, threshold: float = 1e-2) -> int:
    """Latent dimensions whose posterior mean varies across data: Cov_x(E_q[z_u]) > threshold.

    Burda et al. (2016), sec. 5.2; ``codes`` are the posterior means (N, D).
    """
    return int((codes.double().var(0) > threshold).sum().item())


def _points(split: Split, max_points: int | None) -> int:
    return min(len(split), max_points) if max_points else len(split)


@torch.no_grad()
def evaluate_model(
    model: Model,
    split: Split,
    config: EvalConfig,
    progress: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate ``model`` on (the first ``config.max_points`` of) ``split``.

    Every model gets reconstruction errors and active units; a latent-variable model also gets
    its ELBO (L = 1) and importance-sampled log p(x) with K = ``config.is_samples``.
    """
    model.eval()
    n = _points(split, config.max_points)
    likelihood_model = isinstance(model, LatentVariableModel)
    columns: dict[str, list[torch.Tensor]] = {}
    started = time.perf_counter()
    devices = [split.x.device] if split.x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        batches = range(0, n, config.batch_points)
        desc = f"evaluate (K={config.is_samples})" if likelihood_model else "evaluate"
        for start in tqdm(batches, desc=desc, unit="batch", disable=not progress):
            index = torch.arange(start, min(start + config.batch_points, n), device=split.x.device)
            x = split.batch(index)
            squared = (model.reconstruct(x) - x).pow(2).flatten(1)
            values = {"sq_pixel": squared.mean(1), "sq_image": squared.sum(1), "code": model.encode(x)}
            if likelihood_model:
                terms = model.elbo_terms(x, 1)
                values.update(elbo=terms.elbo, rec=terms.rec, kl=terms.kl,
                              log_px=log_likelihood(model, x, config.is_samples))
            for name, value in values.items():
                columns.setdefault(name, []).append(value.float().cpu())
    joined = {name: torch.cat(parts) for name, parts in columns.items()}
    result: dict[str, Any] = {"points": n, "latent_dim": int(joined["code"].shape[1])}
    if likelihood_model:
        elbo, elbo_se = mean_and_standard_error(joined["elbo"])
        log_px, log_px_se = mean_and_standard_error(joined["log_px"])
        result.update(
            elbo_nats=elbo, elbo_se=elbo_se,
            rec_nats=joined["rec"].double().mean().item(),
            kl_nats=joined["kl"].double().mean().item(),
            log_px_nats=log_px, log_px_se=log_px_se, nll_nats=-log_px,
            is_samples=config.is_samples,
        )
        if not (math.isfinite(elbo) and math.isfinite(log_px)):
            raise AevbError(f"evaluation gave a non-finite value (ELBO {elbo}, log p(x) {log_px})")
    result.update(
        recon_error_per_pixel=joined["sq_pixel"].double().mean().item(),
        recon_error_per_image=joined["sq_image"].double().mean().item(),
        active_units=active_units(joined["code"]),
        seconds=round(time.perf_counter() - started, 3),
    )
    return result


def evaluate_run(
    run_dir: str | Path,
    config: EvalConfig | None = None,
    split: str = "test",
    which: str = "best",
    progress: bool = True,
    dataset: Dataset | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Evaluate a run's checkpoint and write ``evaluation.json`` (the split's name in it)."""
    run_config, model, header = load_model(run_dir, which, device)
    config = config or run_config.eval
    if split not in ("train", "valid", "test"):
        raise AevbError(f"unknown split {split!r}: use train, valid or test")
    dataset = (dataset or load_dataset(run_config.data)).to(device)
    result = {
        "split": split,
        "checkpoint": which,
        "epoch": header.get("epoch"),
        **evaluate_model(model, getattr(dataset, split), config, progress, run_config.train.seed),
    }
    atomic_write_text(Path(run_dir) / "evaluation.json", json.dumps(result, indent=2) + "\n")
    return result

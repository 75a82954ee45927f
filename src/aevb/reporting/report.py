"""A run directory as a Markdown report: key config, results, how to read them, and pictures.

Reads only files (``config.toml``, ``metrics.csv``, ``evaluation.json``,
``checkpoints/best.json`` and ``last.json``, ``*.png``), so it needs neither torch nor the
model; every file but the config may be missing and its section is then left out.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aevb.errors import CheckpointError
from aevb.files import atomic_write_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["read_rows", "write_report"]

RUN_ROWS = [
    ("data", "name", "dataset"),
    ("data", "binarize", "binarization"),
    ("train", "optimizer", "optimizer"),
    ("train", "lr", "learning rate"),
    ("train", "lr_schedule", "learning-rate schedule"),
    ("train", "batch_size", "minibatch size (M)"),
    ("train", "precision", "training matmul precision"),
]
"""(section, key, readable name) of the settings worth a line; [model] is printed whole."""

FIRST_FORMAT_METRIC_NAMES = {
    "elbo": ("ELBO", "nats"),
    "rec": ("E_q[log p(x|z)]", "nats"),
    "kl": ("KL(q(z|x) || p(z))", "nats"),
    "loss": ("loss (minimised)", ""),
    "rec_loss": ("reconstruction loss L(x, g(f(x)))", ""),
    "penalty": ("penalty (weighted)", ""),
    "phase_loss": ("loss of the current phase (minimised)", ""),
    "pretrain_layer": ("layer pretrained (0: fine-tuning)", ""),
}
"""Name and unit of the epoch metrics of runs whose best.json has no ``metric_names``."""

EVAL_NAMES = {
    "elbo_nats": ("ELBO", "nats"),
    "log_px_nats": ("log p(x), importance sampled", "nats"),
    "nll_nats": ("NLL = -log p(x)", "nats"),
    "rate_nats": ("rate: KL(q(z|x) || p(z))", "nats"),
    "distortion_nats": ("distortion: -E_q[log p(x|z)]", "nats"),
    "is_samples": ("importance samples per point (K)", ""),
    "points": ("points evaluated", ""),
    "recon_error_per_pixel": ("reconstruction error per pixel", ""),
    "recon_error_per_image": ("reconstruction error per image", ""),
    "active_units": ("active latent units", ""),
    "classification_error": ("classification error of q(y|x) (a fraction)", ""),
    "latent_dim": ("latent dimensions", ""),
    "seconds": ("evaluation time", "s"),
    "fd_classifier": ("FD of samples to test set (dataset classifier's features, not Inception)",
                      ""),
    "fd_test_vs_train": ("FD of real test to train set (same features; a reference)", ""),
    "sample_confidence": ("classifier's mean confidence on samples", ""),
    "quality_classifier_accuracy": ("quality classifier's test accuracy", ""),
    "quality_samples": ("samples judged by the quality classifier", ""),
}
"""Known ``evaluation.json`` keys: readable name and unit. Other numeric keys print as named."""

LAYER_EVAL_NAMES = [
    (re.compile(r"active_units_(\w+)"), "active units of layer {}", ""),
    (re.compile(r"rate_(\w+)_nats"), "rate of layer {}: its KL", "nats"),
]
"""Per-layer ``evaluation.json`` keys of hierarchical models, by pattern."""

PICTURES = {
    "reconstructions.png": "Test inputs (top) and the decoder means of their reconstructions "
    "(bottom).",
    "samples.png": "Decoder means at latent points drawn from the prior p(z).",
    "samples_by_class.png": "Decoder means at latent points drawn from the conditional prior "
    "p(z|c), one row per class c.",
    "analogies.png": "Analogies: each test input (first column) encoded with its own label, "
    "then decoded with every class in turn (one column per class): the code keeps the style.",
    "manifold_by_class.png": "The learned 2-D manifold of three classes side by side: decoder "
    "means of p(x|z,c) over Gaussian quantiles of z, c fixed per panel.",
    "curves.png": "Training and validation metrics per epoch.",
    "kl_layers.png": "The KL of each stochastic layer per epoch, training (solid) and"
    " validation (dashed): a layer whose curve falls to 0 has collapsed to its prior.",
    "latent.png": "Encoder means of test points, coloured by class (projected by PCA when the "
    "latent space has more than two dimensions).",
    "manifold.png": "Decoder means over a grid of Gaussian quantiles of the 2-D latent space "
    "(as in Kingma & Welling 2014, fig. 4).",
    "denoising.png": "Noisy test inputs, their denoised reconstructions and the clean images.",
    "kl_per_dimension.png": "The KL of each latent dimension on the test set: the rate, spread"
    " over the code (a dimension near 0 is inactive).",
    "layers.png": "What each layer holds: for each test input (first column), the layers above"
    " one layer kept at their posterior means and that layer and those below it redrawn from the"
    " model, one row per layer.",
}
"""Captions of the pictures other commands write, in the order the report shows them."""

MEANING = """\
- **ELBO** and **log p(x)** are in nats per example (natural log, summed over the pixels of
  one example, averaged over examples). Higher is better; both are at most 0 for discrete data.
- The ELBO is E_q[log p(x|z)] - KL(q(z|x) || p(z)), a lower bound on log p(x): the
  **distortion** -E_q[log p(x|z)] plus the **rate** KL(q(z|x) || p(z)) is -ELBO. log p(x) is
  estimated by importance sampling with K samples from q(z|x): in expectation a tighter bound
  that approaches log p(x) as K grows, so ELBO <= log p(x).
- **NLL** = -log p(x): lower is better. `±` is one standard error over the evaluated points.
- Training metrics are averaged over an epoch while the weights change; validation metrics are
  measured with the weights at the end of the epoch. The loss is what the optimizer minimises
  (for a VAE, -(E_q[log p(x|z)] - beta KL), with any warm-up or free bits); the ELBO reported
  is always the unweighted bound.
"""

AUTOENCODER_MEANING = """\
- A deterministic autoencoder has no likelihood, so there is no ELBO or log p(x); it is judged
  by its **reconstruction error** on the test split: the squared difference between a test
  image and its reconstruction g(f(x)) on the data's scale, averaged per pixel and summed per
  image (then averaged over images). Lower is better; PCA is the linear baseline.
- The **loss** is what the optimizer minimises: L(x, g(f(x))) per example (cross-entropy in
  nats for bce, squared error for mse) plus the model's weighted penalty; a denoising model
  encodes a corrupted x. Training metrics are averaged over an epoch while the weights change;
  validation metrics use the weights at the end of the epoch.
"""


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return data


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header (``metrics.csv``); none if it is missing."""
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _number(value: object) -> float | None:
    """A finite float from a CSV cell or JSON value; None for blanks, text, bools, nan."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _fmt(value: float, unit: str = "") -> str:
    """Nats to 2 decimals; whole numbers as integers; anything else to 4 significant digits."""
    if unit == "nats":
        return f"{value:.2f}"
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:.4g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return [line(header), line(["---"] * len(header)), *(line(row) for row in rows)]


def _flat(table: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in table.items():
        if isinstance(value, dict):
            rows += _flat(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def _text(value: Any) -> str:
    return ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)


def _changes_lines(changes: Any) -> list[str]:
    """The settings changed when the run was resumed (``changes`` of its checkpoints), as
    "lr 0.04 → 0.0001 at epoch 6"."""
    if not isinstance(changes, list) or not changes:
        return []
    lines = ["Changed when the run was resumed (the table shows the values now):", ""]
    for change in changes:
        if isinstance(change, dict):
            lines.append(f"- {change.get('key')} {_text(change.get('old'))} →"
                         f" {_text(change.get('new'))} at epoch {change.get('epoch')}")
    return [*lines, ""]


def _config_section(config: dict[str, Any], metrics: list[dict[str, str]],
                    best: dict[str, Any] | None = None, last: dict[str, Any] | None = None
    ) -> list[str]:
    rows, resolved = [], (best or {}).get("precision")
    for section, key, name in RUN_ROWS:
        value = config.get(section, {}).get(key)
        if key == "precision" and value == "auto" and resolved:
            value = f"auto ({resolved})"  # as the loop resolved it
        if value is not None:
            rows.append([name, _text(value)])
    run = _number(metrics[-1].get("epoch")) if metrics else None
    planned = config.get("train", {}).get("epochs")
    if run is not None or planned is not None:
        text = "-" if run is None else _fmt(run)
        if planned is not None:
            text += f" (configured: {planned})"
        rows.append(["epochs run", text])
    skipped = (last or best or {}).get("skipped_updates")
    if config.get("train", {}).get("grad_skip") is not None and skipped is not None:
        rows.append(["updates skipped (gradient norm above train.grad_skip or not finite)",
                     _fmt(skipped)])
    model = [[f"`{key}`", _text(value)] for key, value in _flat(config.get("model", {}))]
    return ["## Configuration", "", *_table(["setting", "value"], rows), "",
            *_changes_lines((last or best or {}).get("changes")),
            "The model, as `[model]` in `config.toml`:", "",
            *_table(["key", "value"], model), ""]


Names = dict[str, tuple[str, str]]


def _metric_names(best: dict[str, Any] | None) -> Names:
    described = (best or {}).get("metric_names")
    if isinstance(described, dict):
        return {k: (str(v[0]), str(v[1])) for k, v in described.items()}
    return FIRST_FORMAT_METRIC_NAMES


def _metric_label(metric: str, names: Names) -> str:
    name, unit = names.get(metric, (metric, ""))
    return f"{name} ({unit})" if unit else name


def _cell(raw: object, metric: str, names: Names) -> str:
    value = _number(raw)
    return "-" if value is None else _fmt(value, names.get(metric, ("", ""))[1])


def _training_section(metrics: list[dict[str, str]], best: dict[str, Any] | None,
                      checkpoint: dict[str, Any] | None = None) -> list[str]:
    lines = ["### Training", ""]
    names = _metric_names(best)
    if metrics:
        last = metrics[-1]
        facts = [f"Last epoch {last.get('epoch') or len(metrics)}"]
        if (step := _number(last.get("step"))) is not None:
            facts.append(f"step {_fmt(step)}")
        if (seconds := _number(last.get("seconds"))) is not None:
            facts.append(f"{seconds:.1f} s of training")
        peak = (checkpoint or best or {}).get("peak_memory") or {}
        for key, what in (("rss_bytes", "resident"), ("cuda_bytes", "CUDA")):
            if (size := _number(peak.get(key))) is not None:
                facts.append(f"peak {what} memory {size / 2**20:.0f} MiB")
        lines += [", ".join(facts) + ".", ""]
        logged = dict.fromkeys(k[6:] for k in last if k.startswith(("train_", "valid_")))
        rows = [[_metric_label(m, names), _cell(last.get(f"train_{m}"), m, names),
                 _cell(last.get(f"valid_{m}"), m, names)] for m in logged]
        lines += [*_table(["metric", "train", "valid"], rows), ""]
    epoch, chosen = _best(metrics, best)
    if epoch is not None:
        # The metric that chose the checkpoint (best.json says which); older runs: ELBO, loss.
        selection = (best or {}).get("selection") or []
        candidates = [*selection[:1], "elbo", "loss"]
        key = next((m for m in candidates if _number(chosen.get(f"valid_{m}")) is not None), "")
        value = _cell(chosen.get(f"valid_{key}"), key, names)
        detail = f": valid {_metric_label(key, names)} {value}" if key else ""
        lines += [f"Best validation epoch {epoch}{detail}.", ""]
    return lines


def _best(metrics: list[dict[str, str]], best: dict[str, Any] | None) -> tuple[Any, dict]:
    """Epoch and metrics of the checkpoint kept (best.json), else of the lowest valid loss."""
    if best is not None:
        return best.get("epoch"), best.get("metrics") or {}
    scored = [(v, row) for row in metrics if (v := _number(row.get("valid_loss"))) is not None]
    if not scored:
        return None, {}
    row = min(scored, key=lambda pair: pair[0])[1]
    return row.get("epoch"), row


def _eval_name(key: str) -> tuple[str, str]:
    """Readable name and unit of an ``evaluation.json`` key."""
    if key in EVAL_NAMES:
        return EVAL_NAMES[key]
    for pattern, name, unit in LAYER_EVAL_NAMES:
        if match := pattern.fullmatch(key):
            return name.format(match.group(1)), unit
    return key, "nats" if key.endswith("_nats") else ""


def _evaluation_section(evaluation: dict[str, Any]) -> list[str]:
    lines = ["### Evaluation", ""]
    split, points = evaluation.get("split"), _number(evaluation.get("points"))
    if split is not None:
        lines += [f"On the {split} split" + (f" ({_fmt(points)} points)." if points else "."), ""]
    rows = []
    for key, raw in evaluation.items():
        value = _number(raw)
        if value is None or key.endswith("_se"):
            continue
        name, unit = _eval_name(key)
        text = _fmt(value, unit)
        # elbo_nats pairs with elbo_se, log_px_nats with log_px_se
        se = _number(evaluation.get(f"{key.removesuffix('_nats')}_se",
                                    evaluation.get(f"{key}_se")))
        if se is not None:
            text += f" ± {_fmt(se, unit)}"
        rows.append([name, f"{text} {unit}".strip()])
    lines += [*_table(["quantity", "value"], rows), ""]
    per_dimension = evaluation.get("kl_per_dim_nats")
    if isinstance(per_dimension, dict):
        for name, values in per_dimension.items():
            numbers = [v for v in (_number(x) for x in values) if v is not None]
            lines += [f"KL of each dimension of {name} (nats, dimensions 1-{len(numbers)}): "
                      + ", ".join(f"{v:.2f}" for v in numbers) + ".", ""]
    return lines


def _layer_caption(name: str) -> str:
    if (match := re.fullmatch(r"latent_(\w+)\.png", name)) is None:
        return name
    return (f"Posterior means of layer {match.group(1)} for test points, coloured by class"
            " (projected by PCA when the layer has more than two dimensions).")


def _pictures_section(run_dir: Path) -> list[str]:
    present = {path.name for path in run_dir.glob("*.png") if path.is_file()}
    names = [name for name in PICTURES if name in present] + sorted(present - PICTURES.keys())
    if not names:
        return []
    lines = ["## Pictures", ""]
    for name in names:
        caption = PICTURES.get(name, _layer_caption(name))
        lines += [f"![{caption}]({quote(name)})", "", f"*{caption}*", ""]
    return lines


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.md`` from what the run directory holds and return its path
    (``config.toml`` is required, every other file reported when present)."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.toml"
    if not config_path.is_file():
        raise CheckpointError(f"{run_dir} is not a run directory: it has no config.toml")
    try:
        config = tomllib.loads(config_path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise CheckpointError(f"{config_path} is not valid TOML: {error}") from None
    metrics = read_rows(run_dir / "metrics.csv")
    evaluation = _read_json(run_dir / "evaluation.json")
    best = _read_json(run_dir / "checkpoints" / "best.json")
    last = _read_json(run_dir / "checkpoints" / "last.json")

    model = config.get("model", {}).get("name", "model")
    dataset = Path(str(config.get("data", {}).get("name", "data"))).name
    lines = [f"# Run `{run_dir.resolve().name}`: {model} on {dataset}", ""]
    # a model with a likelihood logs an ELBO; its numbers mean what MEANING says
    likelihood = (any("elbo" in key for row in metrics[:1] for key in row)
                  or "elbo_nats" in (evaluation or {}))
    lines += _config_section(config, metrics, best, last)
    results: list[str] = []
    if metrics or best is not None:
        results += _training_section(metrics, best, last)
    if evaluation is not None:
        results += _evaluation_section(evaluation)
    if results:
        meaning = MEANING if likelihood else AUTOENCODER_MEANING
        lines += ["## Results", "", *results, "## What the numbers mean", "", meaning]
    lines += _pictures_section(run_dir)
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return path

"""A run directory as a Markdown report: key config, results, how to read them, and pictures.

Reads only files (``config.toml``, ``metrics.csv``, ``evaluation.json``,
``checkpoints/best.json``, ``*.png``), so it needs neither torch nor the model; every file but
the config may be missing and its section is then left out.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .errors import CheckpointError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["write_report"]

CONFIG_ROWS = [
    ("data", "name", "dataset"),
    ("data", "binarize", "binarization"),
    ("model", "name", "model"),
    ("model", "latent_dim", "latent dimensions"),
    ("model", "hidden", "hidden layer sizes"),
    ("model", "likelihood", "likelihood p(x|z)"),
    ("model", "estimator", "SGVB estimator"),
    ("model", "samples", "z samples per datapoint (L)"),
    ("model", "beta", "KL weight (beta)"),
    ("model", "reconstruction", "reconstruction loss"),
    ("model", "noise", "input corruption"),
    ("model", "noise_level", "corruption level"),
    ("model", "sparsity", "sparsity penalty"),
    ("model", "sparsity_weight", "sparsity weight"),
    ("model", "sparsity_target", "target mean activation (rho)"),
    ("model", "contractive_weight", "contractive weight"),
    ("model", "pretrain_steps", "pretraining steps per layer"),
    ("model", "channels", "convolution channels"),
    ("train", "optimizer", "optimizer"),
    ("train", "lr", "learning rate"),
    ("train", "batch_size", "minibatch size (M)"),
    ("train", "precision", "training matmul precision"),
]
"""(section, key, readable name) of the config values worth a line in the summary."""

LIKELIHOOD_KEYS = {"likelihood", "estimator", "samples", "beta"}
"""Model keys that mean something only for a model with a likelihood (ELBO in its metrics)."""
AUTOENCODER_KEYS = {"reconstruction"}
"""Model keys that mean something only for a deterministic autoencoder."""
MODEL_KEYS = {
    "sparse-ae": {"sparsity", "sparsity_weight", "sparsity_target"},
    "contractive-ae": {"contractive_weight"},
    "stacked-ae": {"pretrain_steps"},
    "conv-ae": {"channels"},
}
"""Model keys read by one model only, shown for that model."""

METRIC_NAMES = {
    "elbo": ("ELBO", "nats"),
    "rec": ("E_q[log p(x|z)]", "nats"),
    "kl": ("KL(q(z|x) || p(z))", "nats"),
    "loss": ("loss (minimised)", ""),
    "rec_loss": ("reconstruction loss L(x, g(f(x)))", ""),
    "penalty": ("penalty (weighted)", ""),
    "phase_loss": ("loss of the current phase (minimised)", ""),
    "pretrain_layer": ("layer pretrained (0: fine-tuning)", ""),
}
"""Epoch metrics (``train_<m>``/``valid_<m>``): readable name and unit; nats are per example."""

EVAL_NAMES = {
    "elbo_nats": ("ELBO", "nats"),
    "log_px_nats": ("log p(x), importance sampled", "nats"),
    "nll_nats": ("NLL = -log p(x)", "nats"),
    "is_samples": ("importance samples per point (K)", ""),
    "points": ("points evaluated", ""),
    "recon_error_per_pixel": ("reconstruction error per pixel", ""),
    "recon_error_per_image": ("reconstruction error per image", ""),
    "active_units": ("active latent units", ""),
    "latent_dim": ("latent dimensions", ""),
    "seconds": ("evaluation time", "s"),
}
"""Known ``evaluation.json`` keys: readable name and unit. Other numeric keys print as named."""

PICTURES = {
    "reconstructions.png": "Test inputs (top) and the decoder means of their reconstructions "
    "(bottom).",
    "samples.png": "Decoder means at latent points drawn from the prior p(z).",
    "curves.png": "Training and validation metrics per epoch.",
    "latent.png": "Encoder means of test points, coloured by class (projected by PCA when the "
    "latent space has more than two dimensions).",
    "manifold.png": "Decoder means over a grid of Gaussian quantiles of the 2-D latent space "
    "(as in Kingma & Welling 2014, fig. 4).",
    "denoising.png": "Noisy test inputs, their denoised reconstructions and the clean images.",
}
"""Captions of the pictures other commands write, in the order the report shows them."""

MEANING = """\
- **ELBO** and **log p(x)** are in nats per example (natural log, summed over the pixels of
  one example, averaged over examples). Higher is better; both are at most 0 for discrete data.
- The ELBO is E_q[log p(x|z)] - KL(q(z|x) || p(z)), a lower bound on log p(x). log p(x) is
  estimated by importance sampling with K samples from q(z|x): in expectation a tighter bound
  that approaches log p(x) as K grows, so ELBO <= log p(x).
- **NLL** = -log p(x): lower is better. `±` is one standard error over the evaluated points.
- Training metrics are averaged over an epoch while the weights change; validation metrics are
  measured with the weights at the end of the epoch. The loss is what the optimizer minimises
  (for a VAE, -(E_q[log p(x|z)] - beta KL)).
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


def _read_metrics(path: Path) -> list[dict[str, str]]:
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
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return [line(header), line(["---"] * len(header)), *(line(row) for row in rows)]


def _shown_keys(config: dict[str, Any], likelihood: bool) -> set[str]:
    """The model keys that mean something for this run's model."""
    model = config.get("model", {})
    one_model = set().union(*MODEL_KEYS.values())
    shown = (set(model) - one_model) | MODEL_KEYS.get(model.get("name"), set())
    shown -= AUTOENCODER_KEYS if likelihood else LIKELIHOOD_KEYS
    if likelihood and model.get("noise") in (None, "auto", "none"):
        shown -= {"noise", "noise_level"}
    return shown


def _config_section(
    config: dict[str, Any],
    metrics: list[dict[str, str]],
    likelihood: bool = True,
    best: dict[str, Any] | None = None,
) -> list[str]:
    rows = []
    shown = _shown_keys(config, likelihood)
    for section, key, name in CONFIG_ROWS:
        if section == "model" and key not in shown:
            continue
        value = config.get(section, {}).get(key)
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        if key == "precision" and value == "auto" and (best or {}).get("precision"):
            value = f"auto ({best['precision']})"  # as the loop resolved it
        if value is not None:
            rows.append([name, str(value)])
    run = _number(metrics[-1].get("epoch")) if metrics else None
    planned = config.get("train", {}).get("epochs")
    if run is not None or planned is not None:
        text = "-" if run is None else _fmt(run)
        if planned is not None:
            text += f" (configured: {planned})"
        rows.append(["epochs run", text])
    return ["## Configuration", "", *_table(["setting", "value"], rows), ""]


def _metric_label(metric: str) -> str:
    name, unit = METRIC_NAMES.get(metric, (metric, ""))
    return f"{name} ({unit})" if unit else name


def _training_section(metrics: list[dict[str, str]], best: dict[str, Any] | None) -> list[str]:
    lines = ["### Training", ""]
    if metrics:
        last = metrics[-1]
        facts = [f"Last epoch {last.get('epoch') or len(metrics)}"]
        if (step := _number(last.get("step"))) is not None:
            facts.append(f"step {_fmt(step)}")
        if (seconds := _number(last.get("seconds"))) is not None:
            facts.append(f"{seconds:.1f} s of training")
        lines += [", ".join(facts) + ".", ""]
        names = dict.fromkeys(k[6:] for k in last if k.startswith(("train_", "valid_")))
        rows = [
            [_metric_label(m), _cell(last.get(f"train_{m}"), m), _cell(last.get(f"valid_{m}"), m)]
            for m in names
        ]
        lines += [*_table(["metric", "train", "valid"], rows), ""]
    epoch, chosen = _best(metrics, best)
    if epoch is not None:
        # The ELBO says most; an autoencoder has only its loss.
        key = next(
            (m for m in ("elbo", "loss") if _number(chosen.get(f"valid_{m}")) is not None), ""
        )
        detail = f": valid {_metric_label(key)} {_cell(chosen[f'valid_{key}'], key)}" if key else ""
        lines += [f"Best validation epoch {epoch}{detail}.", ""]
    return lines


def _phases_section(metrics: list[dict[str, str]]) -> list[str]:
    """For a run in phases (the stacked autoencoder): the epochs of each, and where it ended.

    An epoch belongs to the phase training was in at its end (``valid_pretrain_layer``).
    """
    spans: list[tuple[float, list[dict[str, str]]]] = []
    for row in metrics:
        layer = _number(row.get("valid_pretrain_layer"))
        if layer is None:
            continue
        if spans and spans[-1][0] == layer:
            spans[-1][1].append(row)
        else:
            spans.append((layer, [row]))
    if not spans:
        return []
    rows = []
    for layer, rows_of_phase in spans:
        name = f"pretraining layer {_fmt(layer)}" if layer else "fine-tuning the whole stack"
        first, last = rows_of_phase[0].get("epoch", "?"), rows_of_phase[-1].get("epoch", "?")
        epochs = first if first == last else f"{first}-{last}"
        end = rows_of_phase[-1]
        rows.append([name, epochs, _cell(end.get("valid_phase_loss"), "phase_loss"),
                     _cell(end.get("valid_loss"), "loss")])
    header = ["phase", "epochs", "valid phase loss (at its end)", "valid loss of the stack"]
    note = ("While a layer is pretrained, the optimizer minimises that layer's own loss; the"
            " loss of the whole stack is what picks the best checkpoint in every phase.")
    return ["#### Phases", "", note, "", *_table(header, rows), ""]


def _cell(raw: object, metric: str) -> str:
    value = _number(raw)
    return "-" if value is None else _fmt(value, METRIC_NAMES.get(metric, ("", ""))[1])


def _best(metrics: list[dict[str, str]], best: dict[str, Any] | None) -> tuple[Any, dict]:
    """Epoch and metrics of the checkpoint kept (best.json), else of the lowest valid loss."""
    if best is not None:
        return best.get("epoch"), best.get("metrics") or {}
    scored = [(v, row) for row in metrics if (v := _number(row.get("valid_loss"))) is not None]
    if not scored:
        return None, {}
    row = min(scored, key=lambda pair: pair[0])[1]
    return row.get("epoch"), row


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
        name, unit = EVAL_NAMES.get(key, (key, "nats" if key.endswith("_nats") else ""))
        text = _fmt(value, unit)
        # elbo_nats pairs with elbo_se, log_px_nats with log_px_se.
        stem = key.removesuffix("_nats")
        se = _number(evaluation.get(f"{stem}_se", evaluation.get(f"{key}_se")))
        if se is not None:
            text += f" ± {_fmt(se, unit)}"
        rows.append([name, f"{text} {unit}".strip()])
    lines += [*_table(["quantity", "value"], rows), ""]
    return lines


def _pictures_section(run_dir: Path) -> list[str]:
    present = {path.name for path in run_dir.glob("*.png") if path.is_file()}
    names = [name for name in PICTURES if name in present] + sorted(present - PICTURES.keys())
    if not names:
        return []
    lines = ["## Pictures", ""]
    for name in names:
        caption = PICTURES.get(name, name)
        lines += [f"![{caption}]({quote(name)})", "", f"*{caption}*", ""]
    return lines


def _write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file beside ``path`` and rename it over: readers never see half."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.md`` from what the run directory holds and return its path.

    ``config.toml`` is required; ``metrics.csv``, ``evaluation.json``,
    ``checkpoints/best.json`` and the pictures (``*.png``) are each reported when present.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.toml"
    if not config_path.is_file():
        raise CheckpointError(f"{run_dir} is not a run directory: it has no config.toml")
    try:
        config = tomllib.loads(config_path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise CheckpointError(f"{config_path} is not valid TOML: {error}") from None
    metrics = _read_metrics(run_dir / "metrics.csv")
    evaluation = _read_json(run_dir / "evaluation.json")
    best = _read_json(run_dir / "checkpoints" / "best.json")

    model = config.get("model", {}).get("name", "model")
    dataset = Path(str(config.get("data", {}).get("name", "data"))).name
    lines = [f"# Run `{run_dir.resolve().name}`: {model} on {dataset}", ""]
    # Without metrics or evaluation there is no telling; show the VAE's keys, as before.
    likelihood = any("elbo" in key for row in metrics[:1] for key in row) or (
        "elbo_nats" in (evaluation or {}) or not (metrics or evaluation)
    )
    lines += _config_section(config, metrics, likelihood, best)
    results: list[str] = []
    if metrics or best is not None:
        results += _training_section(metrics, best)
        results += _phases_section(metrics)
    if evaluation is not None:
        results += _evaluation_section(evaluation)
    if results:
        meaning = MEANING if likelihood else AUTOENCODER_MEANING
        lines += ["## Results", "", *results, "## What the numbers mean", "", meaning]
    lines += _pictures_section(run_dir)

    path = run_dir / "report.md"
    _write_atomic(path, "\n".join(lines).rstrip() + "\n")
    return path

"""Charts of numbers: training curves, curve panels, bar charts, the rate-distortion plane."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from aevb.reporting.plots import DPI, _save
from aevb.reporting.report import _number

__all__ = ["bar_chart", "curve_panels", "rate_distortion", "training_curves"]


def _subplots(count: int, width: float, height: float) -> tuple[Figure, np.ndarray]:
    """Up to three subplots a row of ``width`` x ``height`` inches each, the unused ones off."""
    ncols = min(3, max(1, count))
    nrows = max(1, math.ceil(count / ncols))
    fig = Figure(figsize=(width * ncols, height * nrows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[count:]:
        ax.set_axis_off()
    return fig, axes


def curve_panels(panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
                 path: str | Path, xlabel: str, ylabel: str, log_x: bool = True,
                 title: str | None = None) -> Path:
    """One subplot per panel, each with named curves ``label -> (xs, ys)``; a label ending in
    "(test)" or "(valid)" is drawn dashed in the colour of the same label's "(train)" curve,
    so a method's train and held-out curves read as a pair. Empty panels say so."""
    if not panels:
        raise ValueError("curve_panels needs at least one panel")
    fig, axes = _subplots(len(panels), 4.2, 3.4)
    for ax, (name, curves) in zip(axes, panels.items(), strict=False):
        colours: dict[str, Any] = {}
        for label, (xs, ys) in curves.items():
            method, _, split = label.rpartition(" (")
            held_out = split in ("test)", "valid)")
            line, = ax.plot(xs, ys, marker=".", label=label, linestyle="--" if held_out else "-",
                            color=colours.get(method))
            colours.setdefault(method, line.get_color())
        if not curves:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if curves:
            ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def training_curves(history: Sequence[Mapping[str, object]], path: str | Path,
                    names: Mapping[str, tuple[str, str]] | None = None) -> Path:
    """One subplot per metric ``m``, with its ``train_m``, ``valid_m`` and (where recorded)
    ``test_m`` columns against epoch.

    ``history`` holds one row per epoch (as in ``metrics.csv``; values may be strings).
    Missing or non-numeric values are skipped; a row without ``epoch`` counts as its position
    (1-based). ``names`` gives a metric's readable name and unit for its y axis.
    """
    series: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for index, row in enumerate(history):
        epoch = _number(row.get("epoch"))
        epoch = index + 1 if epoch is None else epoch
        for key, raw in row.items():
            split, _, metric = key.partition("_")
            value = _number(raw)
            if (split not in ("train", "valid", "test") or metric in ("", "epoch", "step", "seconds")
                    or value is None):
                continue
            xs, ys = series.setdefault(metric, {}).setdefault(split, ([], []))
            xs.append(epoch)
            ys.append(value)
    fig, axes = _subplots(len(series), 4.2, 3.2)
    if not series:
        axes[0].text(0.5, 0.5, "no metrics recorded", ha="center", va="center")
    for ax, (metric, splits) in zip(axes, series.items(), strict=False):
        for split in ("train", "valid", "test"):
            if split in splits:
                xs, ys = splits[split]
                ax.plot(xs, ys, marker=".", label=split)
        name, unit = (names or {}).get(metric, (metric, ""))
        label = (f"{name} ({unit} per example)" if unit == "nats" else
                 f"{name} ({unit})" if unit else name)
        ax.set_ylabel(textwrap.fill(label, 40))  # a long name on two lines, not over its neighbour
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def bar_chart(groups: Mapping[str, Sequence[float]], path: str | Path, ylabel: str,
              title: str | None = None) -> Path:
    """One small bar chart per named group of values (e.g. the KL of each latent dimension of
    each latent layer), bars numbered from 1, side by side."""
    if not groups:
        raise ValueError("bar_chart needs at least one group")
    widths = [max(2.0, 0.25 * len(values) + 1.0) for values in groups.values()]
    fig = Figure(figsize=(min(16.0, sum(widths)), 2.8), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(groups), squeeze=False, width_ratios=widths).ravel()
    for ax, (name, values) in zip(axes, groups.items(), strict=True):
        positions = np.arange(1, len(values) + 1)
        ax.bar(positions, np.asarray(values, dtype=float), color="tab:blue")
        ax.set_xlabel(f"dimension of {name}")
        ax.set_ylabel(ylabel)
        if len(values) <= 30:
            ax.set_xticks(positions)
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def rate_distortion(rates: Sequence[float], distortions: Sequence[float], labels: Sequence[str],
                    path: str | Path, squared_errors: Sequence[float] | None = None,
                    title: str | None = None) -> Path:
    """The rate-distortion plane (Alemi et al. 2018): one labelled point per run at
    (rate, distortion) in nats, joined in order of rate, over faint lines of equal ELBO.

    rate = E_x KL(q(z|x) || p(z)) and distortion = -E_x E_q[log p(x|z)], so a line
    rate + distortion = c holds every model with ELBO -c; a few such c spanning the points are
    drawn. With ``squared_errors`` (squared error per image of each run) a second panel shows
    them against rate.
    """
    x = np.asarray(rates, dtype=np.float64)
    y = np.asarray(distortions, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or len(labels) != len(x) or len(x) == 0:
        raise ValueError("rate_distortion needs as many rates, distortions and labels (>= 1);"
                         f" got {x.shape}, {y.shape}, {len(labels)}")
    panels = 1 if squared_errors is None else 2
    fig = Figure(figsize=(5.5 * panels, 4.5), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False).ravel()
    order = np.argsort(x)
    ax = axes[0]
    ax.plot(x[order], y[order], color="tab:blue", marker="o", zorder=3)
    for rate, distortion, label in zip(x, y, labels, strict=True):
        ax.annotate(label, (rate, distortion), xytext=(4, 4), textcoords="offset points")
    ax.margins(0.15)
    ax.autoscale_view()
    (left, right), (bottom, top) = ax.get_xlim(), ax.get_ylim()
    # c = -ELBO: round values between the points' smallest and largest, at least two lines
    totals = x + y
    levels = MaxNLocator(nbins=4).tick_values(totals.min(), totals.max())
    span = np.array([left, right])
    for c in levels:
        ax.plot(span, c - span, color="grey", alpha=0.35, linewidth=0.8, zorder=1)
        if bottom <= c - right <= top:  # name the line at the right edge where it shows
            ax.annotate(f"ELBO = {-c:g}", (right, c - right), xytext=(-2, 2),
                        textcoords="offset points", ha="right", fontsize="x-small",
                        color="grey")
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_xlabel("rate: KL(q(z|x) || p(z)) (nats per example)")
    ax.set_ylabel("distortion: -E_q[log p(x|z)] (nats per example)")
    ax.grid(alpha=0.2)
    if squared_errors is not None:
        errors = np.asarray(squared_errors, dtype=np.float64)
        if errors.shape != x.shape:
            raise ValueError(f"squared_errors must be {x.shape} like rates; got {errors.shape}")
        axes[1].plot(x[order], errors[order], color="tab:orange", marker="o")
        for rate, error, label in zip(x, errors, labels, strict=True):
            axes[1].annotate(label, (rate, error), xytext=(4, 4), textcoords="offset points")
        axes[1].margins(0.15)
        axes[1].set_xlabel("rate (nats per example)")
        axes[1].set_ylabel("squared error per image")
        axes[1].grid(alpha=0.2)
    if title:
        fig.suptitle(title)
    return _save(fig, path)

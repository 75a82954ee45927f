"""Figures for a run: image grids, training curves, latent scatters and the 2-D manifold.

Everything here takes numpy arrays and knows nothing of torch or of models. Figures are built
with matplotlib's object API on the Agg canvas, not pyplot, so plotting works headless, never
changes the caller's backend and leaves no open figure behind. Each function writes one PNG and
returns its path.

Images are floats in [0, 1] (values outside are clipped), shaped (N, H, W) for grey or
(N, C, H, W) with C in {1, 3}.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "bar_chart",
    "comparison_grid",
    "curve_panels",
    "image_grid",
    "image_panels",
    "is_image_shape",
    "latent_scatter",
    "manifold_grid",
    "manifold_panels",
    "manifold_quantiles",
    "rate_distortion",
    "training_curves",
]

DPI = 100
TARGET_PX = 600
"""Image grids are zoomed by a whole factor until their longer side nears this many pixels."""
MAX_ZOOM = 8
BAND_COLUMNS = 12
"""comparison_grid wraps rows longer than this into several bands."""
FILL = 1.0
"""Value of the 1-pixel separators and of blank tiles: white, which parts dark MNIST tiles."""
SKIPPED_COLUMNS = {"epoch", "step", "seconds"}


# ---------------------------------------------------------------------------------------------
# helpers


def is_image_shape(event_shape: Sequence[int]) -> bool:
    """Whether examples of ``event_shape`` can be drawn as pictures: (H, W) or (C, H, W) with
    C in {1, 3}."""
    return len(event_shape) == 2 or (len(event_shape) == 3 and event_shape[0] in (1, 3))


def _as_nhwc(images: np.ndarray) -> np.ndarray:
    """(N, H, W) or (N, C, H, W) with C in {1, 3} -> float (N, H, W, C), clipped to [0, 1]."""
    images = np.asarray(images, dtype=np.float64)
    if not is_image_shape(images.shape[1:]):
        raise ValueError(
            f"images must be (N, H, W) or (N, C, H, W) with C in {{1, 3}}; got {images.shape}"
        )
    if images.ndim == 3:
        images = images[:, None]
    return np.clip(images, 0.0, 1.0).transpose(0, 2, 3, 1)


def _tile(images: np.ndarray, pad: int = 1) -> np.ndarray:
    """(R, K, H, W, C) -> one (R(H+pad)-pad, K(W+pad)-pad, C) picture, tiles ``pad`` px apart."""
    rows, cols, h, w, c = images.shape
    out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, c), FILL)
    for i in range(rows):
        for j in range(cols):
            out[i * (h + pad) : i * (h + pad) + h, j * (w + pad) : j * (w + pad) + w] = images[i, j]
    return out


def _picture_figure(picture: np.ndarray) -> tuple[Figure, Axes]:
    """A figure whose one axes shows ``picture`` (H, W, C) at a whole-number zoom."""
    height, width = picture.shape[:2]
    zoom = max(1, min(MAX_ZOOM, TARGET_PX // max(height, width)))
    fig = Figure(figsize=(width * zoom / DPI, height * zoom / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    grey = picture.shape[2] == 1
    ax.imshow(
        picture[..., 0] if grey else picture,
        cmap="gray" if grey else None,
        vmin=0.0,
        vmax=1.0,
        interpolation="nearest",
    )
    return fig, ax


def _hide_frame(ax: Axes) -> None:
    """No spines and no tick marks, but keep any tick labels (used as row/axis labels)."""
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.tick_params(length=0)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A tight box takes in labels and titles drawn outside the picture axes.
    fig.savefig(path, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.05)
    return path


def _number(value: object) -> float | None:
    """``value`` as a finite float, or None for missing, non-numeric or non-finite values."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# ---------------------------------------------------------------------------------------------
# image grids


def image_grid(
    images: np.ndarray, path: str | Path, ncols: int | None = None, title: str | None = None
) -> Path:
    """Tile N images (e.g. decoder means at samples from the prior) into one PNG.

    ``ncols`` defaults to ceil(sqrt(N)); the last row is padded with blank tiles.
    """
    x = _as_nhwc(images)
    n = len(x)
    if n == 0:
        raise ValueError("image_grid needs at least one image")
    ncols = min(n, ncols or math.ceil(math.sqrt(n)))
    nrows = math.ceil(n / ncols)
    blank = np.full((nrows * ncols - n, *x.shape[1:]), FILL)
    grid = np.concatenate([x, blank]).reshape(nrows, ncols, *x.shape[1:])
    fig, ax = _picture_figure(_tile(grid))
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return _save(fig, path)


def comparison_grid(
    rows: Mapping[str, np.ndarray], path: str | Path, title: str | None = None
) -> Path:
    """Aligned rows of N images each, labelled at the left, e.g. inputs above reconstructions.

    ``rows`` maps a label to images (N, H, W) or (N, C, H, W); every row needs the same shape.
    Rows longer than 12 images wrap into several equal bands, each band holding one slice of
    every row, so the images of one column stay next to each other.
    """
    if not rows:
        raise ValueError("comparison_grid needs at least one row")
    labels = list(rows)
    stacked = [_as_nhwc(rows[label]) for label in labels]
    if any(s.shape != stacked[0].shape for s in stacked):
        shapes = {label: np.shape(rows[label]) for label in labels}
        raise ValueError(f"comparison_grid rows must share one shape; got {shapes}")
    x = np.stack(stacked)  # (R, N, H, W, C)
    n_rows, n, h, w, c = x.shape
    if n == 0:
        raise ValueError("comparison_grid needs at least one image per row")
    n_bands = math.ceil(n / BAND_COLUMNS)
    ncols = math.ceil(n / n_bands)  # balanced bands, not one full band and a short remainder
    blank = np.full((n_rows, n_bands * ncols - n, h, w, c), FILL)
    x = np.concatenate([x, blank], axis=1)

    gap = np.full((max(2, h // 4), ncols * (w + 1) - 1, c), FILL)
    parts: list[np.ndarray] = []
    centres: list[float] = []  # y of each labelled row, in picture pixels
    top = 0
    for b in range(n_bands):
        if b:
            parts.append(gap)
            top += len(gap)
        parts.append(_tile(x[:, b * ncols : (b + 1) * ncols]))
        centres += [top + i * (h + 1) + (h - 1) / 2 for i in range(n_rows)]
        top += len(parts[-1])
    fig, ax = _picture_figure(np.concatenate(parts))
    _hide_frame(ax)
    ax.set_xticks([])
    ax.set_yticks(centres, labels * n_bands)
    if title:
        ax.set_title(title)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# training curves


def image_panels(
    panels: Mapping[str, np.ndarray], path: str | Path, ncols: int | None = None,
    title: str | None = None,
) -> Path:
    """Several titled image grids side by side (e.g. samples of models with 2, 5, 10 and 20
    latent dimensions), each tiled as in ``image_grid`` with ``ncols`` columns."""
    if not panels:
        raise ValueError("image_panels needs at least one panel")
    pictures = []
    for name, images in panels.items():
        x = _as_nhwc(images)
        if len(x) == 0:
            raise ValueError(f"panel {name!r} has no images")
        cols = min(len(x), ncols or math.ceil(math.sqrt(len(x))))
        rows = math.ceil(len(x) / cols)
        blank = np.full((rows * cols - len(x), *x.shape[1:]), FILL)
        pictures.append(_tile(np.concatenate([x, blank]).reshape(rows, cols, *x.shape[1:])))
    height = max(p.shape[0] for p in pictures)
    width = max(p.shape[1] for p in pictures)
    zoom = max(1, min(MAX_ZOOM, TARGET_PX // max(height, width)))
    fig = Figure(figsize=(len(panels) * width * zoom / DPI, height * zoom / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, name, picture in zip(axes, panels, pictures, strict=True):
        grey = picture.shape[2] == 1
        ax.imshow(picture[..., 0] if grey else picture, cmap="gray" if grey else None,
                  vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(name)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def curve_panels(
    panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
    path: str | Path,
    xlabel: str,
    ylabel: str,
    log_x: bool = True,
    title: str | None = None,
) -> Path:
    """One subplot per panel, each with named curves ``label -> (xs, ys)``; a label ending in
    "(test)" or "(valid)" is drawn dashed in the colour of the same label's "(train)" curve,
    so a method's train and held-out curves read as a pair. Empty panels say so."""
    if not panels:
        raise ValueError("curve_panels needs at least one panel")
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.set_axis_off()
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


def training_curves(
    history: Sequence[Mapping[str, object]],
    path: str | Path,
    names: Mapping[str, tuple[str, str]] | None = None,
) -> Path:
    """One subplot per metric ``m``, with its ``train_m`` and ``valid_m`` columns against epoch.

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
            if split not in ("train", "valid") or not metric or metric in SKIPPED_COLUMNS:
                continue
            if value is None:
                continue
            xs, ys = series.setdefault(metric, {}).setdefault(split, ([], []))
            xs.append(epoch)
            ys.append(value)

    ncols = min(3, max(1, len(series)))
    nrows = max(1, math.ceil(len(series) / ncols))
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(series) :]:
        ax.set_axis_off()
    if not series:
        axes[0].text(0.5, 0.5, "no metrics recorded", ha="center", va="center")
    for ax, (metric, splits) in zip(axes, series.items(), strict=False):
        for split in ("train", "valid"):
            if split in splits:
                xs, ys = splits[split]
                ax.plot(xs, ys, marker=".", label=split)
        name, unit = (names or {}).get(metric, (metric, ""))
        ax.set_ylabel(f"{name} ({unit} per example)" if unit == "nats" else
                      f"{name} ({unit})" if unit else name)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def bar_chart(
    groups: Mapping[str, Sequence[float]], path: str | Path, ylabel: str, title: str | None = None
) -> Path:
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


# ---------------------------------------------------------------------------------------------
# latent space


def latent_scatter(
    z: np.ndarray, labels: np.ndarray | None, path: str | Path, title: str | None = None
) -> Path:
    """Encoder means z (N, D), coloured by integer class ``labels`` (N,) or in one colour.

    D = 1 gives a histogram per class; D = 2 a scatter of (z1, z2); D > 2 a scatter of the
    first two principal components of the centred z (numpy SVD), whose axis labels give the
    percent of variance each explains. Points are small and translucent so 10k stay readable.
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim == 1:
        z = z[:, None]
    if z.ndim != 2 or z.shape[1] == 0:
        raise ValueError(f"z must be (N, D) with D >= 1; got {z.shape}")
    if labels is not None:
        labels = np.asarray(labels).astype(int).ravel()
        if labels.shape != (len(z),):
            raise ValueError(f"labels must be ({len(z)},) to match z; got {labels.shape}")
    d = z.shape[1]
    xlabel, ylabel = "z1", "z2"
    if d > 2:
        z, share = _pca2(z)
        xlabel = f"PC1 of z ({share[0]:.1f}% of variance)"
        ylabel = f"PC2 of z ({share[1]:.1f}% of variance)"
        title = title or f"encoder means, PCA of {d}-D latent space"

    fig = Figure(figsize=(6, 5), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    style: dict[str, Any] = {"s": 3, "alpha": 0.5, "linewidths": 0, "rasterized": True}
    classes = [] if labels is None else [int(k) for k in np.unique(labels)]
    # Past 20 classes a discrete palette repeats colours: fall back to a colour scale.
    discrete = len(classes) <= 20
    palette = colormaps["tab10" if len(classes) <= 10 else "tab20"]
    if d == 1:
        bins = np.histogram_bin_edges(z[:, 0], bins=50).tolist()
        if labels is None or not discrete:
            ax.hist(z[:, 0], bins=bins, histtype="step")
        else:
            for i, k in enumerate(classes):
                ax.hist(
                    z[labels == k, 0], bins=bins, histtype="step", color=palette(i), label=str(k)
                )
        ylabel = "count"
    elif labels is None:
        ax.scatter(z[:, 0], z[:, 1], **style)
    elif not discrete:
        points = ax.scatter(z[:, 0], z[:, 1], c=labels, cmap="viridis", **style)
        fig.colorbar(points, ax=ax, label="label")
    else:
        for i, k in enumerate(classes):
            mask = labels == k
            ax.scatter(z[mask, 0], z[mask, 1], color=palette(i), label=str(k), **style)
    if classes and discrete:
        legend = ax.legend(title="label", markerscale=4, fontsize="small")
        for handle in legend.legend_handles:
            if handle is not None:
                handle.set_alpha(1.0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def _pca2(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project z (N, D) on its first two principal axes: (N, 2) and the percent of variance each
    explains (2,). Uses the SVD of the centred z, so no covariance matrix is formed."""
    centred = z - z.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    share = 100 * s**2 / max(float(np.sum(s**2)), np.finfo(float).tiny)
    # Zero-pad so that fewer than two points or components still give a 2-D picture.
    k = min(2, len(vt))
    return np.pad(centred @ vt[:k].T, ((0, 0), (0, 2 - k))), np.pad(share[:k], (0, 2 - k))


def manifold_quantiles(n: int, eps: float = 0.05) -> np.ndarray:
    """The n values Phi^{-1}(p), p evenly spaced in [eps, 1 - eps]: a grid over N(0, 1) (n,).

    Equal steps in p put equal prior mass between neighbours (Kingma & Welling 2014, fig. 4).
    """
    if n < 1 or not 0 < eps < 0.5:
        raise ValueError(f"need n >= 1 and 0 < eps < 0.5; got n={n}, eps={eps}")
    probs = np.linspace(eps, 1 - eps, n) if n > 1 else np.array([0.5])
    inv_cdf = NormalDist().inv_cdf
    return np.array([inv_cdf(float(p)) for p in probs])


def _tick(value: float) -> str:
    # Adding 0.0 turns the -0.0 that rounding leaves near the middle quantile into 0.0.
    return f"{round(float(value), 2) + 0.0:.2f}"


def manifold_grid(
    images: np.ndarray, z_grid: np.ndarray, path: str | Path, title: str | None = None
) -> Path:
    """The learned 2-D manifold: decoder means over a grid of latent points, as one picture.

    ``images`` is (n, n, C, H, W) or (n, n, H, W) with ``images[i, j]`` decoded at
    z = (z_grid[j], z_grid[i]) (``np.meshgrid(z_grid, z_grid)`` order), and ``z_grid`` (n,) is
    increasing, e.g. ``manifold_quantiles(n)``. Rows are drawn flipped so z2 grows upwards and
    the picture reads like a plot: z1 left to right, z2 bottom to top.
    """
    images = np.asarray(images)
    z_grid = np.asarray(z_grid, dtype=np.float64).ravel()
    n = len(z_grid)
    if images.ndim not in (4, 5) or images.shape[:2] != (n, n):
        raise ValueError(
            f"images must be (n, n, H, W) or (n, n, C, H, W) with n = len(z_grid) = {n};"
            f" got {images.shape}"
        )
    x = _as_nhwc(images.reshape(n * n, *images.shape[2:]))
    grid = x.reshape(n, n, *x.shape[1:])[::-1]
    h, w = grid.shape[2:4]
    fig, ax = _picture_figure(_tile(grid))
    _hide_frame(ax)
    # Label about five evenly spread grid points per axis; more would crowd at large n.
    ticks = np.unique(np.linspace(0, n - 1, min(n, 5)).round().astype(int))
    ax.set_xticks([j * (w + 1) + (w - 1) / 2 for j in ticks], [_tick(z_grid[j]) for j in ticks])
    ax.set_yticks(
        [i * (h + 1) + (h - 1) / 2 for i in ticks], [_tick(z_grid[n - 1 - i]) for i in ticks]
    )
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def manifold_panels(
    panels: Mapping[str, np.ndarray], z_grid: np.ndarray, path: str | Path,
    title: str | None = None,
) -> Path:
    """Several learned 2-D manifolds side by side, one per titled panel (e.g. one per class of
    a conditional model), each laid out as in ``manifold_grid``: ``panels[name]`` is
    (n, n, H, W) or (n, n, C, H, W), decoded at z = (z_grid[j], z_grid[i]), z2 upwards."""
    if not panels:
        raise ValueError("manifold_panels needs at least one panel")
    z_grid = np.asarray(z_grid, dtype=np.float64).ravel()
    n = len(z_grid)
    pictures = []
    for name, images in panels.items():
        images = np.asarray(images)
        if images.ndim not in (4, 5) or images.shape[:2] != (n, n):
            raise ValueError(f"panel {name!r} must be (n, n, H, W) or (n, n, C, H, W) with"
                             f" n = len(z_grid) = {n}; got {images.shape}")
        x = _as_nhwc(images.reshape(n * n, *images.shape[2:]))
        pictures.append(_tile(x.reshape(n, n, *x.shape[1:])[::-1]))
    height, width = pictures[0].shape[:2]
    zoom = max(1, min(MAX_ZOOM, TARGET_PX // max(height, width)))
    fig = Figure(figsize=(len(panels) * width * zoom / DPI, height * zoom / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    h, w = next(iter(panels.values())).shape[-2:]
    ticks = np.unique(np.linspace(0, n - 1, min(n, 5)).round().astype(int))
    for ax, name, picture in zip(axes, panels, pictures, strict=True):
        grey = picture.shape[2] == 1
        ax.imshow(picture[..., 0] if grey else picture, cmap="gray" if grey else None,
                  vmin=0.0, vmax=1.0, interpolation="nearest")
        _hide_frame(ax)
        ax.set_xticks([j * (w + 1) + (w - 1) / 2 for j in ticks],
                      [_tick(z_grid[j]) for j in ticks])
        ax.set_yticks([i * (h + 1) + (h - 1) / 2 for i in ticks],
                      [_tick(z_grid[n - 1 - i]) for i in ticks])
        ax.set_xlabel("z1")
        ax.set_title(name)
    axes[0].set_ylabel("z2")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# rate and distortion


def rate_distortion(
    rates: Sequence[float],
    distortions: Sequence[float],
    labels: Sequence[str],
    path: str | Path,
    squared_errors: Sequence[float] | None = None,
    title: str | None = None,
) -> Path:
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

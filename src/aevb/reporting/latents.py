"""The latent space: scatters of the codes and the decoder's 2-D manifold (the paper's Fig. 4)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from aevb.reporting.plots import (
    DPI,
    _as_nhwc,
    _hide_frame,
    _panels_figure,
    _picture_figure,
    _save,
    _tile,
)

__all__ = ["latent_scatter", "manifold_grid", "manifold_panels", "manifold_quantiles"]


def latent_scatter(z: np.ndarray, labels: np.ndarray | None, path: str | Path,
                   title: str | None = None) -> Path:
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
                ax.hist(z[labels == k, 0], bins=bins, histtype="step", color=palette(i),
                        label=str(k))
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


def _manifold_picture(images: np.ndarray, n: int, what: str) -> np.ndarray:
    """(n, n, [C,] H, W) decoder means, ``images[i, j]`` at z = (z_grid[j], z_grid[i]), as one
    tiled picture with its rows flipped: z1 left to right, z2 bottom to top, as in a plot."""
    images = np.asarray(images)
    if images.ndim not in (4, 5) or images.shape[:2] != (n, n):
        raise ValueError(f"{what} must be (n, n, H, W) or (n, n, C, H, W) with"
                         f" n = len(z_grid) = {n}; got {images.shape}")
    x = _as_nhwc(images.reshape(n * n, *images.shape[2:]))
    return _tile(x.reshape(n, n, *x.shape[1:])[::-1])


def _manifold_ticks(ax: Any, z_grid: np.ndarray, h: int, w: int) -> None:
    """About five z values labelled per axis (more would crowd at large n); no frame."""
    n = len(z_grid)
    ticks = np.unique(np.linspace(0, n - 1, min(n, 5)).round().astype(int))

    def tick(value: float) -> str:  # + 0.0 turns the -0.0 rounding leaves into 0.0
        return f"{round(float(value), 2) + 0.0:.2f}"

    _hide_frame(ax)
    ax.set_xticks([j * (w + 1) + (w - 1) / 2 for j in ticks], [tick(z_grid[j]) for j in ticks])
    ax.set_yticks([i * (h + 1) + (h - 1) / 2 for i in ticks],
                  [tick(z_grid[n - 1 - i]) for i in ticks])
    ax.set_xlabel("z1")


def manifold_grid(images: np.ndarray, z_grid: np.ndarray, path: str | Path, title: str | None = None
    ) -> Path:
    """The learned 2-D manifold: decoder means over a grid of latent points, as one picture.

    ``images`` is (n, n, C, H, W) or (n, n, H, W) with ``images[i, j]`` decoded at
    z = (z_grid[j], z_grid[i]) (``np.meshgrid(z_grid, z_grid)`` order), and ``z_grid`` (n,) is
    increasing, e.g. ``manifold_quantiles(n)``; z2 grows upwards.
    """
    z_grid = np.asarray(z_grid, dtype=np.float64).ravel()
    images = np.asarray(images)
    fig, ax = _picture_figure(_manifold_picture(images, len(z_grid), "images"))
    _manifold_ticks(ax, z_grid, *images.shape[-2:])
    ax.set_ylabel("z2")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def manifold_panels(panels: Mapping[str, np.ndarray], z_grid: np.ndarray, path: str | Path,
                    title: str | None = None) -> Path:
    """Several learned 2-D manifolds side by side, one per titled panel (e.g. one per class of
    a conditional model), each laid out as in ``manifold_grid``."""
    if not panels:
        raise ValueError("manifold_panels needs at least one panel")
    z_grid = np.asarray(z_grid, dtype=np.float64).ravel()
    pictures = [_manifold_picture(images, len(z_grid), f"panel {name!r}")
                for name, images in panels.items()]
    fig, axes = _panels_figure(pictures, list(panels), title)
    h, w = np.shape(next(iter(panels.values())))[-2:]
    for ax in axes:
        _manifold_ticks(ax, z_grid, h, w)
    axes[0].set_ylabel("z2")
    return _save(fig, path)

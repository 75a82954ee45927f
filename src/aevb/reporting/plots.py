"""Image grids, and the helpers of ``charts`` and ``latents``: numpy in (no torch, no models),
one PNG out, its path returned. matplotlib's object API on the Agg canvas, not pyplot: headless,
the caller's backend untouched, no open figure left. Images are floats in [0, 1] (clipped),
(N, H, W) grey or (N, C, H, W) with C in {1, 3}.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["comparison_grid", "image_grid", "image_panels", "is_image_shape"]

DPI = 100
TARGET_PX = 600
"""Image grids are zoomed by a whole factor until their longer side nears this many pixels."""
MAX_ZOOM = 8
BAND_COLUMNS = 12
"""comparison_grid wraps rows longer than this into several bands."""
FILL = 1.0
"""Value of the 1-pixel separators and of blank tiles: white, which parts dark MNIST tiles."""


def is_image_shape(event_shape: Sequence[int]) -> bool:
    """Whether examples of ``event_shape`` can be drawn as pictures: (H, W) or (C, H, W) with
    C in {1, 3}."""
    return len(event_shape) == 2 or (len(event_shape) == 3 and event_shape[0] in (1, 3))


def _as_nhwc(images: np.ndarray) -> np.ndarray:
    """(N, H, W) or (N, C, H, W) with C in {1, 3} -> float (N, H, W, C), clipped to [0, 1]."""
    images = np.asarray(images, dtype=np.float64)
    if not is_image_shape(images.shape[1:]):
        raise ValueError(f"images must be (N, H, W) or (N, C, H, W) with C in {{1, 3}};"
                         f" got {images.shape}")
    images = images[:, None] if images.ndim == 3 else images
    return np.clip(images, 0.0, 1.0).transpose(0, 2, 3, 1)


def _tile(images: np.ndarray, pad: int = 1) -> np.ndarray:
    """(R, K, H, W, C) -> one (R(H+pad)-pad, K(W+pad)-pad, C) picture, tiles ``pad`` px apart."""
    rows, cols, h, w, c = images.shape
    out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, c), FILL)
    for i in range(rows):
        for j in range(cols):
            out[i * (h + pad) : i * (h + pad) + h, j * (w + pad) : j * (w + pad) + w] = images[i, j]
    return out


def _gridded(x: np.ndarray, ncols: int | None) -> np.ndarray:
    """(N, H, W, C) tiled ``ncols`` (default ceil(sqrt(N))) wide, the last row padded blank."""
    ncols = min(len(x), ncols or math.ceil(math.sqrt(len(x))))
    nrows = math.ceil(len(x) / ncols)
    blank = np.full((nrows * ncols - len(x), *x.shape[1:]), FILL)
    return _tile(np.concatenate([x, blank]).reshape(nrows, ncols, *x.shape[1:]))


def _show(ax: Axes, picture: np.ndarray) -> None:
    grey = picture.shape[2] == 1
    ax.imshow(picture[..., 0] if grey else picture, cmap="gray" if grey else None,
              vmin=0.0, vmax=1.0, interpolation="nearest")


def _picture_figure(picture: np.ndarray) -> tuple[Figure, Axes]:
    """A figure whose one axes shows ``picture`` (H, W, C) at a whole-number zoom."""
    height, width = picture.shape[:2]
    zoom = max(1, min(MAX_ZOOM, TARGET_PX // max(height, width)))
    fig = Figure(figsize=(width * zoom / DPI, height * zoom / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    _show(ax, picture)
    return fig, ax


def _panels_figure(pictures: list[np.ndarray], names: Sequence[str], title: str | None
                   ) -> tuple[Figure, np.ndarray]:
    """The pictures (H, W, C) side by side under their names, at one whole-number zoom."""
    height = max(p.shape[0] for p in pictures)
    width = max(p.shape[1] for p in pictures)
    zoom = max(1, min(MAX_ZOOM, TARGET_PX // max(height, width)))
    fig = Figure(figsize=(len(pictures) * width * zoom / DPI, height * zoom / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(pictures), squeeze=False)[0]
    for ax, name, picture in zip(axes, names, pictures, strict=True):
        _show(ax, picture)
        ax.set_title(name)
    if title:
        fig.suptitle(title)
    return fig, axes


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


def image_grid(images: np.ndarray, path: str | Path, ncols: int | None = None,
               title: str | None = None) -> Path:
    """Tile N images (e.g. decoder means at samples from the prior) into one PNG.

    ``ncols`` defaults to ceil(sqrt(N)); the last row is padded with blank tiles.
    """
    x = _as_nhwc(images)
    if len(x) == 0:
        raise ValueError("image_grid needs at least one image")
    fig, ax = _picture_figure(_gridded(x, ncols))
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return _save(fig, path)


def comparison_grid(rows: Mapping[str, np.ndarray], path: str | Path, title: str | None = None
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


def image_panels(panels: Mapping[str, np.ndarray], path: str | Path, ncols: int | None = None,
                 title: str | None = None) -> Path:
    """Several titled image grids side by side (e.g. samples of models with 2, 5, 10 and 20
    latent dimensions), each tiled as in ``image_grid`` with ``ncols`` columns."""
    if not panels:
        raise ValueError("image_panels needs at least one panel")
    pictures = []
    for name, images in panels.items():
        x = _as_nhwc(images)
        if len(x) == 0:
            raise ValueError(f"panel {name!r} has no images")
        pictures.append(_gridded(x, ncols))
    fig, axes = _panels_figure(pictures, list(panels), title)
    for ax in axes:
        ax.set_axis_off()
    return _save(fig, path)

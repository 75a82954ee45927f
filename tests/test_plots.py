"""Plots: each writes a readable PNG of a sensible size, for every accepted input shape."""

from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
from matplotlib.image import imread

from aevb.reporting import charts, latents, plots


def read_png(path: Path) -> np.ndarray:
    """The PNG at ``path`` as (H, W, C) floats in [0, 1], after checking it exists."""
    assert path.is_file() and path.stat().st_size > 0
    return imread(path)


def brightness(picture: np.ndarray) -> np.ndarray:
    return picture[..., :3].mean(axis=-1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.mark.parametrize("shape", [(16, 28, 28), (16, 1, 28, 28), (16, 3, 28, 28)])
def test_image_grid_shapes_and_size(tmp_path, rng, shape):
    path = plots.image_grid(rng.random(shape), tmp_path / "deep" / "grid.png", title="samples")
    assert path == tmp_path / "deep" / "grid.png"
    height, width = read_png(path).shape[:2]
    tiles = 4 * 28 + 3  # 4 x 4 tiles of 28 px with 1-px separators
    assert tiles <= width <= 1000 and tiles <= height <= 1000


def test_image_grid_columns_and_clipping(tmp_path):
    wide = read_png(plots.image_grid(np.full((16, 8, 8), 5.0), tmp_path / "w.png", ncols=8))
    tall = read_png(plots.image_grid(np.full((16, 8, 8), -5.0), tmp_path / "t.png", ncols=2))
    assert wide.shape[1] > 2 * wide.shape[0]
    assert tall.shape[0] > 2 * tall.shape[1]
    # Values outside [0, 1] are clipped, not rescaled: 5 draws white, -5 black.
    assert brightness(wide).mean() > 0.95
    assert brightness(tall).mean() < 0.3


def test_image_grid_rejects_bad_channels(tmp_path, rng):
    with pytest.raises(ValueError, match="C in"):
        plots.image_grid(rng.random((4, 2, 8, 8)), tmp_path / "x.png")


def test_comparison_grid_rows_and_bands(tmp_path, rng):
    x = rng.random((6, 1, 28, 28))
    pair = read_png(plots.comparison_grid({"input": x, "reconstruction": x}, tmp_path / "a.png"))
    assert pair.shape[1] >= 6 * 29 - 1
    assert pair.shape[0] >= 2 * 29 - 1
    # 30 images wrap into 3 bands of 10, each band holding all three rows.
    x = rng.random((30, 28, 28))
    rows = {"noisy": x, "denoised": x, "clean": x}
    banded = read_png(plots.comparison_grid(rows, tmp_path / "b.png", title="denoising"))
    assert banded.shape[0] >= 9 * 29 - 1
    assert banded.shape[0] / banded.shape[1] > 2 * pair.shape[0] / pair.shape[1]


def test_comparison_grid_rejects_mismatched_rows(tmp_path, rng):
    with pytest.raises(ValueError, match="share one shape"):
        plots.comparison_grid(
            {"input": rng.random((4, 8, 8)), "reconstruction": rng.random((3, 8, 8))},
            tmp_path / "x.png",
        )


def test_training_curves_skips_bad_values(tmp_path):
    history = [
        {"epoch": e, "step": 10 * e, "seconds": e, "train_elbo": -100 + e,
         "valid_elbo": "" if e == 2 else str(-101 + e), "train_kl": "nan", "train_loss": 100 - e}
        for e in range(1, 6)
    ]  # fmt: skip
    many = read_png(charts.training_curves(history, tmp_path / "many.png"))
    one = read_png(charts.training_curves([{"train_loss": 3.0}, {}], tmp_path / "one.png"))
    # elbo and loss get subplots side by side; kl (never a number) and step/seconds do not.
    assert many.shape[1] > 1.6 * one.shape[1]
    assert abs(many.shape[0] - one.shape[0]) < 0.2 * one.shape[0]
    read_png(charts.training_curves([], tmp_path / "empty.png"))


@pytest.mark.parametrize("dim", [1, 2, 5])
@pytest.mark.parametrize("labelled", [True, False])
def test_latent_scatter_dims(tmp_path, rng, dim, labelled):
    z = rng.normal(size=(10_000, dim))
    labels = rng.integers(0, 10, len(z)) if labelled else None
    height, width = read_png(latents.latent_scatter(z, labels, tmp_path / "z.png")).shape[:2]
    assert 300 <= width <= 1200 and 300 <= height <= 1200


def test_latent_scatter_many_classes_and_bad_labels(tmp_path, rng):
    z = rng.normal(size=(500, 3))
    read_png(latents.latent_scatter(z, rng.integers(0, 50, 500), tmp_path / "z.png"))
    with pytest.raises(ValueError, match="labels"):
        latents.latent_scatter(z, np.zeros(499), tmp_path / "bad.png")


def test_pca_projection_explains_variance(rng):
    # Variance 9, 1 and ~0 along three axes: PC1 carries 90%, PC2 10%.
    z = rng.normal(size=(5000, 3)) * [3.0, 1.0, 1e-4]
    projected, share = latents._pca2(z)
    assert projected.shape == (5000, 2)
    np.testing.assert_allclose(share, [90.0, 10.0], atol=1.0)
    np.testing.assert_allclose(np.abs(projected[:, 0]), np.abs(z[:, 0] - z[:, 0].mean()), atol=0.1)


def test_manifold_quantiles():
    q = latents.manifold_quantiles(20)
    assert q.shape == (20,)
    assert np.all(np.diff(q) > 0)
    np.testing.assert_allclose(q, -q[::-1], atol=1e-12)
    assert q[-1] == pytest.approx(1.6449, abs=1e-4)
    assert q[-1] == pytest.approx(NormalDist().inv_cdf(0.95))
    np.testing.assert_allclose(latents.manifold_quantiles(3, eps=0.1), [-1.28155, 0.0, 1.28155],
                               atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(latents.manifold_quantiles(1), [0.0])
    with pytest.raises(ValueError):
        latents.manifold_quantiles(5, eps=0.5)


@pytest.mark.parametrize("channels", [None, 1, 3])
def test_manifold_grid_puts_high_z2_on_top(tmp_path, channels):
    n = 10
    z = latents.manifold_quantiles(n)
    # Tile brightness grows with its row index i, i.e. with z2 = z[i].
    level = np.linspace(0.0, 1.0, n)[:, None, None, None] * np.ones((n, n, 12, 12))
    images = level if channels is None else np.repeat(level[:, :, None], channels, axis=2)
    picture = read_png(latents.manifold_grid(images, z, tmp_path / "m.png", title="manifold"))
    height, width = picture.shape[:2]
    assert n * 13 - 1 <= width <= 1000 and n * 13 - 1 <= height <= 1000
    column = brightness(picture)[:, width // 2]
    third = height // 3
    assert column[:third].mean() > column[-third:].mean() + 0.3


def test_manifold_grid_rejects_mismatched_grid(tmp_path):
    with pytest.raises(ValueError, match="len\\(z_grid\\)"):
        latents.manifold_grid(np.zeros((4, 4, 8, 8)), np.zeros(5), tmp_path / "m.png")

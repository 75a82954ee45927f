"""scikit-learn's 8x8 digits: 17 grey levels, a fixed 1297/250/250 split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aevb.data.splits import SPLITS, Arrays

__all__ = ["build_digits"]


def build_digits(root: Path) -> tuple[Arrays, str]:
    from sklearn.datasets import load_digits  # slow to import; only needed once per cache

    bunch = load_digits()
    x = bunch.images.astype(np.uint8)[:, None]  # (1797, 1, 8, 8), grey levels 0..16
    # A fixed seed, not split_seed: every run is evaluated on the same 250 test digits.
    order = np.random.default_rng(0).permutation(len(x))
    parts = dict(zip(SPLITS, (order[:-500], order[-500:-250], order[-250:]), strict=True))
    arrays = {f"x_{s}": x[i] for s, i in parts.items()}
    arrays.update({f"y_{s}": bunch.target[i].astype(np.uint8) for s, i in parts.items()})
    return {**arrays, "scale": np.array(16)}, "sklearn.datasets.load_digits"

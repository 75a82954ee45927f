import os
import tempfile

import pytest

# Keep the tests' fetched/processed data out of the user's cache.
os.environ.setdefault("AEVB_CACHE", tempfile.mkdtemp(prefix="aevb-test-cache-"))


@pytest.fixture(autouse=True)
def _no_tqdm_monitor(monkeypatch):
    # tqdm's monitor thread can outlive a test; it is not needed for short runs.
    import tqdm

    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)


@pytest.fixture
def validate_distributions():
    """Distribution argument checks on (training turns them off for speed)."""
    import torch

    previous = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(True)
    yield
    torch.distributions.Distribution.set_default_validate_args(previous)

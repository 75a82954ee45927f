import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Keep the tests' fetched/processed data out of the user's cache, whatever $AEVB_CACHE says:
# a fresh directory, removed at exit, or $AEVB_TEST_CACHE (kept, to reuse fetched data).
if os.environ.get("AEVB_TEST_CACHE"):
    os.environ["AEVB_CACHE"] = os.environ["AEVB_TEST_CACHE"]
else:
    os.environ["AEVB_CACHE"] = tempfile.mkdtemp(prefix="aevb-test-cache-")
    atexit.register(shutil.rmtree, os.environ["AEVB_CACHE"], True)


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


@pytest.fixture
def old_run(tmp_path, request):
    """A copy of ``tests/fixtures/<request.param>`` (a run directory written by older code,
    e.g. ``runs-v1/vae``), as ``tmp_path/<its name>``, to evaluate or resume without touching
    the fixture."""
    source = Path(__file__).parent / "fixtures" / request.param
    run = tmp_path / source.name
    shutil.copytree(source, run)
    return run

"""8-bit data stays 8-bit, a .npy larger than memory trains from disk, and neither changes a
number a run produces; a run's peak memory is in its checkpoint and its report."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from aevb import data
from aevb.config.overrides import apply_overrides
from aevb.config.run import Config
from aevb.config.schema import DataConfig
from aevb.data import load_dataset
from aevb.data.splits import MappedRows, Split
from aevb.engine.checkpoint import checkpoint_path, read_checkpoint
from aevb.engine.loop import train
from aevb.engine.resume import data_fingerprint
from aevb.errors import DataError
from aevb.reporting.report import write_report

TINY = {"dataset": "digits", "latent_dim": "2", "hidden": "8", "precision": "float32",
        "threads": "1", "batch_size": "100"}

DIGITS_GREY_BLAKE2B = {"train": "afc3007bc5939f7944c6e9682c5b830c",
                       "valid": "c4efdf26251d851ff87729b45650a72b",
                       "test": "7d7ed5c56f71d54e52e0ead6436ea420"}
"""data_fingerprint of digits (binarize none) as aevb computed it from float32 tensors, before
splits were stored as uint8: run directories written then still resume."""


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory) -> str:
    cache = tmp_path_factory.mktemp("digits-cache")
    data.fetch("digits", cache)
    return str(cache)


def digits(cache: str, binarize: str = "none") -> data.Dataset:
    return load_dataset(DataConfig(name="digits", cache_dir=cache, binarize=binarize))


def as_float(dataset: data.Dataset) -> data.Dataset:
    """The dataset stored as float32 tensors, as every split was before uint8 storage."""
    return replace(dataset, **{s: replace(getattr(dataset, s), raw=getattr(dataset, s).values(),
                                          scale=1) for s in data.SPLITS})


def bits(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous().view(torch.int32)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scale", [255, 16, 1])
def test_every_grey_level_divides_to_numpys_float32(scale, device):
    """k * (1/255) in float32 misses k/255 for 126 of the 256 levels: a division it must be."""
    k = np.arange(min(scale, 255) + 1, dtype=np.uint8)
    expected = torch.from_numpy(k.astype(np.float32) / np.float32(scale))
    split = Split(torch.from_numpy(k)[:, None], scale=scale).to(device)
    assert torch.equal(bits(split.values()[:, 0].cpu()), bits(expected))  # bit for bit
    index = torch.tensor([1, 0, 1, len(k) - 1], device=device)
    assert torch.equal(split.values(index)[:, 0].cpu(), expected[index.cpu()])


def test_a_dynamic_batch_draws_from_the_same_floats_with_the_same_stream():
    k = torch.randint(0, 256, (40, 1, 3, 3), generator=torch.Generator().manual_seed(0),
                      dtype=torch.uint8)
    split = Split(k, binarize="dynamic", scale=255)
    floats = torch.from_numpy(k.numpy().astype(np.float32) / np.float32(255))
    index = torch.tensor([5, 1, 39, 5])
    got = split.batch(index, torch.Generator().manual_seed(7))
    assert torch.equal(got, torch.bernoulli(floats[index], generator=torch.Generator().manual_seed(7)))


def test_digits_are_stored_as_uint8_and_read_as_before(digits_cache):
    grey = digits(digits_cache)
    cached = np.load(Path(digits_cache) / "digits.npz")
    for s in data.SPLITS:
        split = getattr(grey, s)
        assert split.raw.dtype == torch.uint8 and split.scale == 16
        expected = torch.from_numpy(cached[f"x_{s}"].astype(np.float32) / np.float32(16))
        assert torch.equal(bits(split.values()), bits(expected))
        index = torch.tensor([4, 0, 9])
        assert torch.equal(split.batch(index), expected[index])
    prints = data_fingerprint(grey)
    assert {s: prints[s]["x"]["blake2b"] for s in data.SPLITS} == DIGITS_GREY_BLAKE2B
    assert prints == data_fingerprint(as_float(grey))
    for mode in ("static", "threshold", "dynamic"):
        binary = digits(digits_cache, mode)
        for s in data.SPLITS:
            split = getattr(binary, s)
            assert split.raw.dtype == torch.uint8
            assert split.scale == (16 if (mode, s) == ("dynamic", "train") else 1)
    static, dynamic = digits(digits_cache, "static"), digits(digits_cache, "dynamic")
    for s in ("valid", "test"):  # the same fixed sample, drawn from the same floats as before
        generator = torch.Generator().manual_seed(3 * DataConfig().split_seed + data.SPLITS.index(s))
        drawn = torch.bernoulli(getattr(grey, s).values(), generator=generator)
        assert torch.equal(getattr(static, s).values(), drawn)
        assert torch.equal(getattr(dynamic, s).values(), drawn)


def test_uint8_storage_is_a_quarter_of_float32(digits_cache):
    grey = digits(digits_cache)
    stored = sum(getattr(grey, s).raw.nbytes for s in data.SPLITS)
    assert 4 * stored == sum(getattr(grey, s).values().nbytes for s in data.SPLITS)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("binarize", ["dynamic", "static"])
def test_training_on_uint8_storage_gives_the_weights_of_float32_storage(tmp_path, digits_cache,
                                                                        binarize):
    config = apply_overrides(Config(), {**TINY, "binarize": binarize, "epochs": "2"})
    config = replace(config, data=replace(config.data, cache_dir=digits_cache))
    dataset = load_dataset(config.data)
    stored = train(config, tmp_path / "uint8", progress=False, dataset=dataset)
    floats = train(config, tmp_path / "float32", progress=False, dataset=as_float(dataset))
    assert stored.dataset.train.raw.dtype == torch.uint8
    assert floats.dataset.train.raw.dtype == torch.float32
    a, b = weights(stored.model), weights(floats.model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    drop = {"seconds"}
    assert ([{k: v for k, v in r.items() if k not in drop} for r in stored.history]
            == [{k: v for k, v in r.items() if k not in drop} for r in floats.history])


def npy_config(path: Path, **overrides: str) -> Config:
    return apply_overrides(Config(), {**TINY, "dataset": str(path), "binarize": "none",
                                      "likelihood": "gaussian-learned", "epochs": "2",
                                      **overrides})


def test_a_memory_mapped_npy_gives_the_numbers_of_a_loaded_one(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    grey = tmp_path / "grey.npy"
    np.save(grey, rng.random((300, 1, 4, 4)))  # float64: cast to float32 as when loaded
    loaded = load_dataset(npy_config(grey).data)
    assert not isinstance(loaded.train.raw, MappedRows)
    straight = train(npy_config(grey), tmp_path / "loaded", progress=False)

    monkeypatch.setenv("AEVB_MMAP_BYTES", "0")  # anything larger than 0 bytes stays on disk
    mapped = load_dataset(npy_config(grey).data)
    for s in data.SPLITS:
        split = getattr(mapped, s)
        assert isinstance(split.raw, MappedRows) and len(split) == len(getattr(loaded, s))
        assert torch.equal(split.values(), getattr(loaded, s).values())
        index = torch.tensor([7, 0, 7, len(split) - 1, 2])  # out of order, repeated
        assert torch.equal(split.batch(index), getattr(loaded, s).values()[index])
    assert data_fingerprint(mapped) == data_fingerprint(loaded)
    from_disk = train(npy_config(grey), tmp_path / "mapped", progress=False)
    assert isinstance(from_disk.dataset.train.raw, MappedRows)
    a, b = weights(from_disk.model), weights(straight.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a run started on the loaded array resumes on the mapped one: same fingerprint
    train(npy_config(grey, epochs="3"), tmp_path / "loaded", resume=True, progress=False)

    small = train(npy_config(grey, train_size="50", epochs="1"), tmp_path / "prefix",
                  progress=False)
    assert len(small.dataset.train) == 50
    assert torch.equal(small.dataset.train.values(), loaded.train.values()[:50])

    probabilities = tmp_path / "p.npy"
    np.save(probabilities, rng.random((200, 6)).astype(np.float32))
    dynamic = load_dataset(replace(npy_config(probabilities).data, binarize="dynamic"))
    assert isinstance(dynamic.train.raw, MappedRows)
    assert dynamic.valid.raw.dtype == torch.uint8  # its fixed sample is held in memory
    with pytest.raises(DataError, match="memory-mapped"):
        load_dataset(replace(npy_config(probabilities).data, binarize="static"))


def test_a_memory_mapped_npy_is_checked_as_a_loaded_one(tmp_path, monkeypatch):
    monkeypatch.setenv("AEVB_MMAP_BYTES", "0")
    path = tmp_path / "x.npy"
    x = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
    x[5, 1] = np.nan
    np.save(path, x)
    with pytest.raises(DataError, match="1 NaN and 0 inf values in x_"):
        load_dataset(DataConfig(name=str(path)))
    np.save(path, np.abs(np.nan_to_num(x)) + 2)
    with pytest.raises(DataError, match=r"spans \[2, "):
        load_dataset(DataConfig(name=str(path), binarize="dynamic"))
    with path.open("r+b") as handle:
        handle.truncate(500)
    with pytest.raises(DataError, match="shorter than its header"):
        load_dataset(DataConfig(name=str(path)))


def test_a_run_records_and_reports_its_peak_memory(tmp_path, digits_cache):
    config = apply_overrides(Config(), {**TINY, "binarize": "dynamic", "epochs": "1"})
    config = replace(config, data=replace(config.data, cache_dir=digits_cache))
    train(config, tmp_path / "run", progress=False)
    peak = read_checkpoint(checkpoint_path(tmp_path / "run", "last"))[1]["peak_memory"]
    assert peak["rss_bytes"] > 50 * 2**20  # torch alone is more than this
    report = write_report(tmp_path / "run").read_text()
    assert f"peak resident memory {peak['rss_bytes'] / 2**20:.0f} MiB" in report


CHILD = textwrap.dedent("""
    import os, resource, sys
    import numpy as np
    from aevb.config import Config, apply_overrides
    from aevb.data import MappedRows
    from aevb.engine.loop import train

    big, small, out = sys.argv[1:4]

    def run(path, name):
        config = apply_overrides(Config(), {
            "dataset": path, "binarize": "none", "likelihood": "gaussian-learned",
            "hidden": "8", "latent_dim": "2", "batch_size": "100", "train_samples": "300",
            "threads": "1", "precision": "float32"})
        return train(config, os.path.join(out, name), progress=False)

    run(small, "warm")  # the interpreter with all that training imports and allocates
    with open("/proc/self/statm") as handle:
        used = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = used + os.path.getsize(big) // 4
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    result = run(big, "big")
    print("mapped", isinstance(result.dataset.train.raw, MappedRows), result.history[-1]["step"])
    try:
        np.load(big)
    except MemoryError:
        print("loading it whole: MemoryError")
""")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads /proc (Linux)")
def test_a_npy_larger_than_the_address_space_limit_trains(tmp_path):
    """``ulimit -v`` leaves a quarter of the file's size above what the interpreter needs to
    train: the run reads the file a window at a time, while reading it whole fails."""
    big = tmp_path / "big.npy"
    x = np.lib.format.open_memmap(big, mode="w+", dtype=np.uint8, shape=(98_304, 1, 64, 64))
    rng = np.random.default_rng(0)
    for start in range(0, len(x), 16_384):  # 384 MiB, written in pieces
        x[start : start + 16_384] = rng.integers(0, 256, (16_384, 1, 64, 64), dtype=np.uint8)
    x.flush()
    np.save(tmp_path / "small.npy", np.asarray(x[:200]))
    del x
    done = subprocess.run([sys.executable, "-c", CHILD, str(big), str(tmp_path / "small.npy"),
                           str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mapped True 3" in done.stdout
    assert "loading it whole: MemoryError" in done.stdout

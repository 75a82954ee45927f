"""Tests of aevb.data.datasets: tiny generated data, a local HTTP server for downloads, no internet."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import os
import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from aevb import data
from aevb.config.schema import DataConfig
from aevb.data import datasets
from aevb.data.sources import mnist, raw
from aevb.errors import DataError


@pytest.fixture(autouse=True)
def _no_user_environment(monkeypatch, tmp_path):
    """Keep tests off the user's cache and data locations."""
    for var in ("AEVB_MNIST_PATH", "AEVB_MNIST_SOURCE", "AEVB_FASHION_MNIST_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AEVB_CACHE", str(tmp_path / "default-cache"))


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory) -> str:
    """One cache for the digits tests, so scikit-learn decodes them once."""
    cache = tmp_path_factory.mktemp("digits-cache")
    data.fetch("digits", cache)
    return str(cache)


def load(name: str, cache_dir: str | Path, **kwargs) -> data.Dataset:
    return data.load_dataset(DataConfig(name=name, cache_dir=str(cache_dir), **kwargs))


def idx_gz(array: np.ndarray) -> bytes:
    """A gzipped IDX file of unsigned bytes."""
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def write_idx_dir(folder: Path, n_train: int = 12, n_test: int = 4, side: int = 28) -> None:
    rng = np.random.default_rng(1)
    arrays = [
        rng.integers(0, 256, (n_train, side, side)),
        rng.integers(0, 10, n_train),
        rng.integers(0, 256, (n_test, side, side)),
        rng.integers(0, 10, n_test),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    for file, array in zip(mnist.IDX_FILES, arrays, strict=True):
        (folder / file).write_bytes(idx_gz(array))


# ---------------------------------------------------------------------------------------------
# named datasets, splits, labels


def test_list_datasets_names_the_builtins():
    names = [name for name, _ in data.list_datasets()]
    assert names == ["mnist", "fashion-mnist", "digits", "frey-face"]
    assert all(description for _, description in data.list_datasets())


def test_digits_splits_shapes_and_dtypes(digits_cache):
    ds = load("digits", digits_cache, binarize="none")
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (1297, 250, 250)
    assert ds.event_shape == (1, 8, 8) and ds.train.values().shape == (1297, 1, 8, 8)
    assert ds.kind == "unit" and ds.num_classes == 10
    for split in (ds.train, ds.valid, ds.test):
        assert split.values().dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.y.shape == (len(split),)
    assert ds.train.values().min() == 0 and ds.train.values().max() == 1
    # grey levels are k/16, and the three splits are disjoint parts of all 1797 digits
    assert torch.equal(ds.train.values() * 16, (ds.train.values() * 16).round())
    all_x = torch.cat([ds.train.values(), ds.valid.values(), ds.test.values()]).flatten(1)
    assert torch.unique(all_x, dim=0).shape[0] > 1700


def test_dataset_info_and_to(digits_cache):
    info = data.dataset_info("digits", digits_cache)
    assert info["sizes"] == {"train": 1297, "valid": 250, "test": 250}
    assert info["event_shape"] == (1, 8, 8) and info["kind"] == "unit"
    assert info["num_classes"] == 10 and Path(info["path"]).is_file()
    assert "sklearn" in info["source"]
    ds = load("digits", digits_cache).to("cpu")
    assert ds.train.binarize == "dynamic" and ds.train.values().device.type == "cpu"


def test_default_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AEVB_CACHE", str(tmp_path / "c"))
    assert data.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("AEVB_CACHE")
    assert data.default_cache_dir() == Path.home() / ".cache" / "aevb"


# ---------------------------------------------------------------------------------------------
# binarization


def is_binary(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


def test_static_is_binary_and_deterministic(digits_cache):
    a = load("digits", digits_cache, binarize="static", split_seed=3)
    b = load("digits", digits_cache, binarize="static", split_seed=3)
    c = load("digits", digits_cache, binarize="static", split_seed=4)
    assert a.kind == "binary"
    for s in ("train", "valid", "test"):
        assert is_binary(getattr(a, s).values())
        assert torch.equal(getattr(a, s).values(), getattr(b, s).values())
        assert not torch.equal(getattr(a, s).values(), getattr(c, s).values())
    index = torch.arange(50)
    assert torch.equal(a.train.batch(index), a.train.batch(index))


def test_dynamic_resamples_train_but_fixes_valid_and_test(digits_cache):
    ds = load("digits", digits_cache, binarize="dynamic", split_seed=3)
    static = load("digits", digits_cache, binarize="static", split_seed=3)
    plain = load("digits", digits_cache, binarize="none")
    assert ds.kind == "binary"
    assert torch.equal(ds.train.values(), plain.train.values())  # probabilities, sampled per batch
    index = torch.arange(200)
    first, second = ds.train.batch(index), ds.train.batch(index)
    assert is_binary(first) and is_binary(second) and not torch.equal(first, second)
    seeded = [ds.train.batch(index, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(*seeded)
    for s in ("valid", "test"):
        split = getattr(ds, s)
        assert is_binary(split.values()) and split.binarize == "static"
        assert torch.equal(split.batch(index), split.batch(index))
        assert torch.equal(split.values(), getattr(static, s).values())  # same evaluation data as static


def test_dynamic_frequencies_match_probabilities(digits_cache):
    ds = load("digits", digits_cache, binarize="dynamic")
    index = torch.arange(100)
    mean = torch.stack([ds.train.batch(index) for _ in range(400)]).mean(0)
    assert (mean - ds.train.values()[:100]).abs().max() < 0.1


def test_threshold_and_none(digits_cache):
    plain = load("digits", digits_cache, binarize="none")
    ds = load("digits", digits_cache, binarize="threshold")
    assert ds.kind == "binary" and plain.kind == "unit"
    for s in ("train", "valid", "test"):
        assert torch.equal(getattr(ds, s).values(), (getattr(plain, s).values() > 0.5).float())
        assert getattr(ds, s).binarize == "threshold"


def test_train_size_keeps_a_prefix(digits_cache):
    full = load("digits", digits_cache, binarize="static")
    small = load("digits", digits_cache, binarize="static", train_size=100)
    assert len(small.train) == 100 and len(small.train.y) == 100 and len(small.test) == 250
    assert torch.equal(small.train.values(), full.train.values()[:100])
    assert torch.equal(small.train.y, full.train.y[:100])


def test_train_size_out_of_range(digits_cache):
    with pytest.raises(DataError, match=r"train_size=1298 must be in 1\.\.1297"):
        load("digits", digits_cache, train_size=1298)
    config = DataConfig(name="digits", cache_dir=digits_cache)
    object.__setattr__(config, "train_size", 0)  # DataConfig itself refuses 0; test our guard
    with pytest.raises(DataError, match="train_size=0"):
        data.load_dataset(config)


# ---------------------------------------------------------------------------------------------
# the cache


def test_second_load_uses_the_cache(monkeypatch, tmp_path):
    calls = []
    spec = datasets._DATASETS["digits"]

    def counting_build(root):
        calls.append(root)
        return spec.build(root)

    monkeypatch.setitem(datasets._DATASETS, "digits", dataclasses.replace(spec, build=counting_build))
    first = load("digits", tmp_path, binarize="none")
    second = load("digits", tmp_path, binarize="none")
    assert len(calls) == 1 and torch.equal(first.train.values(), second.train.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits.npz"]  # no temp files left


def test_default_cache_is_used_when_cache_dir_is_empty(tmp_path):
    path = data.fetch("digits")
    assert path == tmp_path / "default-cache" / "digits.npz" and path.is_file()


def test_corrupt_cache_file_is_a_data_error(tmp_path):
    (tmp_path / "digits.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="digits.npz"):
        load("digits", tmp_path)


# ---------------------------------------------------------------------------------------------
# MNIST: download from mirrors (a local server), the pickle route, the restricted unpickler


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """Tiny MNIST IDX files served on 127.0.0.1 under /good/; /missing/ answers 404."""
    served = tmp_path / "served"
    write_idx_dir(served / "good")
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(served))
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    digests = {
        f: hashlib.sha256((served / "good" / f).read_bytes()).hexdigest() for f in mnist.IDX_FILES
    }
    monkeypatch.setattr(mnist, "MNIST_MIRRORS", (f"{base}/missing/", f"{base}/good/"))
    monkeypatch.setattr(mnist, "MNIST_IDX_SHA256", digests)
    monkeypatch.setattr(mnist, "VALID_SIZE", 5)
    monkeypatch.setenv("AEVB_MNIST_SOURCE", "url")
    yield requests
    server.shutdown()
    server.server_close()


def test_mnist_download_from_mirrors_and_cache(mirror, tmp_path):
    cache = tmp_path / "cache"
    ds = load("mnist", cache, binarize="none")
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (7, 5, 4)
    assert ds.event_shape == (1, 28, 28) and ds.train.y.dtype == torch.int64
    served = gzip.decompress((tmp_path / "served/good/train-images-idx3-ubyte.gz").read_bytes())
    pixels = np.frombuffer(served, np.uint8, offset=16).reshape(12, 1, 28, 28)
    assert torch.equal(ds.valid.values(), torch.from_numpy(pixels[7:] / np.float32(255)))
    assert any(r.startswith("/missing/") for r in mirror)  # the first mirror was tried
    assert sum(r.startswith("/good/") for r in mirror) == 4
    assert sorted(p.name for p in (cache / "raw" / "mnist").iterdir()) == sorted(mnist.IDX_FILES)
    count = len(mirror)
    load("mnist", cache, binarize="static")
    assert len(mirror) == count  # the second load fetched nothing
    assert "IDX files from http://127.0.0.1" in data.dataset_info("mnist", cache)["source"]


def test_mnist_checksum_mismatch_is_refused_and_not_kept(mirror, monkeypatch, tmp_path):
    bad = dict(mnist.MNIST_IDX_SHA256, **{"train-labels-idx1-ubyte.gz": "0" * 64})
    monkeypatch.setattr(mnist, "MNIST_IDX_SHA256", bad)
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as error:
        load("mnist", cache)
    message = str(error.value)
    actual = hashlib.sha256(
        (tmp_path / "served/good/train-labels-idx1-ubyte.gz").read_bytes()
    ).hexdigest()
    assert "train-labels-idx1-ubyte.gz" in message and "0" * 64 in message and actual in message
    kept = sorted(p.name for p in (cache / "raw" / "mnist").iterdir())
    assert kept == ["train-images-idx3-ubyte.gz"]  # neither the bad file nor a temp file
    assert not (cache / "mnist.npz").exists()


def test_mnist_unknown_source(monkeypatch, tmp_path):
    monkeypatch.setenv("AEVB_MNIST_SOURCE", "ftp")
    with pytest.raises(DataError, match="AEVB_MNIST_SOURCE"):
        load("mnist", tmp_path)


def mnist_like_pickle(n: tuple[int, int, int] = (6, 3, 2)) -> tuple[bytes, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (k, 784)) for k in n]
    payload = tuple(
        ((p / np.float32(256)).astype(np.float32), rng.integers(0, 10, len(p))) for p in pixels
    )
    return gzip.compress(pickle.dumps(payload, protocol=2)), pixels


def test_mnist_from_a_local_pickle(monkeypatch, tmp_path):
    blob, pixels = mnist_like_pickle()
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "mnist.pkl.gz").write_bytes(blob)
    monkeypatch.setenv("AEVB_MNIST_PATH", str(tmp_path / "local"))
    ds = load("mnist", tmp_path / "cache", binarize="none")
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (6, 3, 2)
    assert ds.train.values().shape == (6, 1, 28, 28) and ds.test.y.dtype == torch.int64
    # k/256 in the pickle becomes k/255, as from the IDX files
    expected = torch.from_numpy(pixels[0].reshape(6, 1, 28, 28).astype(np.float32) / 255)
    assert torch.equal(ds.train.values(), expected)


def test_mnist_local_path_without_data(monkeypatch, tmp_path):
    monkeypatch.setenv("AEVB_MNIST_PATH", str(tmp_path))
    with pytest.raises(DataError, match="AEVB_MNIST_PATH"):
        load("mnist", tmp_path / "cache")


def test_unpickler_accepts_a_numpy_protocol_2_pickle(tmp_path):
    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], dtype=np.int64))
    path = tmp_path / "a.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(arrays, protocol=2)))
    x, y = raw.unpickle_arrays(path)
    assert np.array_equal(x, arrays[0]) and x.dtype == np.float32 and np.array_equal(y, arrays[1])


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_unpickler_refuses_os_system(monkeypatch, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps((np.zeros(2), _Exploit(marker)), protocol=2)))
    with pytest.raises(DataError, match=r"refusing to unpickle (posix|os|nt)\.system"):
        raw.unpickle_arrays(path)
    assert not marker.exists()
    # and through the public route, as a local mnist.pkl.gz
    monkeypatch.setenv("AEVB_MNIST_PATH", str(path))
    with pytest.raises(DataError, match="refusing"):
        load("mnist", tmp_path / "cache")
    assert not marker.exists()


def test_unpickler_refuses_other_codecs(tmp_path):
    class Rot13:
        def __reduce__(self):
            import _codecs

            return (_codecs.encode, ("abc", "rot13"))

    path = tmp_path / "codec.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(Rot13(), protocol=2)))
    with pytest.raises(DataError, match="rot13"):
        raw.unpickle_arrays(path)


@pytest.mark.skipif(os.environ.get("AEVB_TEST_MNIST") != "1", reason="set AEVB_TEST_MNIST=1")
def test_real_mnist(tmp_path):
    start = time.perf_counter()
    ds = load("mnist", tmp_path, binarize="none")
    first = time.perf_counter() - start
    start = time.perf_counter()
    again = load("mnist", tmp_path, binarize="none")
    cached = time.perf_counter() - start
    print(f"mnist load: first {first:.1f} s, cached {cached:.2f} s")
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (50_000, 10_000, 10_000)
    assert ds.event_shape == (1, 28, 28) and ds.kind == "unit" and ds.num_classes == 10
    assert ds.train.y[:5].tolist() == [5, 0, 4, 1, 9]
    assert torch.equal(ds.test.values(), again.test.values())


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST and IDX parsing


def test_fashion_mnist_from_env_path(monkeypatch, tmp_path):
    write_idx_dir(tmp_path / "fashion", n_train=9, n_test=3)
    monkeypatch.setenv("AEVB_FASHION_MNIST_PATH", str(tmp_path / "fashion"))
    monkeypatch.setattr(mnist, "VALID_SIZE", 4)
    ds = load("fashion-mnist", tmp_path / "cache", binarize="threshold")
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (5, 4, 3)
    assert ds.kind == "binary" and ds.event_shape == (1, 28, 28)


def test_fashion_mnist_missing_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(mnist, "FASHION_MNIST_DIRS", (str(tmp_path / "nowhere"),))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load("fashion-mnist", tmp_path)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda b: b[: len(b) // 2], "not a readable gzip"),  # truncated gz
        (lambda b: b"garbage" + b, "not a readable gzip"),
        (lambda b: gzip.compress(gzip.decompress(b)[:-10]), "bytes; an IDX file of shape"),
        (lambda b: gzip.compress(b"\x00\x00\x0d\x03" + gzip.decompress(b)[4:]), "magic"),
        (lambda b: gzip.compress(b"\x00\x00"), "magic"),
    ],
)
def test_corrupt_idx_files(monkeypatch, tmp_path, corrupt, message):
    folder = tmp_path / "fashion"
    write_idx_dir(folder, n_train=9, n_test=3)
    target = folder / "train-images-idx3-ubyte.gz"
    target.write_bytes(corrupt(target.read_bytes()))
    monkeypatch.setenv("AEVB_FASHION_MNIST_PATH", str(folder))
    monkeypatch.setattr(mnist, "VALID_SIZE", 4)
    with pytest.raises(DataError, match=message) as error:
        load("fashion-mnist", tmp_path / "cache")
    assert "train-images-idx3-ubyte.gz" in str(error.value)
    assert not (tmp_path / "cache" / "fashion-mnist.npz").exists()


def test_idx_images_and_labels_must_agree(monkeypatch, tmp_path):
    folder = tmp_path / "fashion"
    write_idx_dir(folder, n_train=9, n_test=3)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(idx_gz(np.zeros(2)))
    monkeypatch.setenv("AEVB_FASHION_MNIST_PATH", str(folder))
    monkeypatch.setattr(mnist, "VALID_SIZE", 4)
    with pytest.raises(DataError, match="3 images but 2 labels"):
        load("fashion-mnist", tmp_path / "cache")


# ---------------------------------------------------------------------------------------------
# a user's own arrays, and validation


def test_user_npy_is_split_80_10_10_with_the_seed(tmp_path):
    x = np.random.default_rng(0).random((50, 3)).astype(np.float64)
    np.save(tmp_path / "x.npy", x)
    ds = load(str(tmp_path / "x.npy"), tmp_path, binarize="none", split_seed=1)
    again = load(str(tmp_path / "x.npy"), tmp_path, binarize="none", split_seed=1)
    other = load(str(tmp_path / "x.npy"), tmp_path, binarize="none", split_seed=2)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (40, 5, 5)
    assert ds.event_shape == (3,) and ds.kind == "unit" and ds.num_classes is None
    assert ds.train.y is None and ds.train.values().dtype == torch.float32
    assert torch.equal(ds.test.values(), again.test.values()) and not torch.equal(ds.test.values(), other.test.values())
    rows = torch.cat([ds.train.values(), ds.valid.values(), ds.test.values()])
    assert torch.equal(rows[rows[:, 0].argsort()], torch.from_numpy(x[x[:, 0].argsort()]).float())


def test_user_npz_with_x_and_y(tmp_path):
    x = np.random.default_rng(0).random((20, 2, 2)) * 5 - 1
    y = np.arange(20) % 4
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load(str(tmp_path / "d.npz"), tmp_path, binarize="none")
    assert ds.kind == "real" and ds.num_classes == 4 and ds.event_shape == (2, 2)
    for split in (ds.train, ds.valid, ds.test):
        x_rows = split.values().double().flatten(1)
        index = [int(np.flatnonzero(np.isclose(x.reshape(20, 4), r).all(1))[0]) for r in x_rows]
        assert split.y.tolist() == [int(y[i]) for i in index]  # labels follow their rows


def test_user_npz_with_given_splits_and_binary_kind(tmp_path):
    rng = np.random.default_rng(0)
    splits = {
        f"x_{s}": rng.integers(0, 2, (n, 6)) for s, n in [("train", 7), ("valid", 2), ("test", 3)]
    }
    labels = {
        f"y_{s}": np.zeros(len(x), np.int32)
        for s, x in zip(("train", "valid", "test"), splits.values(), strict=True)
    }
    np.savez(tmp_path / "d.npz", **splits, **labels)
    ds = load(str(tmp_path / "d.npz"), tmp_path, binarize="none")
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (7, 2, 3)
    assert ds.kind == "binary" and ds.train.y.dtype == torch.int64 and ds.num_classes == 1
    assert torch.equal(ds.valid.values(), torch.from_numpy(splits["x_valid"]).float())
    info = data.dataset_info(str(tmp_path / "d.npz"))
    assert info["sizes"] == {"train": 7, "valid": 2, "test": 3} and info["kind"] == "binary"


def test_unknown_dataset_lists_the_known_ones(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'cifar'.*mnist, fashion-mnist, digits"):
        load("cifar", tmp_path)


def test_missing_user_file(tmp_path):
    with pytest.raises(DataError, match="data file not found: .*nothere.npz"):
        load(str(tmp_path / "nothere.npz"), tmp_path)


def save_npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def three(n=(8, 2, 2), shape=(3,), **extra) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        f"x_{s}": rng.random((k, *shape))
        for s, k in zip(("train", "valid", "test"), n, strict=True)
    }
    return {**arrays, **extra}


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.arange(20.0)}, r"x_train has shape \(16,\); expected \(N, \*event_shape\)"),
        ({"x": np.ones((5, 2))}, "need at least 10 examples"),
        (
            {"x": np.ones((20, 2)), "y": np.zeros(19, int)},
            r"y has shape \(19,\) but x has shape \(20, 2\)",
        ),
        ({"images": np.ones((20, 2))}, r"holds \['images'\]; expected x_train"),
        (three(shape=(3,)) | {"x_test": np.ones((2, 4))}, "disagree on the event shape"),
        (three(y_train=np.zeros(8, int)), "labels given for some splits only"),
        (
            three(y_train=np.zeros(8), y_valid=np.zeros(2), y_test=np.zeros(2)),
            "expected integer labels",
        ),
        (
            three(y_train=np.zeros(7, int), y_valid=np.zeros(2, int), y_test=np.zeros(2, int)),
            r"of shape \(8,\)",
        ),
        (
            three(y_train=-np.ones(8, int), y_valid=np.zeros(2, int), y_test=np.zeros(2, int)),
            "negative labels",
        ),
        (three(n=(8, 0, 2)), r"x_valid has shape \(0, 3\)"),
        ({"x": np.array(["a"] * 20).reshape(10, 2)}, "dtype <U1; expected real numbers"),
    ],
)
def test_bad_user_arrays(tmp_path, arrays, message):
    path = save_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load(path, tmp_path, binarize="none")


def test_nan_and_inf_are_counted_per_split(tmp_path):
    arrays = three()
    arrays["x_valid"][0, :2] = np.nan
    arrays["x_valid"][1, 0] = np.inf
    path = save_npz(tmp_path / "nan.npz", **arrays)
    with pytest.raises(DataError, match="2 NaN and 1 inf values in x_valid"):
        load(path, tmp_path, binarize="none")


def test_binarizing_real_data_is_refused(tmp_path):
    path = save_npz(tmp_path / "real.npz", x=np.linspace(-2, 3, 40).reshape(20, 2))
    for mode in ("static", "dynamic", "threshold"):
        with pytest.raises(DataError, match=r"needs values in \[0, 1\] .* \[-2, 3\]"):
            load(path, tmp_path, binarize=mode)
    assert load(path, tmp_path, binarize="none").kind == "real"


def test_pickled_object_arrays_are_not_loaded(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}] * 12, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="obj.npy"):
        load(str(tmp_path / "obj.npy"), tmp_path, binarize="none")


def test_corrupt_user_file(tmp_path):
    (tmp_path / "broken.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match="cannot read .*broken.npy"):
        load(str(tmp_path / "broken.npy"), tmp_path)


def test_fixed_samples_are_independent_across_splits(tmp_path):
    half = np.full((10, 50), 0.5)
    path = save_npz(tmp_path / "half.npz", x_train=half, x_valid=half, x_test=half)
    ds = load(path, tmp_path, binarize="static")
    assert not torch.equal(ds.valid.values(), ds.test.values()) and not torch.equal(ds.train.values(), ds.valid.values())

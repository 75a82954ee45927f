"""Frey Face (aevb.data.sources.frey): a 30-frame stand-in file, local paths, downloads from a
local HTTP server, no internet."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from aevb import data
from aevb.config.schema import DataConfig
from aevb.data.sources import frey
from aevb.errors import DataError

FIXTURE = Path(__file__).parent / "fixtures" / "frey" / "frey_rawface.mat"
N = 30


def fixture_frames(n: int = N) -> np.ndarray:
    """The fixture's frames, uint8 (n, 28, 20) upright (see fixtures/frey/README.md)."""
    r, c, j = np.arange(28)[:, None], np.arange(20)[None, :], np.arange(n)[:, None, None]
    frames = ((7 * r + 3 * c + 11 * j) % 200).astype(np.uint8)
    frames[:, :6, :4] = 255
    frames[:, 27, 19] = np.arange(n)
    return frames


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(autouse=True)
def _stand_in(monkeypatch, tmp_path):
    """No user paths, a URL that answers 404 (a local server of tmp_path/web), and the
    fixture's frame count as the expected shape."""
    monkeypatch.delenv("AEVB_FREY_PATH", raising=False)
    monkeypatch.setenv("AEVB_CACHE", str(tmp_path / "default-cache"))
    (tmp_path / "web").mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(tmp_path / "web")))
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    monkeypatch.setattr(frey, "FREY_BASE_URL",
                        f"http://127.0.0.1:{server.server_address[1]}/offline/")
    monkeypatch.setattr(frey, "FREY_SHAPE", (560, N))
    yield
    server.shutdown()
    server.server_close()


def load(cache: Path) -> data.Dataset:
    return data.load_dataset(DataConfig(name="frey-face", cache_dir=str(cache), binarize="none"))


def serve(tmp_path: Path, monkeypatch) -> Path:
    """The fixture as the file at FREY_BASE_URL, served by the local server."""
    folder = tmp_path / "web" / "served"
    folder.mkdir()
    (folder / frey.FREY_FILE).write_bytes(FIXTURE.read_bytes())
    monkeypatch.setattr(frey, "FREY_BASE_URL", frey.FREY_BASE_URL.replace("/offline/", "/served/"))
    return folder / frey.FREY_FILE


def test_fixture_is_what_the_readme_says():
    ff = scipy.io.loadmat(FIXTURE)["ff"]
    assert ff.dtype == np.uint8 and ff.shape == (560, N)
    assert np.array_equal(ff, fixture_frames().reshape(N, 560).T)


@pytest.mark.parametrize("form", ["file", "directory"])
def test_local_copy_loads_upright_in_fixed_splits(form, monkeypatch, tmp_path):
    monkeypatch.setenv("AEVB_FREY_PATH", str(FIXTURE if form == "file" else FIXTURE.parent))
    ds = load(tmp_path / "cache")
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (24, 3, 3)
    assert ds.event_shape == (1, 28, 20) and ds.kind == "unit" and ds.num_classes is None
    assert ds.train.y is None and ds.train.values().dtype == torch.float32
    order = np.random.default_rng(0).permutation(N)
    expected = torch.from_numpy(fixture_frames()[:, None] / np.float32(255))
    for split, ids in zip((ds.train, ds.valid, ds.test), (order[:24], order[24:27], order[27:]),
                          strict=True):
        assert torch.equal(split.values(), expected[ids])  # k/255, frames by the seed-0 permutation
    image = ds.test.values()[0, 0]
    assert (image[:6, :4] == 1).all() and (image[6:, :] < 1).all() and (image[:, 4:] < 1).all()
    info = data.dataset_info("frey-face", tmp_path / "cache")
    digest = hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
    assert info["source"] == f"local file {FIXTURE} (sha256 {digest})"
    assert frey.frey_available(tmp_path / "cache")


def write_mat(path: Path, **variables) -> Path:
    scipy.io.savemat(path, variables)
    return path


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"ff": np.zeros((560, N + 1), np.uint8)},
         r"'ff' has shape \(560, 31\); expected \(560, 30\)"),
        ({"ff": np.zeros((N, 560), np.uint8)}, r"'ff' has shape \(30, 560\); expected \(560, 30\)"),
        ({"ff": np.zeros((560, N), np.float64)}, "'ff' has dtype float64; expected uint8"),
        ({"faces": np.zeros((560, N), np.uint8)}, r"has no variable 'ff' \(it holds \['faces'\]\)"),
        (None, "is not a readable MATLAB"),
    ],
)
def test_malformed_local_file_is_refused_naming_the_problem(variables, message, monkeypatch,
                                                            tmp_path):
    path = tmp_path / frey.FREY_FILE
    if variables is None:
        path.write_bytes(b"<html>not found</html>")
    else:
        write_mat(path, **variables)
    monkeypatch.setenv("AEVB_FREY_PATH", str(path))
    with pytest.raises(DataError, match=message) as error:
        load(tmp_path / "cache")
    assert str(path) in str(error.value)
    assert not (tmp_path / "cache" / "frey-face.npz").exists()
    reason = frey.frey_unavailable_reason(tmp_path / "cache")
    assert reason is not None and str(path) in reason
    assert not frey.frey_available(tmp_path / "cache")


def test_local_path_without_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("AEVB_FREY_PATH", str(tmp_path))
    with pytest.raises(DataError, match=f"AEVB_FREY_PATH={tmp_path}: no frey_rawface.mat there"):
        load(tmp_path / "cache")


def test_offline_says_how_to_fix_and_is_unavailable(tmp_path):
    with pytest.raises(DataError) as error:
        load(tmp_path / "cache")
    message = str(error.value)
    url = frey.FREY_BASE_URL + frey.FREY_FILE
    assert message.startswith(f"could not fetch Frey Face from {url}: ")
    assert "404" in message  # why: the server's answer
    assert "set AEVB_FREY_PATH to a local frey_rawface.mat" in message
    assert not frey.frey_available(tmp_path / "cache")
    reason = frey.frey_unavailable_reason(tmp_path / "cache")
    assert reason is not None and "\n" not in reason
    assert reason.startswith("Frey Face is not cached and AEVB_FREY_PATH is not set: set")
    assert not (tmp_path / "cache" / "raw" / "frey-face" / frey.FREY_FILE).exists()


def test_download_is_kept_and_its_sha256_recorded(monkeypatch, tmp_path):
    served = serve(tmp_path, monkeypatch)
    ds = load(tmp_path / "cache")
    assert ds.event_shape == (1, 28, 20) and len(ds.test) == 3
    raw = tmp_path / "cache" / "raw" / "frey-face" / frey.FREY_FILE
    assert raw.read_bytes() == served.read_bytes()
    digest = hashlib.sha256(served.read_bytes()).hexdigest()
    source = data.dataset_info("frey-face", tmp_path / "cache")["source"]
    assert source == f"{frey.FREY_BASE_URL}{frey.FREY_FILE} (sha256 {digest})"
    (tmp_path / "cache" / "frey-face.npz").unlink()
    served.unlink()  # offline again: the earlier download is used
    assert frey.frey_available(tmp_path / "cache")
    assert torch.equal(load(tmp_path / "cache").test.values(), ds.test.values())


def test_download_that_is_no_frey_file_is_not_kept(monkeypatch, tmp_path):
    served = serve(tmp_path, monkeypatch)
    served.write_bytes(b"<html>moved</html>")
    with pytest.raises(DataError, match="is not a readable MATLAB"):
        load(tmp_path / "cache")
    assert not (tmp_path / "cache" / "raw" / "frey-face" / frey.FREY_FILE).exists()


def test_a_known_sha256_accepts_the_file_and_refuses_another(monkeypatch, tmp_path):
    served = serve(tmp_path, monkeypatch)
    digest = hashlib.sha256(served.read_bytes()).hexdigest()
    monkeypatch.setattr(frey, "FREY_SHA256", "0" * 64)
    with pytest.raises(DataError, match="does not match the known hash") as error:
        load(tmp_path / "bad")
    assert "0" * 64 in str(error.value) and digest in str(error.value)
    assert not (tmp_path / "bad" / "raw" / "frey-face").exists() or not any(
        (tmp_path / "bad" / "raw" / "frey-face").iterdir())  # neither the file nor a temp file
    monkeypatch.setattr(frey, "FREY_SHA256", digest)
    assert len(load(tmp_path / "good").train) == 24


def test_the_real_size_splits_1573_196_196(monkeypatch, tmp_path):
    monkeypatch.setattr(frey, "FREY_SHAPE", (560, 1965))
    ff = np.random.default_rng(0).integers(0, 256, (560, 1965), dtype=np.uint8)
    monkeypatch.setenv("AEVB_FREY_PATH", str(write_mat(tmp_path / "frey.mat", ff=ff)))
    arrays, _ = frey.build(tmp_path / "cache")
    assert [arrays[f"x_{s}"].shape for s in data.SPLITS] == [
        (1573, 1, 28, 20), (196, 1, 28, 20), (196, 1, 28, 20)]
    assert "1573/196/196" in dict(data.list_datasets())["frey-face"]

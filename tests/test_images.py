"""Tests of a folder of images as a dataset (aevb.data.sources.images and its hook in aevb.data.datasets).

Every image is written by Pillow into tmp_path at test time; nothing binary is committed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aevb import cli, data
from aevb.config.overrides import apply_overrides
from aevb.config.run import Config
from aevb.config.schema import DataConfig
from aevb.data import arrays
from aevb.data.sources import images
from aevb.errors import ConfigError, DataError

H, W = 4, 5


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("AEVB_CACHE", str(tmp_path / "default-cache"))


def grey(k: int, size: tuple[int, int] = (H, W)) -> np.ndarray:
    """Image k: uint8 (H, W), different for every k."""
    return ((np.arange(size[0] * size[1]).reshape(size) * 3 + 7 * k) % 256).astype(np.uint8)


def write_flat(folder: Path, n: int = 30) -> np.ndarray:
    """n grey PNGs in sorted name order; returns them as uint8 (n, 1, H, W)."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        Image.fromarray(grey(k)).save(folder / f"img{k:03d}.png")
    return np.stack([grey(k) for k in range(n)])[:, None]


def load(folder: Path, cache: Path, **kwargs) -> data.Dataset:
    config = DataConfig(name=str(folder), cache_dir=str(cache), binarize="none", **kwargs)
    return data.load_dataset(config)


def test_flat_folder_is_split_like_a_users_array_and_cached(monkeypatch, tmp_path):
    x = write_flat(tmp_path / "faces")
    ds = load(tmp_path / "faces", tmp_path / "cache", split_seed=3)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (24, 3, 3)
    assert ds.event_shape == (1, H, W) and ds.kind == "unit" and ds.num_classes is None
    assert ds.train.y is None and ds.train.values().dtype == torch.float32
    expected = arrays.user_splits(Path("x"), {"x": x.astype(np.float32) / 255}, 3)
    for s in data.SPLITS:
        assert torch.equal(getattr(ds, s).values(), torch.from_numpy(expected[f"x_{s}"]))  # k/255 exactly
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1 and cached[0].name.startswith("images-faces-")

    def fail(*args):
        raise AssertionError("read a PNG again")

    monkeypatch.setattr(images, "read_image", fail)
    again = load(tmp_path / "faces", tmp_path / "cache", split_seed=3)
    assert torch.equal(again.test.values(), ds.test.values())
    other = load(tmp_path / "faces", tmp_path / "cache", split_seed=4)
    assert not torch.equal(other.test.values(), ds.test.values())  # the seed splits; the cache is shared


def test_a_changed_folder_is_read_again(tmp_path):
    write_flat(tmp_path / "f", n=12)
    first = data.fetch(str(tmp_path / "f"), tmp_path / "cache")
    Image.fromarray(grey(99)).save(tmp_path / "f" / "zzz.png")
    (tmp_path / "f" / ".hidden.png").write_bytes(b"ignored")
    (tmp_path / "f" / "notes.txt").write_text("ignored")
    again = data.fetch(str(tmp_path / "f"), tmp_path / "cache")
    assert again == first and np.load(again)["x"].shape == (13, 1, H, W)
    assert np.array_equal(np.load(again)["x"][-1, 0], grey(99))
    assert len(list((tmp_path / "cache").iterdir())) == 1  # no stale copy, no temp file left


def test_class_subfolders_give_labels_in_sorted_order(tmp_path):
    root = tmp_path / "animals"
    for name, n in [("dog", 6), ("cat", 5), ("emu", 4)]:
        (root / name / "deeper").mkdir(parents=True)
        for k in range(n):
            where = root / name / ("deeper" if k == 0 else "")
            Image.fromarray(np.full((H, W), 10 * len(name) + n, np.uint8)).save(where / f"{k}.PNG")
    files, labels, classes = images.list_images(root)
    assert classes == ["cat", "dog", "emu"] and labels == [0] * 5 + [1] * 6 + [2] * 4
    assert files == sorted(files)
    ds = load(root, tmp_path / "cache")
    assert ds.num_classes == 3 and ds.train.y.dtype == torch.int64
    for split in (ds.train, ds.valid, ds.test):
        # every class's images are one constant grey level: labels follow their images
        level = {0: 35, 1: 36, 2: 34}
        assert all(abs(float(x.mean()) * 255 - level[int(y)]) < 1e-3
                   for x, y in zip(split.values(), split.y, strict=True))
    info = data.dataset_info(str(root), tmp_path / "cache")
    assert info["num_classes"] == 3 and sum(info["sizes"].values()) == 15
    assert info["event_shape"] == (1, H, W) and "image folder" in info["source"]


def test_images_beside_class_folders_are_an_error(tmp_path):
    write_flat(tmp_path / "f" / "a", n=3)
    Image.fromarray(grey(0)).save(tmp_path / "f" / "loose.png")
    with pytest.raises(DataError, match="loose.png.*subfolders"):
        data.fetch(str(tmp_path / "f"), tmp_path / "cache")


def test_channels_3_keeps_colours_and_1_makes_grey(tmp_path):
    folder = tmp_path / "rgb"
    folder.mkdir()
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (30, 60, 90)]
    for k in range(10):
        Image.new("RGB", (W, H), colours[k % 4]).save(folder / f"{k}.png")
    rgb = data.load_dataset(DataConfig(name=str(folder), cache_dir=str(tmp_path / "c"),
                                       binarize="none", image_channels=3))
    assert rgb.event_shape == (3, H, W)
    seen = {tuple(round(float(v) * 255) for v in x[:, 0, 0])
            for s in data.SPLITS for x in getattr(rgb, s).values()}
    assert seen == set(colours)
    grey_ds = load(folder, tmp_path / "c")
    assert grey_ds.event_shape == (1, H, W)
    levels = {round(float(x[0, 0, 0]) * 255) for s in data.SPLITS for x in getattr(grey_ds, s).values()}
    # Pillow's L = (299 R + 587 G + 114 B) / 1000
    assert levels == {round((299 * r + 587 * g + 114 * b) / 1000) for r, g, b in colours}
    assert len(list((tmp_path / "c").iterdir())) == 2  # one cache file per setting


def test_mixed_sizes_need_image_size(tmp_path):
    folder = tmp_path / "m"
    write_flat(folder, n=10)
    Image.fromarray(np.full((16, 12), 200, np.uint8)).save(folder / "zbig.png")
    with pytest.raises(DataError, match=r"4x5 \(.*img000.png\) and 16x12 \(.*zbig.png\).*image_"):
        load(folder, tmp_path / "cache")
    ds = load(folder, tmp_path / "cache", image_size=(8, 8))
    assert ds.event_shape == (1, 8, 8)
    xs = torch.cat([ds.train.values(), ds.valid.values(), ds.test.values()])
    assert len(xs) == 11
    assert any(torch.allclose(x, torch.full((1, 8, 8), 200 / 255)) for x in xs)  # flat stays flat


def test_unreadable_files_are_listed_in_one_error(tmp_path):
    folder = tmp_path / "bad"
    write_flat(folder, n=12)
    (folder / "corrupt.png").write_bytes(b"this is not an image at all")
    (folder / "empty.jpg").write_bytes(b"")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "whole.png")
    whole = (tmp_path / "whole.png").read_bytes()
    (folder / "half.png").write_bytes(whole[: len(whole) // 2])  # a valid header, then nothing
    with pytest.raises(DataError, match="3 unreadable") as raised:
        data.fetch(str(folder), tmp_path / "cache")
    message = str(raised.value)
    assert f"{folder / 'corrupt.png'} (not an image" in message
    assert f"{folder / 'empty.jpg'} (empty file)" in message
    assert f"{folder / 'half.png'} (image file is truncated" in message
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    folder = tmp_path / "wide"
    folder.mkdir()
    for k in range(10):
        Image.fromarray(np.full((H, W), 257 * (20 * k), np.uint16)).save(folder / f"{k}.png")
    x = images.read_folder(folder)["x"]
    assert sorted(int(v) for v in x[:, 0, 0, 0]) == [20 * k for k in range(10)]


def test_empty_folder_and_too_few_images(tmp_path):
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="no .png"):
        data.fetch(str(tmp_path / "none"), tmp_path / "cache")
    write_flat(tmp_path / "few", n=5)
    with pytest.raises(DataError, match="at least 10"):
        load(tmp_path / "few", tmp_path / "cache")


def test_a_relative_folder_is_found_in_the_run_directory(monkeypatch, tmp_path):
    write_flat(tmp_path / "run" / "pics", n=10)
    monkeypatch.chdir(tmp_path)
    config = DataConfig(name="pics", cache_dir=str(tmp_path / "cache"), binarize="none")
    assert len(data.load_dataset(config, base_dir=tmp_path / "run").train) == 8


def test_config_checks_channels_and_image_size():
    config = apply_overrides(Config(), {"image_channels": "3", "image_size": "32,24"})
    assert config.data.image_channels == 3 and config.data.image_size == (32, 24)
    # --channels stays the conv nets' key
    conv = apply_overrides(Config(), {"model": "conv-ae", "channels": "4,8", "image_channels": 3})
    assert conv.model.net.channels == (4, 8) and conv.data.image_channels == 3
    for bad in ({"image_channels": 2}, {"image_size": (8,)}, {"image_size": (8, 0)}):
        with pytest.raises(ConfigError, match="data."):
            DataConfig(**bad)


def test_cli_trains_on_a_folder_and_describes_it(capsys, tmp_path):
    write_flat(tmp_path / "pics", n=30)
    out = tmp_path / "run"
    code = cli.main(["train", "--dataset", str(tmp_path / "pics"), "--binarize", "none",
                     "--model", "ae", "--hidden", "16", "--latent_dim", "2", "--epochs", "1",
                     "--quiet", "--plots", "false", "--out", str(out)])
    assert code == 0 and (out / "report.md").is_file()
    capsys.readouterr()
    assert cli.main(["data", "info", str(tmp_path / "pics")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["sizes"] == {"train": 24, "valid": 3, "test": 3} and info["event_shape"] == [1, H, W]
    assert os.path.dirname(info["path"]) == str(tmp_path / "default-cache")


def test_fit_on_a_relative_folder_keeps_finding_it(monkeypatch, tmp_path):
    import aevb

    write_flat(tmp_path / "pics", n=30)
    monkeypatch.chdir(tmp_path)
    fitted = aevb.fit("pics", model="ae", binarize="none", hidden=16, latent_dim=2, epochs=1,
                      progress=False, run_dir=tmp_path / "run")
    assert fitted.config.data.name == str(tmp_path / "pics")
    assert fitted.encode(np.zeros((3, 1, H, W), dtype=np.float32)).shape == (3, 2)

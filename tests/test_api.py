"""The Python API on arrays: fit, load, and what a Fitted model gives back."""

import gc
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import aevb
from aevb.cli.main import main
from aevb.data.datasets import load_dataset
from aevb.errors import AevbError

TINY = {"hidden": (16,), "epochs": 2, "progress": False}


@pytest.fixture(scope="module")
def digits():
    """(x_train, x_test): scikit-learn's 8x8 digits as (N, 1, 8, 8) grey levels in [0, 1]."""
    x = (load_digits().images.reshape(-1, 1, 8, 8) / 16).astype(np.float32)
    return x[:1500], x[1500:]


@pytest.fixture(scope="module")
def small_vae(digits):
    return aevb.fit(digits[0], latent_dim=2, **TINY)


def _readme_python_snippet() -> str:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Python", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def _readme_first_command() -> list[str]:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("## Command line", 1)[1].split("```bash\n", 1)[1]
    return shlex.split(block.splitlines()[0].split("#")[0])


def test_the_readme_snippet_runs_as_written(digits, tmp_path, monkeypatch):
    x_train, x_test = digits
    monkeypatch.chdir(tmp_path)  # the snippet saves to runs/mine
    # after the first command-line example, in the same directory, as a reader would
    first = _readme_first_command()
    assert first[:2] == ["aevb", "train"] and main([*first[1:], "--quiet"]) == 0
    cli_run = sorted(p.name for p in Path("runs").iterdir())
    names = {"x_train": x_train, "x_test": x_test}
    exec(_readme_python_snippet(), names)
    # a saved run is as the CLI leaves one: pictures and report
    for name in ("report.md", "samples.png", "reconstructions.png", "curves.png"):
        assert (Path("runs/mine") / name).is_file(), name
    assert set(cli_run) < {p.name for p in Path("runs").iterdir()}
    z, x_new, rec, ll, vae = (names[k] for k in ("z", "x_new", "rec", "ll", "vae"))

    n = len(x_test)
    assert z.shape == (n, 2) and x_new.shape == (16, 1, 8, 8) and rec.shape == x_test.shape
    assert all(isinstance(a, np.ndarray) for a in (z, x_new, rec, ll))
    # digits are binarized (dynamic) for training and scoring: a Bernoulli log p(x) <= 0
    assert ll.shape == (n,) and np.isfinite(ll).all() and (ll <= 0).all()
    # K = 1000 importance samples bound log p(x) more tightly than the ELBO, on average
    assert ll.mean() > vae.elbo(x_test).mean()
    assert vae.run_dir == Path("runs/mine")
    assert np.array_equal(vae.encode(x_test), z)  # the loaded model is the saved one


def test_tensors_in_give_tensors_out_and_flat_rows_are_reshaped(small_vae, digits):
    x_test = digits[1]
    codes = small_vae.encode(torch.from_numpy(x_test))
    assert isinstance(codes, torch.Tensor) and codes.shape == (len(x_test), 2)
    assert np.allclose(codes.numpy(), small_vae.encode(x_test))
    assert isinstance(small_vae.decode(codes), torch.Tensor)
    assert small_vae.decode(codes.numpy()).shape == (len(x_test), 1, 8, 8)
    flat = x_test.reshape(len(x_test), -1)
    assert np.allclose(small_vae.encode(flat), small_vae.encode(x_test))
    assert small_vae.reconstruct(flat).shape == flat.shape
    log_px = small_vae.log_likelihood(torch.from_numpy(x_test[:20]), k=10)
    assert isinstance(log_px, torch.Tensor) and log_px.shape == (20,)


def test_scores_and_samples_are_reproducible_and_leave_the_global_rng_alone(small_vae, digits):
    x = digits[1][:50]
    state = torch.get_rng_state()
    assert np.array_equal(small_vae.log_likelihood(x, k=20, seed=3),
                          small_vae.log_likelihood(x, k=20, seed=3))
    assert np.array_equal(small_vae.sample(4, seed=1), small_vae.sample(4, seed=1))
    assert torch.equal(torch.get_rng_state(), state)


def test_a_wrong_input_shape_names_both_shapes(small_vae):
    with pytest.raises(AevbError, match=r"\(5, 3\).*\(N, 1, 8, 8\)"):
        small_vae.encode(np.zeros((5, 3), dtype=np.float32))


def test_a_model_without_an_ability_says_so(digits):
    pca = aevb.fit(digits[0], model="pca", latent_dim=2, progress=False)
    assert pca.encode(digits[1]).shape == (len(digits[1]), 2)
    with pytest.raises(AevbError, match="model 'pca' is not generative"):
        pca.sample(4)
    with pytest.raises(AevbError, match="model 'pca' has no likelihood"):
        pca.log_likelihood(digits[1])


def test_real_valued_arrays_get_a_gaussian_likelihood_and_no_binarization():
    x = np.random.default_rng(0).standard_normal((200, 5)).astype(np.float32)
    labels = np.arange(200) % 3
    fitted = aevb.fit(x, labels, latent_dim=2, **TINY)
    assert fitted.config.data.binarize == "none"
    assert fitted.config.model.likelihood == "gaussian-learned"
    assert fitted.model.data.num_classes == 3
    assert np.isfinite(fitted.log_likelihood(x, k=50)).all()


def test_grey_levels_left_unbinarized_get_the_continuous_bernoulli(digits):
    fitted = aevb.fit(digits[0][:300], binarize="none", latent_dim=2, **TINY)
    assert fitted.config.model.likelihood == "continuous-bernoulli"
    chosen = aevb.fit(digits[0][:300], binarize="none", likelihood="gaussian-fixed",
                      latent_dim=2, **TINY)
    assert chosen.config.model.likelihood == "gaussian-fixed"  # the user's choice stands


def test_fit_takes_a_dataset_name():
    fitted = aevb.fit("digits", latent_dim=2, **TINY)
    assert fitted.config.data.name == "digits" and len(fitted.history) == 2


def test_the_temporary_run_directory_goes_with_the_object(digits, tmp_path):
    fitted = aevb.fit(digits[0][:200], latent_dim=2, **TINY)
    run_dir = fitted.run_dir
    assert (run_dir / "data.npz").is_file()
    del fitted
    gc.collect()
    assert not run_dir.exists()
    kept = aevb.fit(digits[0][:200], latent_dim=2, run_dir=tmp_path / "run", **TINY)
    del kept
    gc.collect()
    assert (tmp_path / "run" / "data.npz").is_file()  # a run directory of the user's stays


def test_a_saved_run_evaluates_from_the_cli_once_its_temporary_directory_is_gone(
        digits, tmp_path, capsys):
    fitted = aevb.fit(digits[0][:300], latent_dim=2, **TINY)
    temporary, saved = fitted.run_dir, fitted.save(tmp_path / "saved")
    del fitted
    gc.collect()
    assert not temporary.exists()
    capsys.readouterr()
    assert main(["evaluate", str(saved), "--k", "8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["points"] == 30 and np.isfinite(result["log_px_nats"])


def test_save_refuses_to_overwrite(small_vae, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("mine")
    with pytest.raises(AevbError, match="not an empty directory"):
        small_vae.save(tmp_path / "taken")


def test_load_reads_a_run_made_by_the_cli(tmp_path):
    run_dir = tmp_path / "cli-run"
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--hidden", "16",
                 "--latent_dim", "2", "--quiet", "--plots", "false", "--out", str(run_dir)]) == 0
    fitted = aevb.load(run_dir)
    assert fitted.sample(3).shape == (3, 1, 8, 8) and len(fitted.history) == 1
    assert fitted.encode(np.full((4, 64), 0.5, dtype=np.float32)).shape == (4, 2)


def test_scores_binarize_x_once_as_evaluate_does(small_vae, digits):
    x = digits[0][:600]  # more than one batch of the Fitted methods
    # the test split's fixed sample as load_dataset draws it: all of x, a seeded CPU generator
    fixed = torch.bernoulli(torch.from_numpy(x), generator=torch.Generator().manual_seed(5))
    for score in (lambda v: small_vae.log_likelihood(v, k=4, seed=5),
                  lambda v: small_vae.elbo(v, seed=5)):
        first = score(x)
        assert np.array_equal(first, score(x))
        assert np.array_equal(first, score(fixed.numpy()))  # the numbers of that sample
        assert not np.array_equal(first, score(x[:, :, ::-1].copy()))  # x counts


def test_samples_come_back_as_the_type_fitted_on_and_every_draw_is_seeded(digits):
    x = torch.from_numpy(digits[0][:200])
    fitted = aevb.fit(x, latent_dim=2, **TINY)
    samples = fitted.sample(3)
    assert isinstance(samples, torch.Tensor) and samples.shape == (3, 1, 8, 8)
    assert torch.equal(samples, fitted.sample(3))  # seed 0 by default, as log_likelihood's
    assert isinstance(aevb.load(fitted.run_dir).sample(3), np.ndarray)


def test_split_indices_say_which_rows_each_split_got(digits):
    x = digits[0][:205]
    fitted = aevb.fit(x, latent_dim=2, **TINY)
    indices = fitted.split_indices
    assert {s: len(i) for s, i in indices.items()} == {"train": 165, "valid": 20, "test": 20}
    everything = np.concatenate(list(indices.values()))
    assert np.array_equal(np.sort(everything), np.arange(len(x)))  # disjoint, every row
    # the rows the run trained on (dynamic binarization keeps train's grey levels)
    dataset = load_dataset(fitted.config.data, base_dir=fitted.run_dir)
    assert np.array_equal(dataset.train.values().numpy(), x[indices["train"]])
    with pytest.raises(AevbError, match="no split indices"):
        _ = aevb.fit("digits", latent_dim=2, **TINY).split_indices


def test_decode_passes_the_condition_a_conditional_model_needs(digits):
    x, y = digits[0][:300], load_digits().target[:300]
    fitted = aevb.fit(x, y, model="cvae", latent_dim=2, **TINY)
    z = np.zeros((4, 2), dtype=np.float32)
    with pytest.raises(AevbError, match="condition"):
        fitted.decode(z)  # no c = 0: a value never trained on
    threes = fitted.decode(z, np.full(4, 3))
    assert threes.shape == (4, 1, 8, 8)
    assert np.array_equal(threes, fitted.decode(z, np.eye(10, dtype=np.float32)[[3, 3, 3, 3]]))
    assert not np.array_equal(threes, fitted.decode(z, np.full(4, 7)))
    assert isinstance(fitted.decode(torch.from_numpy(z), torch.full((4,), 3)), torch.Tensor)
    with pytest.raises(AevbError, match="label 10 is no class"):
        fitted.decode(z, np.full(4, 10))

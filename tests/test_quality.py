"""Sample quality: the Fréchet distance against closed forms, the cached classifier, the metric."""

import json

import numpy as np
import pytest
import torch

import aevb.evaluation.quality as quality
from aevb import DataConfig, load_dataset, load_model, sample_quality
from aevb.cli.main import main
from aevb.errors import AevbError
from aevb.evaluation.quality import ClassifierSettings, feature_statistics, frechet_distance
from aevb.models import Generative

FAST = ClassifierSettings(steps=300)


def _random_cov(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


def _sqrt_psd(c: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(c)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def test_frechet_distance_of_a_sample_with_itself_is_zero():
    features = np.random.default_rng(0).normal(size=(500, 16))
    stats = feature_statistics(features)
    assert frechet_distance(*stats, *stats) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_of_diagonal_gaussians_matches_the_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    v1, v2 = rng.uniform(0.1, 3, size=5), rng.uniform(0.1, 3, size=5)
    # diagonal covariances commute: (C1 C2)^{1/2} is sqrt(v1 v2) elementwise
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected,
                                                                                   rel=1e-10)


def test_frechet_distance_of_full_covariances_matches_an_eigendecomposition():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    c1, c2 = _random_cov(rng, 6), _random_cov(rng, 6)
    assert not np.allclose(c1 @ c2, c2 @ c1)  # the product is not symmetric
    # tr (C1 C2)^{1/2} = tr (C1^{1/2} C2 C1^{1/2})^{1/2}, a symmetric PSD root by eigh
    root1 = _sqrt_psd(c1)
    trace_root = np.trace(_sqrt_psd(root1 @ c2 @ root1))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * trace_root
    got = frechet_distance(mu1, c1, mu2, c2)
    assert got == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu2, c2, mu1, c1) == pytest.approx(got, rel=1e-8)


def test_frechet_distance_survives_singular_covariances_and_rejects_bad_shapes():
    rng = np.random.default_rng(3)
    few = rng.normal(size=(5, 20))  # 5 points in 20 dimensions: rank-4 covariances
    other = rng.normal(size=(5, 20)) + 1.0
    distance = frechet_distance(*feature_statistics(few), *feature_statistics(other))
    assert np.isfinite(distance) and distance > 0
    with pytest.raises(AevbError, match="shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(AevbError, match="imaginary"):  # a "covariance" with a negative variance
        frechet_distance(np.zeros(2), np.diag([-1.0, 1.0]), np.zeros(2), np.eye(2))


def test_eps_is_added_to_both_covariances_only_when_the_root_fails(monkeypatch):
    import scipy.linalg

    c1, c2 = np.diag([1.0, 4.0]), np.diag([9.0, 1.0])
    exact = frechet_distance(np.zeros(2), c1, np.zeros(2), c2)
    assert exact == pytest.approx(1 + 9 + 4 + 1 - 2 * (3 + 2), rel=1e-12)
    sqrtm = scipy.linalg.sqrtm

    def fails_unless_offset(product):  # a root that "failed" for the unperturbed product
        return np.full_like(product, np.nan) if np.array_equal(product, c1 @ c2) else sqrtm(product)

    monkeypatch.setattr(scipy.linalg, "sqrtm", fails_unless_offset)
    eps = quality.SQRTM_EPS
    shifted = 1 + 9 + 4 + 1 + 4 * eps - 2 * (np.sqrt((1 + eps) * (9 + eps))
                                             + np.sqrt((4 + eps) * (1 + eps)))
    got = frechet_distance(np.zeros(2), c1, np.zeros(2), c2)
    assert got == pytest.approx(shifted, rel=1e-12) and got != exact


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig(name="digits", binarize="none"))


def test_the_classifier_learns_digits_and_is_cached_with_a_checksum(digits, tmp_path,
                                                                      monkeypatch, caplog):
    net, accuracy = quality.quality_classifier(digits, FAST, tmp_path)
    assert accuracy > 0.9  # chance is 0.1; 300 Adam steps give about 0.98
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].startswith("quality-digits-")
    weights = tmp_path / files[0]

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although the cache is valid")

    with monkeypatch.context() as patch:
        patch.setattr(quality, "_train_classifier", no_training)
        cached, cached_accuracy = quality.quality_classifier(digits, FAST, tmp_path)
    assert cached_accuracy == accuracy
    x = digits.test.values()[:10]
    assert torch.equal(cached.features(x), net.features(x))

    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the weights
    weights.write_bytes(bytes(data))
    trained = []
    original = quality._train_classifier
    monkeypatch.setattr(quality, "_train_classifier",
                        lambda *a: trained.append(1) or original(*a))
    with caplog.at_level("WARNING", logger="aevb.evaluation.quality"):
        _, again = quality.quality_classifier(digits, FAST, tmp_path)
    assert trained == [1] and "sha256" in caplog.text
    assert again == accuracy  # seeded: the same network again


class _Fake(torch.nn.Module, Generative):
    """A 'generative model' that returns given images (cycled) as its samples."""

    def __init__(self, images: torch.Tensor) -> None:
        super().__init__()
        self.images = images

    def sample(self, n, condition=None):
        index = torch.randint(len(self.images), (n,))
        return self.images[index]

    def decode(self, z, condition=None):
        raise NotImplementedError


def test_real_images_score_far_better_than_noise(digits, tmp_path):
    real = sample_quality(_Fake(digits.train.values()), digits, n=1000, settings=FAST,
                          cache_dir=tmp_path)
    noise = sample_quality(_Fake(torch.rand(1000, *digits.event_shape)), digits, n=1000,
                           settings=FAST, cache_dir=tmp_path)
    assert real["fd_classifier"] * 10 < noise["fd_classifier"]
    assert real["sample_confidence"] > noise["sample_confidence"]
    # the training digits hold every class in roughly equal shares
    assert min(real["sample_class_histogram"]) > 0.05


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quality") / "vae"
    assert main(["train", "--dataset", "digits", "--latent_dim", "2", "--hidden", "16",
                 "--epochs", "2", "--is_samples", "4", "--plots", "false", "--quiet",
                 "--out", str(out)]) == 0
    return out


def test_sample_quality_of_a_tiny_vae(vae_run, digits, tmp_path):
    _, model, _ = load_model(vae_run)
    result = sample_quality(model, digits, n=500, settings=FAST, cache_dir=tmp_path)
    assert np.isfinite(result["fd_classifier"]) and result["fd_classifier"] > 0
    assert np.isfinite(result["fd_test_vs_train"])
    assert sum(result["sample_class_histogram"]) == pytest.approx(1.0)
    assert len(result["sample_class_histogram"]) == 10
    assert 0 < result["sample_confidence"] <= 1
    assert result["quality_samples"] == 500 and result["fd_classifier_name"] == \
        "FD (digits classifier)"
    again = sample_quality(model, digits, n=500, settings=FAST, cache_dir=tmp_path)
    assert again == result  # seeded


def test_sample_quality_refuses_what_it_cannot_judge(vae_run, digits, tmp_path):
    _, model, _ = load_model(vae_run)
    binary = load_dataset(DataConfig(name="digits", binarize="static"))
    with pytest.raises(AevbError, match="binarize"):
        sample_quality(model, binary, n=10, settings=FAST, cache_dir=tmp_path)
    with pytest.raises(AevbError, match="generative"):
        sample_quality(torch.nn.Linear(2, 2), digits, n=10)  # type: ignore[arg-type]


def test_evaluate_sample_quality_from_the_cli(vae_run, capsys):
    argv = ["evaluate", str(vae_run), "--sample-quality", "--quality-samples", "500", "--k", "4"]
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["quality_samples"] == 500 and result["fd_classifier"] > 0
    assert "elbo_nats" in result  # the usual evaluation is still there
    saved = json.loads((vae_run / "evaluation.json").read_text())
    assert saved["fd_classifier"] == result["fd_classifier"]
    assert "FD of samples to test set" in (vae_run / "report.md").read_text()
    assert main([*argv, "--quiet"]) == 0
    assert "FD (digits classifier)" in capsys.readouterr().out


def test_evaluate_sample_quality_of_pca_is_a_one_line_error(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "pca"
    assert main(["train", "--model", "pca", "--dataset", "digits", "--binarize", "none",
                 "--latent_dim", "2", "--epochs", "1", "--plots", "false", "--quiet",
                 "--out", str(out)]) == 0
    done = subprocess.run([sys.executable, "-m", "aevb.cli", "evaluate", str(out),
                           "--sample-quality", "--quality-samples", "50"],
                          capture_output=True, text=True)
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1 and "generative" in done.stderr
